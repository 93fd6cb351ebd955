"""Smoothness prior of the deformation field (docs/METHOD.md §3)."""

from __future__ import annotations

import torch


def smoothness(flow: torch.Tensor) -> torch.Tensor:
    """``S(φ) = (1/n) Σ_axes mean((forward difference of φ along the axis)²)`` (a scalar).

    ``flow`` (N, ndim, *S); n = ndim. Computed in float32.
    """
    ndim = flow.dim() - 2
    f = flow.float()
    total = f.new_zeros(())
    for axis in range(2, 2 + ndim):
        total = total + torch.diff(f, dim=axis).pow(2).mean()
    return total / ndim
