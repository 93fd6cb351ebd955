"""ASOCA (``asoca``): coronary CTA as NRRD, ``<Cohort>/CTCA`` images and ``<Cohort>/Annotations``.

Format, as distributed by the Automated Segmentation Of Coronary Arteries challenge (Gharleghi et
al., MICCAI 2020; asoca.grand-challenge.org): two cohorts ``Normal`` and ``Diseased``, each with
``CTCA/<Cohort>_<n>.nrrd`` (20 training images per cohort), ``Annotations/<Cohort>_<n>.nrrd``
(their coronary-tree masks, 0/1, same grid) and ``Testset_<Cohort>/<n>.nrrd`` (10 test images per
cohort, no annotations). Assumed from public code that reads the download (the folder names are
not in the challenge's text); a ``.nrrd`` in another folder is reported with the expected layout.

Written: ``train/labeled/{image,label}/<Cohort>_<n>.nii.gz`` and the test images as
``train/unlabeled/image/<Cohort>_test_<n>.nii.gz`` (Semi T1 uses the images). NRRD ``space
directions`` / ``space origin`` become the NIfTI's direction, spacing and origin (SimpleITK reads
them in LPS and writes the NIfTI's RAS affine from them). Intensities: HU + 1024
(``common.write_ct``); label value 1 = coronary artery.
"""

from __future__ import annotations

from functools import partial

from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files
from gemini_pl.data.convert.whs_ct import _image, _pair

DATASET = "asoca"
ALIASES = ()
TITLE = "ASOCA: <Cohort>/CTCA/<Cohort>_<n>.nrrd + <Cohort>/Annotations/<Cohort>_<n>.nrrd, Testset_<Cohort>/<n>.nrrd"
EXPECTED = 60
COHORTS = ("Normal", "Diseased")


def plan(ctx: Context) -> Plan:
    p = Plan()
    images, labels, tests = {}, {}, {}
    for f in find_files(ctx.src, ["*.nrrd"]):
        folder, stem = f.parent.name, f.name[: -len(".nrrd")]
        if folder == "CTCA":
            images.setdefault(stem, []).append(f)
        elif folder == "Annotations":
            labels.setdefault(stem, []).append(f)
        elif folder.lower().startswith("testset"):
            cohort = next((c for c in COHORTS if c.lower()[:7] in folder.lower()), folder[len("testset"):].strip("_"))
            tests.setdefault(f"{cohort}_test_{stem}", []).append(f)
        else:
            p.problems.append(f"{f}: not in a CTCA/, Annotations/ or Testset_<Cohort>/ folder "
                              "(expected <Cohort>/CTCA/<Cohort>_<n>.nrrd)")
    off = ctx.options.get("ct_offset", "auto")
    for name in sorted(set(images) | set(labels)):
        imgs, labs = images.get(name, []), labels.get(name, [])
        pair = p.one_pair(name, imgs, labs, ("case", "annotation"),
                          labs[0].parent.parent / "CTCA" / labs[0].name if labs else None,
                          imgs[0].parent.parent / "Annotations" / imgs[0].name if imgs else None)
        if pair is None:
            continue
        image, label = pair
        p.items.append(Item((f"train/labeled/image/{name}.nii.gz", f"train/labeled/label/{name}.nii.gz"),
                            (Source(image), Source(label)), partial(_pair, image, label, off),
                            case=name, group=name))
    for name, files in sorted(tests.items()):
        for f in files:  # two copies of one test case collide in the outputs (reported by the base)
            p.items.append(Item((f"train/unlabeled/image/{name}.nii.gz",), (Source(f),), partial(_image, f, off),
                                case=name, group=name))
    return p
