"""Stationary velocity fields: integration by scaling and squaring (an extension beyond the paper).

The deformer's output can be read as a stationary velocity field v instead of a displacement; the
displacement of its time-1 flow, φ = exp(v), is then a diffeomorphism in the continuous limit, so
folding (det J ≤ 0) nearly vanishes, at the price of a slightly less flexible field.

Scaling and squaring: φ₀ = v / 2^N, then N times φ ← φ + φ∘(id + φ), i.e. with the backward-warp
convention of :func:`~gemini_pl.spatial.warp` (``warp(x, φ)(p) = x(p + φ(p))``)
``φ ← φ + warp(φ, φ)`` (:func:`~gemini_pl.spatial.compose`). Displacements are in voxel units, channel i along spatial axis i.
"""

from __future__ import annotations

import torch

from .compose import compose

__all__ = ["integrate_velocity"]


def integrate_velocity(velocity: torch.Tensor, steps: int = 7, sampling: str = "exact") -> torch.Tensor:
    """Displacement φ = exp(v) of a stationary velocity field by scaling and squaring.

    Args:
        velocity: (N, ndim, *S) velocity in voxel units.
        steps: number of squarings N (0 returns ``velocity`` unchanged, i.e. a displacement).
        sampling: ``"exact"`` or ``"legacy"`` (see :func:`~gemini_pl.spatial.warp`).

    Returns the displacement (N, ndim, *S) in float32, differentiable with respect to ``velocity``.
    Outside the field of view the field is taken as zero (the warp's zero padding).
    """
    if steps < 0:
        raise ValueError(f"integration steps must be >= 0, got {steps}")
    if steps == 0:
        return velocity
    with torch.autocast(device_type=velocity.device.type, enabled=False):
        flow = velocity.float() / (2**steps)
        for _ in range(steps):
            flow = compose(flow, flow, sampling=sampling)
    return flow
