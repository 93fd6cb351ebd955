"""``predict`` → NIfTI files that keep the input's spacing, origin and direction.

:class:`NiftiPredictionWriter` is a Lightning ``BasePredictionWriter``. The modules' ``predict_step``
returns a dict with ``"name"`` (one name per case), ``"meta"`` (the batch's geometry, as the data
module collates it) and image-like tensors ``(N, C, *S)``:

* ``segmentation`` — label map (multiclass) or 0/1 masks (multilabel; K channels);
* ``flow`` — displacement field in **voxel units**, component i along array axis i (a NIfTI
  vector image);
* ``warped_image``, ``warped_label`` — the moving image and labels warped onto the fixed image.

With ``itk_field`` (default) and a known geometry, each ``flow`` is also written as
``<name>_field.nii.gz``: an **ITK displacement field** (:func:`itk_displacement`; float64 vector
image on the fixed grid, each voxel the offset in mm, LPS world coordinates, to the point read in
the moving image — the moving array's own geometry ``meta_a`` when the prediction carries it,
else the fixed one's), which ``SimpleITK.DisplacementFieldTransform``, ITK and ANTs apply as it is.

Each is written to ``<output_dir>/<name>_<key>.nii.gz`` with nibabel (the library MONAI reads and
writes NIfTI with; no resampling): single-channel tensors as plain 2D/3D images, multi-channel
ones (flows, multilabel masks) with the channels on the last axis. The geometry comes from ``meta["affine"]``
(the voxel → world matrix of the array as the data module served it, MONAI/nibabel convention);
without it, from ``meta["spacing"]``/``["origin"]``/``["direction"]``; without any meta, unit
spacing at the origin (and a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
import nibabel as nib

__all__ = ["NiftiPredictionWriter", "affine_from_meta", "itk_displacement", "write_itk_field", "write_nifti"]

log = logging.getLogger(__name__)

IMAGE_KEYS = ("segmentation", "flow", "warped_image", "warped_label")


def _item(value: Any, i: int) -> Any:
    """Case ``i`` of a collated value (tensor (B, ...), list of B items, or list of per-axis (B,) tensors)."""
    if isinstance(value, torch.Tensor):
        return value[i] if value.dim() > 0 else value
    if isinstance(value, np.ndarray):
        return value[i]
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in value):
            return torch.stack([v[i] for v in value])  # default_collate of a per-case sequence
        return value[i]
    return value


def affine_from_meta(meta: Any, i: int, ndim: int) -> np.ndarray | None:
    """The voxel → world affine of case ``i`` of a collated meta dict ((ndim+1)² or 4×4), or ``None``."""
    if not isinstance(meta, dict):
        return None
    aff = meta.get("affine")
    if aff is not None:
        a = np.asarray(torch.as_tensor(_item(aff, i)).double())
        if a.shape in ((ndim + 1, ndim + 1), (4, 4)):
            return a
    if meta.get("spacing") is None:
        return None
    spacing = np.asarray(torch.as_tensor(_item(meta["spacing"], i)).double()).reshape(-1)[:ndim]
    origin = meta.get("origin")
    origin = np.zeros(ndim) if origin is None else np.asarray(torch.as_tensor(_item(origin, i)).double()).reshape(-1)[:ndim]
    direction = meta.get("direction")
    direction = np.eye(ndim) if direction is None else np.asarray(torch.as_tensor(_item(direction, i)).double()).reshape(ndim, ndim)
    a = np.eye(ndim + 1)
    a[:ndim, :ndim] = direction * spacing[None, :]
    a[:ndim, ndim] = origin
    return a


def _affine_4x4(affine: np.ndarray | None, ndim: int) -> np.ndarray:
    if affine is None:
        return np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    if affine.shape != (ndim + 1, ndim + 1):
        raise ValueError(f"affine of shape {affine.shape} does not fit {ndim}D data")
    out = np.eye(4)
    out[:ndim, :ndim] = affine[:ndim, :ndim]
    out[:ndim, 3] = affine[:ndim, ndim]
    return out


def write_nifti(array: torch.Tensor | np.ndarray, affine: np.ndarray | None, path: str | Path, vector: bool = False) -> Path:
    """Write ``array`` (C, *S) with the voxel → world ``affine`` (nibabel convention), no resampling.

    One channel: a plain 2D/3D image; several: channels on the last axis, or with ``vector=True``
    a NIfTI vector image (shape X×Y×Z×1×C, intent "vector"; ITK/SimpleITK read it as a vector
    field, e.g. a displacement). Both the sform and the qform carry the affine (code 1), so every
    NIfTI reader sees the same geometry.
    """
    arr = torch.as_tensor(array).detach().cpu()
    ndim = arr.dim() - 1
    if arr.dtype == torch.bool:
        arr = arr.to(torch.uint8)
    if arr.dtype == torch.int64:
        arr = arr.to(torch.int32)
    data = arr[0].numpy() if arr.shape[0] == 1 else np.moveaxis(arr.numpy(), 0, -1)
    if vector and arr.shape[0] > 1:
        data = data.reshape(*data.shape[:-1], *([1] * (3 - ndim)), 1, data.shape[-1])
    aff = _affine_4x4(affine, ndim)
    img = nib.Nifti1Image(np.ascontiguousarray(data), aff)
    if vector and arr.shape[0] > 1:
        img.header.set_intent("vector")
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _square_affine(affine: np.ndarray, ndim: int) -> np.ndarray:
    """(ndim+1)² voxel → world matrix of a (ndim+1)² or 4×4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (ndim + 1, ndim + 1):
        return a
    keep = [*range(ndim), 3]
    return a[np.ix_(keep, keep)]


