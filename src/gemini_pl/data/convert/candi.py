"""CANDI (``candi``): T1 MRI with segmentations, ``<subject>/<subject>_procimg.nii.gz`` + ``_seg``.

Format, as distributed by CANDI Share (Kennedy et al., Neuroinformatics 2012; through NITRC): per
study and diagnostic group (e.g. ``SchizBull_2008/HC``, ``BPDwoPsy``, ``BPDwPsy``, ``SS``) one
folder per subject, ``HC_001/HC_001_procimg.nii.gz`` (the spatially normalised, cropped T1) and
``HC_001/HC_001_seg.nii.gz`` (the general-anatomy segmentation, FreeSurfer/CMA fill values) — 103
subjects (the same two files per subject folder, next to a demographics CSV, are described in
DataLad's documentation of publishing the CANDI HC data). Found anywhere under ``--src`` by the
``_procimg`` / ``_seg`` suffixes; an image without its segmentation is reported naming the file
expected.

Written: ``train/labeled/{image,label}/<subject>.nii.gz`` (``--num-test N``: N subjects to
``test/labeled``; ``--num-unlabeled N``: N subjects to ``train/unlabeled/image`` with their
segmentation as the brain mask ``train/unlabeled/label/<subject>.nii.gz``, as in the authors'
copy — training subjects only, so no test label reaches an input), byte copies; labels keep the FreeSurfer codes (``specs/candi.py`` maps the 28
classes, other codes -> 0). Brain masks are not part of the download: ``--masks DIR`` takes
``<DIR>/<subject>.nii.gz`` (e.g. SynthStrip or FreeSurfer ``brainmask`` > 0, on the image's grid)
into ``mask/``; without them train with ``preprocessing: {brain_mask: none}`` (the check at the
end of ``convert`` does). One image per subject: the subject is the patient group.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from gemini_pl.data.convert import common
from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files

DATASET = "candi"
ALIASES = ()
TITLE = "CANDI: <subject>/<subject>_procimg.nii.gz + <subject>_seg.nii.gz (+ --masks DIR)"
EXPECTED = 103


def check_overrides(ctx: Context) -> dict:
    return {} if ctx.options.get("masks") else {"preprocessing": {"brain_mask": "none"}}


def plan(ctx: Context) -> Plan:
    p = Plan()
    masks = Path(ctx.options["masks"]) if ctx.options.get("masks") else None
    images: dict[str, list[Path]] = {}
    segs: dict[str, list[Path]] = {}
    for f in find_files(ctx.src, ["*_procimg.nii.gz", "*_procimg.nii", "*_seg.nii.gz", "*_seg.nii"]):
        stem = f.name.split(".nii")[0]
        if stem.endswith("_procimg"):
            images.setdefault(stem[: -len("_procimg")], []).append(f)
        else:
            segs.setdefault(stem[: -len("_seg")], []).append(f)
    for subj in sorted(set(images) | set(segs)):
        imgs, labs = images.get(subj, []), segs.get(subj, [])
        pair = p.one_pair(subj, imgs, labs, ("subject", "segmentation"),
                          labs[0].parent / (subj + "_procimg.nii.gz") if labs else None,
                          imgs[0].parent / (subj + "_seg.nii.gz") if imgs else None)
        if pair is None:
            continue
        image, label = pair
        outs = [f"train/labeled/image/{subj}.nii.gz", f"train/labeled/label/{subj}.nii.gz"]
        sources = [Source(image), Source(label)]
        mask = None
        if masks is not None:
            cand = [masks / f"{subj}.nii.gz", masks / f"{subj}.nii"]
            mask = next((c for c in cand if c.is_file()), None)
            if mask is None:
                p.problems.append(f"subject {subj}: no brain mask in --masks (expected {cand[0]})")
            else:
                outs.append(f"train/labeled/mask/{subj}.nii.gz")
                sources.append(Source(mask))
        p.items.append(Item(tuple(outs), tuple(sources), partial(_build, image, label, mask),
                            case=subj, group=subj))
    return p


def _build(img, lab, mask, paths, data) -> str:
    steps = "image: " + common.write_image(img, paths[0]) + "; label: " + common.write_label(lab, paths[1], img)
    if mask is not None:
        steps += "; " + common.write_mask(mask, paths[2], img)
    return steps
