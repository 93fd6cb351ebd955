"""Smoothness prior of the deformation field (docs/METHOD.md §3) and its alternative, bending energy.

``SMOOTHERS`` names the choices of the ``smoother`` setting: ``"gradient"`` (published: the mean
squared first difference, :func:`smoothness`) or ``"bending"`` (:func:`bending_energy`, an extension
beyond the paper that leaves affine parts of the field free).
"""

from __future__ import annotations

import torch

SMOOTHERS = ("gradient", "bending")


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


def bending_energy(flow: torch.Tensor) -> torch.Tensor:
    """Bending energy ``mean over N, channels i and interior voxels of Σ_j Σ_k (∂²φ_i/∂x_j∂x_k)²``.

    ``flow`` (N, ndim, *S), every spatial size > 2; compact central second differences in voxel
    units (``[1, −2, 1]`` along an axis, ``(f₊₊ − f₊₋ − f₋₊ + f₋₋)/4`` for a mixed pair, counted
    twice), on the voxels one away from every border — the scheme of MONAI's
    ``BendingEnergyLoss`` (not called here: its list indexing warns on every call). Float32.
    Zero for every affine field; for φ_0 = a·x_0², φ_1 = b·x_0·x_1 (2D) it is ((2a)² + 2b²) / 2.
    """
    ndim = flow.dim() - 2
    if flow.shape[1] != ndim or min(flow.shape[2:]) < 3:
        raise ValueError(f"bending_energy expects a field (N, ndim, *S) with every size > 2, got {tuple(flow.shape)}")
    with torch.autocast(device_type=flow.device.type, enabled=False):
        f = flow.float()

        def part(shifts: dict[int, slice]) -> torch.Tensor:
            return f[(slice(None), slice(None), *(shifts.get(d, slice(1, -1)) for d in range(ndim)))]

        plus, minus, mid = slice(2, None), slice(None, -2), slice(1, -1)
        energy = f.new_zeros(())
        for j in range(ndim):
            d2 = part({j: plus}) - 2 * part({j: mid}) + part({j: minus})
            energy = energy + d2.pow(2).mean()
            for k in range(j + 1, ndim):
                dm = (part({j: plus, k: plus}) - part({j: plus, k: minus}) - part({j: minus, k: plus})
                      + part({j: minus, k: minus})) / 4
                energy = energy + 2 * dm.pow(2).mean()
    return energy


def regulariser(flow: torch.Tensor, smoother: str = "gradient") -> torch.Tensor:
    """The smoothness prior named by ``smoother`` (one of :data:`SMOOTHERS`) of ``flow`` (N, ndim, *S)."""
    if smoother == "gradient":
        return smoothness(flow)
    if smoother == "bending":
        return bending_energy(flow)
    raise ValueError(f"smoother must be one of {SMOOTHERS}, got {smoother!r}")
