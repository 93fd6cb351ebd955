"""Topology terms of a pair of deformation fields (an extension beyond the paper; defaults off).

Displacements φ (N, ndim, *S) in voxel units, backward-warp convention (T_φ(p) = p + φ(p), see
:mod:`gemini_pl.spatial.compose`); φ_AB warps A onto B, φ_BA warps B onto A.

* :func:`inverse_consistency`: mean squared distance of T_AB ∘ T_BA and of T_BA ∘ T_AB from the
  identity, ``mean_M ‖compose(φ_AB, φ_BA)‖² + mean_M ‖compose(φ_BA, φ_AB)‖²`` (voxels²), each over
  the voxels whose inner map samples the outer field without touching its zero padding
  (``validity_mask(inner, strict=True)``);
* :func:`negative_jacobian`: ``mean(max(0, −det(I + ∇φ)))``, zero for every field without folds
  (det J ≥ 0 everywhere), with the Jacobian of :func:`~gemini_pl.metrics.jacobian_determinant`
  (the scheme of the folding % and SDlogJ metrics).
"""

from __future__ import annotations

import torch

from ..metrics.jacobian import jacobian_determinant
from ..spatial import compose, validity_mask

__all__ = ["inverse_consistency", "negative_jacobian", "topology_terms"]


def _one_way(outer: torch.Tensor, inner: torch.Tensor, sampling: str) -> torch.Tensor:
    residual = compose(outer, inner, sampling=sampling).pow(2).sum(dim=1, keepdim=True)  # (N, 1, *S)
    mask = validity_mask(inner, sampling=sampling, strict=True)
    return (residual * mask).sum() / mask.sum().clamp_min(1.0)


def inverse_consistency(flow_ab: torch.Tensor, flow_ba: torch.Tensor, sampling: str = "exact") -> torch.Tensor:
    """``‖T_AB ∘ T_BA − id‖² + ‖T_BA ∘ T_AB − id‖²``, masked means over voxels (a float32 scalar).

    ``flow_ab``, ``flow_ba`` (N, ndim, *S). Zero for an exactly inverse pair of fields (up to
    interpolation where the fields are not linear); for two constant shifts t₁, t₂ it is 2‖t₁ + t₂‖².
    """
    if flow_ab.shape != flow_ba.shape:
        raise ValueError(f"inverse_consistency expects two fields of the same shape, got {tuple(flow_ab.shape)} and {tuple(flow_ba.shape)}")
    return _one_way(flow_ab, flow_ba, sampling) + _one_way(flow_ba, flow_ab, sampling)


def negative_jacobian(flow: torch.Tensor) -> torch.Tensor:
    """``mean(relu(−det(I + ∇φ)))`` over batch and voxels (a float32 scalar); ``flow`` (N, ndim, *S)."""
    return torch.relu(-jacobian_determinant(flow)).mean()


def topology_terms(
    flow_ab: torch.Tensor, flow_ba: torch.Tensor | None, lambda_inverse: float = 0.0, lambda_jacobian: float = 0.0,
    sampling: str = "exact",
) -> tuple[dict[str, torch.Tensor], torch.Tensor | float]:
    """The topology terms switched on by their weights, and their weighted sum.

    Returns ``({"inverse": ..., "neg_jacobian": ...}, λ_inverse·inverse + λ_jacobian·neg_jacobian)``
    holding only the terms with a weight > 0 (``({}, 0.0)`` with both off). ``neg_jacobian`` sums
    both directions; ``flow_ba`` may be ``None`` (one direction) unless ``lambda_inverse > 0``.
    """
    terms: dict[str, torch.Tensor] = {}
    total: torch.Tensor | float = 0.0
    if lambda_inverse > 0:
        if flow_ba is None:
            raise ValueError("the inverse-consistency term needs both directions (set bidirectional: true or lambda_inverse: 0)")
        terms["inverse"] = inverse_consistency(flow_ab, flow_ba, sampling=sampling)
        total = total + lambda_inverse * terms["inverse"]
    if lambda_jacobian > 0:
        terms["neg_jacobian"] = sum(negative_jacobian(f) for f in (flow_ab, flow_ba) if f is not None)
        total = total + lambda_jacobian * terms["neg_jacobian"]
    return terms, total