def itk_displacement(flow: torch.Tensor | np.ndarray, affine: np.ndarray, affine_moving: np.ndarray | None = None) -> np.ndarray:
    """The ITK displacement field of a voxel flow: (ndim, *S) voxels → (ndim, *S) mm, LPS.

    ``flow`` channel i moves along array axis i of the fixed grid (``warp(x, φ)(p) = x(p + φ(p))``);
    ``affine`` / ``affine_moving``: voxel → world (RAS, nibabel convention) of the fixed and the
    moving array (default: the fixed one). The result at fixed voxel ``p`` is
    ``W_moving(p + φ(p)) − W_fixed(p)`` in LPS: the offset from the fixed voxel's world point to
    the world point where the moving image is read.
    """
    phi = np.asarray(torch.as_tensor(flow).detach().cpu().double())
    n = phi.shape[0]
    a_f = _square_affine(affine, n)
    a_m = a_f if affine_moving is None else _square_affine(affine_moving, n)
    grids = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in phi.shape[1:]], indexing="ij"))
    flat_p, flat_phi = grids.reshape(n, -1), phi.reshape(n, -1)
    moved = a_m[:n, :n] @ (flat_p + flat_phi) + a_m[:n, n:]
    here = a_f[:n, :n] @ flat_p + a_f[:n, n:]
    ras_to_lps = np.diag([-1.0, -1.0, 1.0][:n])
    return (ras_to_lps @ (moved - here)).reshape(phi.shape)


def write_itk_field(flow: torch.Tensor | np.ndarray, affine: np.ndarray, path: str | Path,
                    affine_moving: np.ndarray | None = None) -> Path:
    """Write :func:`itk_displacement` as a float64 vector image on the fixed grid (SimpleITK)."""
    import SimpleITK as sitk

    from ..apps.grid import Grid, to_image

    u = itk_displacement(flow, affine, affine_moving)
    n = u.shape[0]
    a = _square_affine(affine, n)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0][:n])
    grid = Grid.from_matrix(u.shape[1:], ras_to_lps @ a[:n, :n], ras_to_lps @ a[:n, n])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_image(u, grid, vector=True), str(path), useCompression=str(path).endswith(".gz"))
    return path


class NiftiPredictionWriter(BasePredictionWriter):
    """Write the outputs of ``predict_step`` as NIfTI next to each other, one file per case and output.

    Args:
        output_dir: folder of the files.
        keys: which outputs to write (default: all of ``segmentation``, ``flow``,
            ``warped_image``, ``warped_label`` that ``predict_step`` returns).
        suffix: file extension (``.nii.gz`` or ``.nii``).
        itk_field: also write each ``flow`` as an ITK displacement field (``<name>_field``, mm,
            LPS; see the module docstring) when the prediction carries its geometry.
    """

    def __init__(self, output_dir: str = "predictions", keys: Sequence[str] | None = None, suffix: str = ".nii.gz",
                 itk_field: bool = True):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.keys = tuple(keys) if keys is not None else IMAGE_KEYS
        self.suffix = suffix
        self.itk_field = itk_field
        self.written: list[Path] = []
        self._warned = False

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(prediction, dict):
            return
        names = prediction.get("name")
        meta = prediction.get("meta")
        for key in self.keys:
            value = prediction.get(key)
            if not isinstance(value, torch.Tensor):
                continue
            n, ndim = value.shape[0], value.dim() - 2
            case_names = list(names) if names is not None else [f"case{batch_idx}_{i}" for i in range(n)]
            for i in range(n):
                affine = affine_from_meta(meta, i, ndim)
                if affine is None and not self._warned:
                    log.warning("NiftiPredictionWriter: the batch carries no geometry (meta); writing unit spacing at the origin")
                    self._warned = True
                path = self.output_dir / f"{case_names[i]}_{key}{self.suffix}"
                self.written.append(write_nifti(value[i], affine, path, vector=(key == "flow")))
                if key == "flow" and self.itk_field and affine is not None:
                    moving = affine_from_meta(prediction.get("meta_a"), i, ndim)
                    field = self.output_dir / f"{case_names[i]}_field{self.suffix}"
                    self.written.append(write_itk_field(value[i], affine, field, moving))
