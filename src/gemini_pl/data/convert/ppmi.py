"""PPMI (``ppmi``): T1 MRI as DICOM series, ``PPMI/<subject>/<description>/<date>/<image id>/*.dcm``.

Format: the Parkinson's Progression Markers Initiative images come from the LONI Image and Data
Archive as DICOM, one folder per series: ``PPMI/<subject>/<series description>/<acquisition
date_time>/<image id, e.g. I123456>/*.dcm`` (the layout of an IDA download, as documented by
tools that convert it, e.g. github.com/rmarkello/ppmitobids). Each folder is read with SimpleITK's
``ImageSeriesReader`` (GDCM orders the slices by ``ImagePositionPatient`` (0020|0032); the
direction comes from ``ImageOrientationPatient`` (0020|0037), the spacing from ``PixelSpacing``
and the slice positions), so the NIfTI keeps the scanner geometry. A folder holding several series
is split by ``SeriesInstanceUID``; a series of fewer than 3 slices is reported (not a volume).

Written: ``brain/<subject>_<image id>.nii.gz`` (the flat layout of ``specs/ppmi.py``; every file
an unlabeled training image), intensities as stored (the spec min-max scales them). A subject has
several images (visits, repeats): the subject (``PatientID`` 0010|0020, else the folder) is the
patient group recorded in ``convert.json``. ``--series REGEX`` keeps only series whose
description (0008|103e, else the folder name) matches, e.g. ``'MPRAGE|T1'``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from gemini_pl.data.convert.base import Context, Item, Plan, Source
from gemini_pl.errors import DataError

DATASET = "ppmi"
ALIASES = ()
TITLE = "PPMI: DICOM series PPMI/<subject>/<description>/<date>/<image id>/*.dcm"
EXPECTED = None
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _tag(path: Path, key: str) -> str:
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.LoadPrivateTagsOff()
    r.ReadImageInformation()
    return r.GetMetaData(key).strip() if r.HasMetaDataKey(key) else ""


def plan(ctx: Context) -> Plan:
    import SimpleITK as sitk

    p = Plan()
    try:
        pattern = re.compile(ctx.options["series"]) if ctx.options.get("series") else None
    except re.error as exc:
        raise DataError(f"--series {ctx.options['series']!r} is not a regular expression: {exc}") from None
    folders = sorted({f.parent for f in ctx.src.rglob("*") if f.is_file() and f.suffix.lower() in (".dcm", "")
                      and not f.name.startswith(".")})
    for folder in folders:
        try:
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError:
            ids = ()
        if not ids:
            if any(f.suffix.lower() == ".dcm" for f in folder.iterdir()):
                p.problems.append(f"{folder}: .dcm files but no readable DICOM series")
            continue
        rel = Path(ctx.rel(folder)).parts
        parts = rel[1:] if rel and rel[0].upper() == "PPMI" else rel
        for sid in ids:
            files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)]
            first = files[0]
            patient = _tag(first, "0010|0020") or (parts[0] if parts else "unknown")
            desc = _tag(first, "0008|103e") or (parts[1] if len(parts) > 1 else "")
            if pattern is not None and not pattern.search(desc):
                continue
            if len(files) < 3:
                p.problems.append(f"{folder}: series {sid} has {len(files)} slice(s) — not a 3D volume; skipped")
                continue
            image_id = folder.name if re.fullmatch(r"I\d+", folder.name) else (
                _tag(first, "0020|000e").split(".")[-1] or folder.name)
            if len(ids) > 1:
                image_id += "_" + sid.split(".")[-1]
            name = _SAFE.sub("_", f"{patient}_{image_id}")
            p.items.append(Item((f"{name}.nii.gz",), tuple(Source(f) for f in files),
                                partial(_build, files), case=name, group=_SAFE.sub("_", patient)))
    if not folders:
        p.problems.append(f"{ctx.src}: no DICOM files found (expected PPMI/<subject>/<description>/<date>/<id>/*.dcm)")
    return p


def _build(files, paths, data) -> str:
    import SimpleITK as sitk

    r = sitk.ImageSeriesReader()
    r.SetFileNames([str(f) for f in files])
    try:
        img = r.Execute()
    except RuntimeError as exc:
        raise DataError(f"cannot read the DICOM series of {files[0].parent}: "
                        f"{str(exc).strip().splitlines()[-1]}") from None
    sitk.WriteImage(img, str(paths[0]), True)
    return (f"DICOM series ({len(files)} slices) -> NIfTI, geometry from ImageOrientationPatient/"
            f"ImagePositionPatient, intensities as stored")
