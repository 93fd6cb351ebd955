"""Composition of dense displacement fields (backward-warp convention of :func:`~gemini_pl.spatial.warp`).

A displacement φ (N, ndim, *S), voxel units, stands for the map T_φ(p) = p + φ(p) (the warp reads
the moving image at T_φ(p)). The composition T_outer ∘ T_inner is again a displacement:

    (T_outer ∘ T_inner)(p) = p + φ_inner(p) + φ_outer(p + φ_inner(p)),

i.e. ``compose(outer, inner) = inner + warp(outer, inner)``. Outside the field of view ``outer`` is
read as zero (the warp's zero padding); ``validity_mask(inner, strict=True)`` marks the voxels where that does
not happen. With φ_AB warping A onto B and φ_BA warping B onto A, T_AB ∘ T_BA is the identity of
A's grid for an inverse-consistent pair, so ``compose(φ_AB, φ_BA)`` is then zero.
"""

from __future__ import annotations

import torch

from .warp import warp

__all__ = ["compose"]


def compose(outer: torch.Tensor, inner: torch.Tensor, sampling: str = "exact") -> torch.Tensor:
    """Displacement of T_outer ∘ T_inner: ``inner + warp(outer, inner)``; both (N, ndim, *S), float32 out.

    Differentiable with respect to both fields (bilinear sampling of ``outer``).
    """
    if outer.shape != inner.shape:
        raise ValueError(f"compose expects two fields of the same shape, got {tuple(outer.shape)} and {tuple(inner.shape)}")
    with torch.autocast(device_type=inner.device.type, enabled=False):
        return inner.float() + warp(outer.float(), inner.float(), sampling=sampling)

