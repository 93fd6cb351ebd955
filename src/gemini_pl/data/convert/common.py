"""Writers shared by the dataset modules: volumes with their geometry, CT intensities, labels.

Conventions the specs expect (``src/gemini_pl/data/specs/``):

* 3D images and labels are written as ``.nii.gz`` with the source file's geometry (voxel order,
  spacing, origin and direction are those SimpleITK reads from the source: NRRD ``space
  directions``, MetaImage ``TransformMatrix``/``Offset``, DICOM ``ImageOrientationPatient``/
  ``ImagePositionPatient``). A ``.nii.gz`` source that needs no change is copied byte for byte.
* CT intensities: the CT specs clip to [0, 2048] and divide by 2048 with ``offset`` 0, i.e. they
  expect values stored as HU + 1024 (as in the authors' released copies). ``ct_offset="auto"``
  (default) adds 1024 to a volume whose minimum is below -200 (air in HU is -1000: the file is in
  plain HU) and leaves one that is already shifted as it is; a number adds that number to every
  volume. What was done is recorded per file in ``convert.json``.
* Labels keep the provider's integer codes (the spec's label table maps them to classes); a label
  file with non-integer values, or on another grid than its image, is an error naming both files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gemini_pl.errors import DataError

#: a CT volume whose minimum is below this is taken to be in plain HU (``ct_offset="auto"``).
HU_THRESHOLD = -200.0
HU_SHIFT = 1024


def read(path: Path):
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None


def write(img, dst: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(img, str(dst), True)


def geometry(img) -> tuple:
    return (img.GetSize(), tuple(round(v, 4) for v in img.GetSpacing()),
            tuple(round(v, 3) for v in img.GetOrigin()), tuple(round(v, 4) for v in img.GetDirection()))


def ct_offset_for(arr: np.ndarray, setting: Any) -> float:
    if setting in (None, "auto"):
        return float(HU_SHIFT) if float(arr.min()) < HU_THRESHOLD else 0.0
    return float(setting)


def write_ct(src: Path, dst: Path, setting: Any = "auto") -> str:
    """Write CT volume ``src`` to ``dst`` (.nii.gz) in the stored-as-HU+1024 convention."""
    import SimpleITK as sitk

    img = read(src)
    arr = sitk.GetArrayViewFromImage(img)
    off = ct_offset_for(arr, setting)
    lo, hi = float(arr.min()), float(arr.max())
    if off == 0:
        if str(src).lower().endswith(".nii.gz"):
            shutil.copyfile(src, dst)
            return f"copied (stored range [{lo:g}, {hi:g}] already HU + 1024)"
        write(img, dst)
        return f"{_kind(src)} -> NIfTI, geometry kept, intensities as stored [{lo:g}, {hi:g}]"
    shifted = arr.astype(np.float64) + off
    if np.issubdtype(arr.dtype, np.integer):
        dtype = np.int16 if shifted.min() >= -32768 and shifted.max() <= 32767 else np.int32
    else:
        dtype = np.float32
    out = sitk.GetImageFromArray(shifted.astype(dtype))
    out.CopyInformation(img)
    write(out, dst)
    return (f"{_kind(src)} -> NIfTI, geometry kept, intensities + {off:g} "
            f"([{lo:g}, {hi:g}] -> [{lo + off:g}, {hi + off:g}]; spec: HU + 1024, clip [0, 2048])")


def write_label(src: Path, dst: Path, image_src: Path | None = None) -> str:
    """Write label volume ``src`` to ``dst`` (.nii.gz), integer codes as distributed."""
    import SimpleITK as sitk

    img = read(src)
    arr = sitk.GetArrayViewFromImage(img)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"label {src} has non-integer values; expected the provider's integer codes")
        img = sitk.Cast(img, sitk.sitkInt16 if arr.min() < 0 else sitk.sitkUInt16)
    if image_src is not None:
        ref = read_header(image_src)
        if geometry(ref)[:1] != geometry(img)[:1] or not _close(ref, img):
            raise DataError(f"label {src} is not on the grid of its image {image_src} "
                            f"(size/spacing/origin/direction {geometry(img)} vs {geometry(ref)})")
    values = np.unique(sitk.GetArrayViewFromImage(img))
    if str(src).lower().endswith(".nii.gz") and img.GetPixelID() == read(src).GetPixelID():
        shutil.copyfile(src, dst)
        how = "copied"
    else:
        write(img, dst)
        how = f"{_kind(src)} -> NIfTI, geometry kept"
    shown = ", ".join(str(int(v)) for v in values[:12]) + (" ..." if len(values) > 12 else "")
    return f"{how}; label codes as distributed: {shown}"


def read_header(path: Path):
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None
    return r


def _close(a, b) -> bool:
    return (tuple(a.GetSize()) == tuple(b.GetSize())
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def _kind(path: Path) -> str:
    name = str(path).lower()
    for suf, kind in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                      (".mhd", "MetaImage"), (".mha", "MetaImage")):
        if name.endswith(suf):
            return kind
    return "DICOM"


def write_image(src: Path, dst: Path) -> str:
    """Write a (non-CT) volume ``src`` to ``dst`` (.nii.gz): copied when it is one already."""
    if str(src).lower().endswith(".nii.gz"):
        read_header(src)
        shutil.copyfile(src, dst)
        return "copied (intensities as stored)"
    write(read(src), dst)
    return f"{_kind(src)} -> NIfTI, geometry kept, intensities as stored"


def write_mask(src: Path, dst: Path, image_src: Path) -> str:
    """Write brain mask ``src`` as uint8 0/1 (> 0 is brain) on the grid of ``image_src``."""
    import SimpleITK as sitk

    img = read(src)
    ref = read_header(image_src)
    if not _close(ref, img):
        raise DataError(f"brain mask {src} is not on the grid of its image {image_src}")
    arr = sitk.GetArrayViewFromImage(img) > 0
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(img)
    write(out, dst)
    return "brain mask: > 0 -> 1 (uint8), geometry kept"
