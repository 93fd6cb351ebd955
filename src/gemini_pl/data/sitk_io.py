"""Reading ``.nrrd``, ``.mha`` / ``.mhd`` (and any other SimpleITK format) as MONAI MetaTensors,
and the number of spatial dimensions of an image file from its header alone.

:func:`read_sitk` returns what MONAI's ``NibabelReader`` + ``EnsureChannelFirst`` return for a
NIfTI file, so the rest of the chain (orientation, spacing, intensity, geometry) treats every
format alike:

* array ``(C, *S)`` in the file's voxel-index order ``(i, j, k)`` (SimpleITK's numpy view is
  ``(k, j, i)``; it is transposed), ``C`` = 1 or the number of vector components;
* ``affine`` (n+1, n+1): voxel index -> world in MONAI's RAS convention. ITK's world is LPS, so
  the affine ``[[D diag(spacing), origin], [0, 1]]`` is multiplied on the left by
  ``diag(-1, -1, 1, 1)`` (3D) or ``diag(-1, -1, 1)`` (2D), as MONAI's own ITK reader does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["SITK_SUFFIXES", "header_geometry", "header_spatial_dims", "read_sitk", "sitk_affine_ras"]

#: file endings read through SimpleITK (checked case-insensitively).
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def sitk_affine_ras(direction: np.ndarray, spacing: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """The (n+1, n+1) RAS voxel -> world affine of an ITK image geometry (LPS: ``direction``
    (n, n) column-per-axis, ``spacing`` (n,), ``origin`` (n,))."""
    n = len(spacing)
    aff = np.eye(n + 1)
    aff[:n, :n] = np.asarray(direction, dtype=np.float64).reshape(n, n) * np.asarray(spacing, dtype=np.float64)
    aff[:n, n] = np.asarray(origin, dtype=np.float64)
    flip = np.diag([-1.0, -1.0] + [1.0] * (n - 1))
    return flip @ aff


def read_sitk(path: str | os.PathLike, dtype=np.float32):
    """Read ``path`` with SimpleITK into a MONAI ``MetaTensor`` ``(C, *S)`` (see module doc).

    ``dtype``: numpy dtype of the array, or None to keep the file's. Errors are SimpleITK's
    (``RuntimeError``); the caller names the file."""
    import SimpleITK as sitk
    from monai.data import MetaTensor

    img = sitk.ReadImage(str(path))
    n = img.GetDimension()
    arr = sitk.GetArrayFromImage(img)  # (k, j, i) or (k, j, i, components)
    comps = img.GetNumberOfComponentsPerPixel()
    if comps > 1:
        arr = np.moveaxis(arr, -1, 0)  # (C, k, j, i)
    else:
        arr = arr[None]
    arr = np.transpose(arr, (0, *range(n, 0, -1)))  # (C, i, j, k)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    aff = sitk_affine_ras(np.array(img.GetDirection()), np.array(img.GetSpacing()), np.array(img.GetOrigin()))
    meta = {
        "affine": aff.copy(), "original_affine": aff.copy(), "spatial_shape": np.array(arr.shape[1:]),
        "original_channel_dim": "no_channel" if comps == 1 else 0, "filename_or_obj": str(path),
        "space": "RAS",
    }
    return MetaTensor(np.ascontiguousarray(arr), meta=meta)


def header_spatial_dims(path: str | os.PathLike) -> int:
    """2 or 3: the spatial dimensions the image file ``path`` is read with, from its header only
    (NIfTI: the first three of its axes, the 4th and 5th are channels; PNG: 2; SimpleITK
    formats: the image dimension)."""
    name = Path(path).name.lower()
    _checked(path)
    if name.endswith(".png"):
        return 2
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return min(len(nib.load(str(path)).shape), 3)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return min(reader.GetDimension(), 3)


def header_geometry(path: str | os.PathLike) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(shape, spacing)`` of an image file along its voxel axes ``(i, j, k)``, from the header."""
    name = Path(path).name.lower()
    _checked(path)
    if name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            return (im.size[0], im.size[1]), (1.0, 1.0)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))
        n = min(len(img.shape), 3)
        return tuple(int(s) for s in img.shape[:n]), tuple(float(z) for z in img.header.get_zooms()[:n])
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing())


def _checked(path: str | os.PathLike) -> None:
    """The file checks of every read (:func:`gemini_pl.data.io.check_file`: DataError naming an
    empty, non-gzip ``.gz`` or unsupported file) before its header is parsed."""
    from gemini_pl.data.io import check_file

    check_file(path)
