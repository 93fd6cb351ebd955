"""Distance metrics of segmentations in physical units: AVD (SimpleITK) and HD95 (MONAI), docs/METHOD.md §6.

Both take per-class binary masks ``(N, C, *S)`` (see :func:`foreground_masks` to build them from a
label map) and the voxel spacing of each case **in tensor-axis order** (the order of ``*S``; for
NIfTI read with nibabel/MONAI that is the file's ``pixdim[1:]`` order). They return ``(N, C)``
float64 tensors in the unit of the spacing (mm for medical images), with NaN where the distance is
undefined — the paper's "unable": an empty prediction or an empty ground truth.

* **AVD** — the average Hausdorff distance of SimpleITK's ``HausdorffDistanceImageFilter``: the
  mean of the two directed average distances, from every voxel of one mask to the nearest voxel of
  the other (``(mean_{a∈A} d(a, B) + mean_{b∈B} d(b, A)) / 2``), using the image spacing.
  ``empty_policy`` (:data:`AVD_EMPTY_POLICIES`) says what an empty prediction costs: ``skip_class``
  (default) leaves out that class only; ``unable_case`` (the paper's reporting) makes the whole case
  "unable" (a NaN row) when a class present in the ground truth has an empty prediction.
* **HD95** — MONAI's ``compute_hausdorff_distance(percentile=95)``: the 95th percentile of the
  surface-to-surface distances (both directions, the larger of the two percentiles).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_hausdorff_distance

from .dice import one_hot_labels

#: What an empty predicted class does to AVD: ``skip_class`` (that class is NaN and left out) or
#: ``unable_case`` (the whole case is NaN, "unable", as the paper reports it).
AVD_EMPTY_POLICIES = ("skip_class", "unable_case")

__all__ = [
    "AVD_EMPTY_POLICIES",
    "average_hausdorff_distance",
    "avd_per_class",
    "foreground_masks",
    "hd95_per_class",
    "normalise_spacing",
    "unable_cases",
]


def foreground_masks(label: torch.Tensor, num_classes: int | None = None, label_kind: str = "multiclass") -> torch.Tensor:
    """Per-class boolean masks of the foreground classes, ``(N, C_fg, *S)``.

    ``multiclass``: a label map (N, 1, *S) of class indices 0..K-1 → masks of classes 1..K-1
    (``num_classes`` = K, background included). ``multilabel``: (N, K, *S) 0/1 (or probabilities
    thresholded at 0.5) → the K masks as they are (every channel is a foreground structure).
    """
    if label_kind == "multilabel":
        return label > 0.5 if label.is_floating_point() else label > 0
    if label_kind != "multiclass":
        raise ValueError(f"label_kind must be 'multiclass' or 'multilabel', got {label_kind!r}")
    if num_classes is None:
        raise ValueError("num_classes is required for multiclass label maps")
    return one_hot_labels(label, num_classes)[:, 1:] > 0.5


def normalise_spacing(spacing, batch: int, ndim: int) -> list[tuple[float, ...]]:
    """Spacing of each case as ``batch`` tuples of ``ndim`` floats.

    Accepts ``None`` (unit spacing), one sequence of ``ndim`` numbers (shared), a (B, ndim) or
    (ndim,) tensor/array, a list of per-case sequences, or what a DataLoader makes of a per-case
    tuple (a list of ``ndim`` tensors of shape (B,)).
    """
    if spacing is None:
        return [(1.0,) * ndim] * batch
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().double().numpy()
    if isinstance(spacing, np.ndarray):
        arr = np.asarray(spacing, dtype=np.float64)
        if arr.ndim == 1:
            arr = np.broadcast_to(arr, (batch, arr.shape[0]))
        if arr.shape == (ndim, batch) and arr.shape != (batch, ndim):
            arr = arr.T
        if arr.shape != (batch, ndim):
            raise ValueError(f"spacing of shape {arr.shape} does not fit a batch of {batch} {ndim}D cases")
        return [tuple(float(v) for v in row) for row in arr]
    seq = list(spacing)
    if len(seq) == ndim and all(isinstance(v, (int, float)) for v in seq):
        return [tuple(float(v) for v in seq)] * batch
    if len(seq) == ndim and all(isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() == batch for v in seq):
        return normalise_spacing(torch.stack([v.double() for v in seq], dim=1), batch, ndim)
    if len(seq) == batch:
        return [tuple(float(v) for v in (s.tolist() if isinstance(s, torch.Tensor) else s)) for s in seq]
    raise ValueError(f"cannot read a spacing for {batch} {ndim}D cases from {spacing!r}")


def average_hausdorff_distance(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """SimpleITK's average Hausdorff distance of two boolean masks (array order ``*S``).

    ``spacing`` in array-axis order (SimpleITK wants it reversed; this function does that).
    Returns NaN when either mask is empty.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        return math.nan
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * a.ndim))
    images = []
    for m in (a, b):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(tuple(reversed(spacing)))
        images.append(img)
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(*images)
    return float(f.GetAverageHausdorffDistance())


