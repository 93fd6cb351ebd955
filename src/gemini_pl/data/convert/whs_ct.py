"""MM-WHS 2017 CT (``whs_ct``): ``ct_train_1001_image.nii.gz`` / ``_label.nii.gz`` pairs.

Format, as distributed by the Multi-Modality Whole Heart Segmentation challenge (Zhuang et al.,
STACOM/MICCAI 2017; zmiclab.github.io/zxh/0/mmwhs): folders ``ct_train`` (20 cases,
``ct_train_1001_image.nii.gz`` + ``ct_train_1001_label.nii.gz`` ... ``1020``) and ``ct_test`` (40
images ``ct_test_2001_image.nii.gz`` ... ``2040``; their labels were withheld — a copy that has
``ct_test_2NNN_label.nii.gz`` gets them used). The MR part (``mr_*``) is ignored. Files are found
anywhere under ``--src`` by name: ``ct_(train|test)_NNNN_(image|label).nii[.gz]``; a ``ct_*``
NIfTI that does not match is reported with that pattern.

Written: ``train/labeled/{image,label}/ct_train_1001.nii.gz`` (one name per case), test images with
a label to ``test/labeled``, without one to ``train/unlabeled/image/ct_test_2001.nii.gz``
(``--num-test N`` moves N labeled training cases to ``test/labeled``). Labels keep the MM-WHS codes
205, 420, 500, 550, 600, 820, 850 (``specs/whs_ct.py`` maps them to 1..7). Intensities: HU + 1024
(``common.write_ct``). One image per patient: the case is the patient group.
"""

from __future__ import annotations

import re
from functools import partial

from gemini_pl.data.convert import common
from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files

DATASET = "whs_ct"
ALIASES = ("mmwhs", "mm-whs", "whs")
TITLE = "MM-WHS 2017 CT: ct_train_NNNN_image/label.nii.gz pairs (+ ct_test images)"
EXPECTED = 60
PATTERN = re.compile(r"^ct_(train|test)_(\d{4})_(image|label)\.nii(\.gz)?$", re.I)


def plan(ctx: Context) -> Plan:
    p = Plan()
    cases: dict[tuple[str, str], dict[str, list]] = {}
    for f in find_files(ctx.src, ["*.nii.gz", "*.nii"]):
        m = PATTERN.match(f.name)
        if m is None:
            if f.name.lower().startswith("ct_"):
                p.problems.append(f"{f}: not an MM-WHS CT file name (expected {PATTERN.pattern})")
            continue
        cases.setdefault((m.group(1).lower(), m.group(2)), {"image": [], "label": []})[m.group(3).lower()].append(f)
    off = ctx.options.get("ct_offset", "auto")
    for (part, num), files in sorted(cases.items()):
        name = f"ct_{part}_{num}"
        for kind in ("image", "label"):
            if len(files[kind]) > 1:
                p.problems.append(f"case {name}: {len(files[kind])} {kind} files ({', '.join(map(str, files[kind]))}); "
                                  "none converted — keep one")
        if len(files["image"]) > 1 or len(files["label"]) > 1:
            continue
        if not files["image"]:
            p.problems.append(f"{files['label'][0]}: label without its image (expected {name}_image.nii.gz)")
            continue
        img = files["image"][0]
        if not files["label"]:
            if part == "train":
                p.problems.append(f"{img}: no label (expected {img.parent / (name + '_label.nii.gz')})")
                continue
            p.items.append(Item((f"train/unlabeled/image/{name}.nii.gz",), (Source(img),),
                                partial(_image, img, off), case=name, group=name))
            continue
        lab = files["label"][0]
        split = "train/labeled" if part == "train" else "test/labeled"
        p.items.append(Item((f"{split}/image/{name}.nii.gz", f"{split}/label/{name}.nii.gz"),
                            (Source(img), Source(lab)), partial(_pair, img, lab, off), case=name, group=name))
    return p


def _image(img, off, paths, data) -> str:
    return "image: " + common.write_ct(img, paths[0], off)


def _pair(img, lab, off, paths, data) -> str:
    return ("image: " + common.write_ct(img, paths[0], off) + "; label: "
            + common.write_label(lab, paths[1], image_src=img))
