"""KiPA22 (``kipa22``): kidney CTA, NIfTI in ``image/`` and ``label/`` folders of one file name.

Format: the Kidney Parsing challenge (He et al., MICCAI 2022; kipa22.grand-challenge.org)
distributes ``.nii.gz`` volumes in an ``image/`` folder and their label maps, same file name, in a
``label/`` folder beside it, per part of the data (the training part and the open test part); its
official baseline reads exactly ``<part>/image/<name>.nii.gz`` + ``<part>/label/<name>.nii.gz``
(github.com/KiPA2022/kipa22, ``BASELINES/utils/dataloader.py``). The names of the part folders
are assumed: a part whose path contains ``test`` goes to ``test/labeled``, any other to
``train/labeled``; a part without a ``label/`` folder to ``train/unlabeled``. An image without its
label (or a label without its image) is reported naming the file expected.

Labels as distributed: 1 renal vein, 2 kidney, 3 renal artery, 4 tumour (``specs/kipa22.py``).
Intensities: HU + 1024 (``common.write_ct``; the baseline clips the stored values to [0, 2048]).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files
from gemini_pl.data.convert.whs_ct import _image, _pair

DATASET = "kipa22"
ALIASES = ("kipa",)
TITLE = "KiPA22: <part>/image/<name>.nii.gz + <part>/label/<name>.nii.gz"
EXPECTED = 130


def _stem(f: Path) -> str:
    n = f.name
    return n[:-7] if n.lower().endswith(".nii.gz") else n[:-4]


def plan(ctx: Context) -> Plan:
    p = Plan()
    off = ctx.options.get("ct_offset", "auto")
    parts = sorted({f.parent.parent for f in find_files(ctx.src, ["*.nii.gz", "*.nii"])
                    if f.parent.name.lower() in ("image", "label")})
    if not parts:
        p.problems.append(f"{ctx.src}: no image/ or label/ folder of .nii.gz files found "
                          "(expected <part>/image/<name>.nii.gz and <part>/label/<name>.nii.gz)")
    for part in parts:
        img_dir, lab_dir = part / "image", part / "label"
        imgs = {_stem(f): f for f in find_files(img_dir, ["*.nii.gz", "*.nii"])} if img_dir.is_dir() else {}
        labs = {_stem(f): f for f in find_files(lab_dir, ["*.nii.gz", "*.nii"])} if lab_dir.is_dir() else {}
        split = "test/labeled" if "test" in ctx.rel(part).lower() else "train/labeled"
        for name in sorted(set(imgs) | set(labs)):
            if name not in imgs:
                p.problems.append(f"{labs[name]}: label without its image (expected {img_dir / labs[name].name})")
            elif not lab_dir.is_dir():
                f = imgs[name]
                p.items.append(Item((f"train/unlabeled/image/{name}.nii.gz",), (Source(f),),
                                    partial(_image, f, off), case=name, group=name))
            elif name not in labs:
                p.problems.append(f"{imgs[name]}: no label (expected {lab_dir / imgs[name].name})")
            else:
                i, lb = imgs[name], labs[name]
                p.items.append(Item((f"{split}/image/{name}.nii.gz", f"{split}/label/{name}.nii.gz"),
                                    (Source(i), Source(lb)), partial(_pair, i, lb, off), case=name, group=name))
    return p
