"""SCR on JSRT (``scr``): JSRT ``JPCLN001.IMG`` raw images + SCR GIF masks of left/right organs.

Formats:

* **JSRT** (Japanese Society of Radiological Technology, Shiraishi et al., AJR 2000; jsrt.or.jp):
  247 chest radiographs ``JPCLN001.IMG`` ... ``JPCLN154.IMG`` (nodule) and ``JPCNN001.IMG`` ...
  ``JPCNN093.IMG`` (non-nodule): headerless raw, 2048 x 2048 pixels of 0.175 mm, 12-bit values in
  16-bit words, **big-endian**, row by row from the top — exactly 8,388,608 bytes. The values are
  stored as a *negative*: a naive read shows the lungs white and bones dark (the customary
  conversions read it ``>u2`` and take ``1 - v / 4096``). A file of another size, or with a
  value above 4095, is reported naming it.
* **SCR** (Segmentation in Chest Radiographs, van Ginneken et al., MedIA 2006): masks drawn at half
  resolution, 1024 x 1024 GIF (0 background, > 0 organ), ``scratch/fold1`` and ``scratch/fold2``
  (the database's two folds: odd and even case numbers), each
  ``masks/{heart,left lung,right lung,left clavicle,right clavicle}/<case>.gif`` (the folder
  names as the SCR archive extracts and public code reads them; a GIF in another folder is not
  taken as a mask, and a case without one of the five is reported naming the path expected).

Written (1024 x 1024, the masks' grid; the image is reduced by the mean of each 2 x 2 block):

* ``image/<case>.png``: 8-bit, ``round((4095 - v) * 255 / 4095)`` of the block mean ``v`` — the
  polarity turned to the usual display (air dark, bone bright): stored 4095 -> 0, stored 0 -> 255;
* ``label/heart/<case>.png``, ``label/lung/<case>.png`` (left | right lung),
  ``label/clavicle/<case>.png`` (left | right clavicle): 0 / 255 (``specs/scr.py``: > 0 is
  foreground, the three channels heart, lung, clavicle).

Fold 1 -> ``train/labeled``, fold 2 -> ``test/labeled`` (SCR's own protocol: train on one fold,
test on the other; ``--test-fold 1`` swaps them, ``--test-fold 0`` puts all in train). Masks found
without a fold folder are assigned by SCR's rule (odd case number: fold 1). One image per patient.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files
from gemini_pl.errors import DataError

DATASET = "scr"
ALIASES = ("jsrt", "scr_jsrt")
TITLE = "SCR/JSRT: JPC[LN|NN]NNN.IMG (2048², 12-bit big-endian raw) + SCR GIF masks (left/right)"
EXPECTED = 247
SIZE = 2048
MASK_SIZE = 1024
NBYTES = SIZE * SIZE * 2
MAX12 = 4095
ORGANS = ("heart", "left lung", "right lung", "left clavicle", "right clavicle")
#: output channel -> SCR mask folders merged into it (``specs/scr.py`` channel order).
CHANNELS = {"heart": ("heart",), "lung": ("left lung", "right lung"),
            "clavicle": ("left clavicle", "right clavicle")}
CASE = re.compile(r"^(JPC[LN]N\d{3})$", re.I)


def read_jsrt(path: Path) -> np.ndarray:
    """The stored 12-bit values of a JSRT ``.IMG`` (2048 x 2048, uint16, as in the file)."""
    size = path.stat().st_size
    if size != NBYTES:
        raise DataError(f"{path}: {size} bytes, but a JSRT image is {SIZE} x {SIZE} 16-bit big-endian "
                        f"= {NBYTES} bytes without header")
    arr = np.fromfile(path, dtype=">u2").reshape(SIZE, SIZE)
    if int(arr.max()) > MAX12:
        raise DataError(f"{path}: value {int(arr.max())} above 4095: not 12-bit big-endian JSRT data "
                        "(byte-swapped copy?)")
    return arr


def to_8bit(stored: np.ndarray) -> np.ndarray:
    """2 x 2 block mean, then the inverted linear map of [0, 4095] to [255, 0] (rounded half up)."""
    h, w = stored.shape
    mean = stored.astype(np.float64).reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return np.floor((MAX12 - mean) * 255.0 / MAX12 + 0.5).astype(np.uint8)


def read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "P", "1") else im)
    except OSError as exc:
        raise DataError(f"{path}: not a readable GIF mask ({exc})") from None
    if arr.shape != (MASK_SIZE, MASK_SIZE):
        raise DataError(f"{path}: mask of {arr.shape[1]} x {arr.shape[0]}, expected the SCR size "
                        f"{MASK_SIZE} x {MASK_SIZE}")
    return arr > 0


def plan(ctx: Context) -> Plan:
    p = Plan()
    test_fold = int(ctx.options.get("test_fold", 2))
    images: dict[str, list[Path]] = {}
    for f in find_files(ctx.src, ["*.IMG", "*.img"]):
        m = CASE.match(f.stem)
        if m is None:
            p.problems.append(f"{f}: not a JSRT image name (expected JPCLNnnn.IMG or JPCNNnnn.IMG)")
            continue
        images.setdefault(m.group(1).upper(), []).append(f)
    masks: dict[str, dict[str, list[Path]]] = {}
    folds: dict[str, int] = {}
    for f in find_files(ctx.src, ["*.gif", "*.GIF"]):
        organ = f.parent.name.lower()
        if organ not in ORGANS:
            continue
        case = f.stem.upper()
        masks.setdefault(case, {}).setdefault(organ, []).append(f)
        fold = next((int(part[4:]) for part in f.parts if re.fullmatch(r"fold[12]", part.lower())), None)
        if fold is not None:
            folds[case] = fold
    for case in sorted(set(images) | set(masks)):
        imgs, ms = images.get(case, []), masks.get(case, {})
        if not imgs:
            any_mask = next(iter(ms.values()))[0]
            p.problems.append(f"{any_mask}: SCR mask without its JSRT image (expected {case}.IMG)")
            continue
        if len(imgs) > 1:
            p.problems.append(f"case {case}: {len(imgs)} JSRT images ({', '.join(map(str, imgs))}); "
                              "none converted — keep one")
            continue
        bad = False
        for organ in ORGANS:
            got = ms.get(organ, [])
            if not got:
                p.problems.append(f"{imgs[0]}: no SCR {organ} mask (expected .../masks/{organ}/{case}.gif)")
                bad = True
            elif len(got) > 1:
                p.problems.append(f"case {case}: {len(got)} {organ} masks ({', '.join(map(str, got))}); "
                                  "none converted — keep one")
                bad = True
        if bad:
            continue
        fold = folds.get(case, 1 if int(case[-3:]) % 2 else 2)
        split = "test/labeled" if fold == test_fold else "train/labeled"
        mask_files = {o: ms[o][0] for o in ORGANS}
        outs = (f"{split}/image/{case}.png",) + tuple(f"{split}/label/{ch}/{case}.png" for ch in CHANNELS)
        p.items.append(Item(outs, (Source(imgs[0]), *(Source(mask_files[o]) for o in ORGANS)),
                            partial(_build, imgs[0], mask_files), case=case, group=case))
    return p


def _build(img: Path, masks: dict[str, Path], paths, data) -> str:
    from PIL import Image

    Image.fromarray(to_8bit(read_jsrt(img)), mode="L").save(paths[0], format="PNG")
    for path, (ch, organs) in zip(paths[1:], CHANNELS.items()):
        merged = np.zeros((MASK_SIZE, MASK_SIZE), bool)
        for o in organs:
            merged |= read_mask(masks[o])
        Image.fromarray(merged.astype(np.uint8) * 255, mode="L").save(path, format="PNG")
    return ("image: JSRT 2048² (0.175 mm) 12-bit big-endian raw -> 2x2 block mean (1024², 0.35 mm, the "
            "SCR masks' grid) -> 8-bit "
            "round((4095 - v) * 255 / 4095) (negative turned positive); masks: SCR GIF > 0, "
            "lung = left | right lung, clavicle = left | right clavicle, heart; 0/255 PNG")
