"""Whole-image inference, with MONAI sliding windows for volumes larger than the training patch (docs/METHOD.md §6).

:func:`infer` runs a predictor on the whole image when it fits in ``roi_size`` (or when no
``roi_size`` is given), and otherwise ``monai.inferers.sliding_window_inference`` with Gaussian
blending of overlapping windows. The predictor sees windows of ``roi_size`` (smaller images are
padded by MONAI and cropped back).

Registration uses the same function on the moving and fixed images stacked along channels
(:func:`register_windows`): each window predicts the displacement of its own region, and the
blended field covers the whole volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

__all__ = ["infer", "needs_windows", "register_windows"]


def needs_windows(spatial_shape: Sequence[int], roi_size: Sequence[int] | None) -> bool:
    """True when ``roi_size`` is set and the image exceeds it along some axis."""
    if roi_size is None:
        return False
    if len(roi_size) != len(spatial_shape):
        raise ValueError(f"roi_size {list(roi_size)} does not match an image of shape {tuple(spatial_shape)}")
    return any(int(s) > int(r) for s, r in zip(spatial_shape, roi_size))


def infer(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    mode: str = "gaussian",
) -> torch.Tensor:
    """``predictor(image)`` for (N, C, *S) inputs, by sliding windows when the image exceeds ``roi_size``.

    Args:
        predictor: maps (n, C, *roi) → (n, K, *roi).
        roi_size: the window (usually the training patch); ``None``: always the whole image.
        sw_batch_size: windows per predictor call.
        overlap: window overlap fraction.
        mode: blending, ``"gaussian"`` or ``"constant"``.
    """
    if not needs_windows(image.shape[2:], roi_size):
        return predictor(image)
    return sliding_window_inference(
        image, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap, mode=mode
    )


def register_windows(
    flow_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    moving: torch.Tensor,
    fixed: torch.Tensor,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Displacement field (N, ndim, *S) of ``flow_fn(moving, fixed)``, by windows when needed
    (otherwise one call on the tensors given: a caller may recognise its own ``fixed``)."""
    if not needs_windows(moving.shape[2:], roi_size):
        return flow_fn(moving, fixed)
    c = moving.shape[1]

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return flow_fn(x[:, :c], x[:, c:])

    return infer(predictor, torch.cat([moving, fixed], dim=1), roi_size, sw_batch_size, overlap, mode)