def avd_per_class(
    pred_masks: torch.Tensor, target_masks: torch.Tensor, spacing=None, empty_policy: str = "skip_class"
) -> torch.Tensor:
    """AVD per case and class: masks (N, C, *S) → (N, C) float64 (NaN: empty prediction or target).

    With ``empty_policy="unable_case"`` every class of a case is NaN when any class present in the
    ground truth has an empty prediction (:func:`unable_cases`); a class absent from both counts
    for nothing, as with ``skip_class``.
    """
    _check_masks(pred_masks, target_masks)
    if empty_policy not in AVD_EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {AVD_EMPTY_POLICIES}, got {empty_policy!r}")
    n, c = pred_masks.shape[:2]
    sp = normalise_spacing(spacing, n, pred_masks.dim() - 2)
    p = pred_masks.detach().cpu().numpy().astype(bool)
    t = target_masks.detach().cpu().numpy().astype(bool)
    out = torch.full((n, c), math.nan, dtype=torch.float64)
    for i in range(n):
        for k in range(c):
            out[i, k] = average_hausdorff_distance(p[i, k], t[i, k], sp[i])
    if empty_policy == "unable_case":
        out[unable_cases(pred_masks, target_masks)] = math.nan
    return out


def unable_cases(pred_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """(N,) bool: cases with a class present in the ground truth but empty in the prediction."""
    _check_masks(pred_masks, target_masks)
    pred_empty = ~pred_masks.detach().cpu().flatten(2).bool().any(-1)
    target_present = target_masks.detach().cpu().flatten(2).bool().any(-1)
    return (pred_empty & target_present).any(1)


def hd95_per_class(pred_masks: torch.Tensor, target_masks: torch.Tensor, spacing=None) -> torch.Tensor:
    """HD95 per case and class (MONAI): masks (N, C, *S) → (N, C) float64 (NaN where undefined)."""
    _check_masks(pred_masks, target_masks)
    n, c = pred_masks.shape[:2]
    sp = normalise_spacing(spacing, n, pred_masks.dim() - 2)
    p, t = pred_masks.detach().cpu().float(), target_masks.detach().cpu().float()
    out = torch.full((n, c), math.nan, dtype=torch.float64)
    valid = (p.flatten(2).sum(-1) > 0) & (t.flatten(2).sum(-1) > 0)
    if not bool(valid.any()):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks; they become NaN below
        for i in range(n):
            d = compute_hausdorff_distance(
                p[i : i + 1], t[i : i + 1], include_background=True, percentile=95, spacing=list(sp[i])
            )[0]
            out[i] = d.double()
    out[~valid] = math.nan
    out[~torch.isfinite(out)] = math.nan
    return out


def _check_masks(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() < 4:
        raise ValueError(f"expected masks (N, C, *S) of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
