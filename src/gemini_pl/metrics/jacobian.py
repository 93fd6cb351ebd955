"""Jacobian-determinant metrics of a displacement field: det(I + ∇φ), folding %, SDlogJ (docs/METHOD.md §6).

Derivatives are central differences in the interior and one-sided at the borders
(``torch.gradient``, the same scheme as ``numpy.gradient``), in voxel units. Everything runs in
float32 with autocast disabled.
"""

from __future__ import annotations

import torch


def jacobian_determinant(flow: torch.Tensor) -> torch.Tensor:
    """det(I + ∇φ) per voxel. ``flow`` (N, ndim, *S) → (N, *S), float32.

    J[i][j] = δ_ij + ∂φ_i/∂x_j where channel i of φ displaces along spatial axis i.
    """
    ndim = flow.shape[1]
    if ndim not in (2, 3) or flow.dim() != ndim + 2:
        raise ValueError(f"flow must be (N, ndim, *S) with ndim 2 or 3, got {tuple(flow.shape)}")
    with torch.autocast(device_type=flow.device.type, enabled=False):
        f = flow.float()
        # grads[j] = ∂φ/∂x_j, shape (N, ndim, *S): entry [:, i] is ∂φ_i/∂x_j
        grads = torch.gradient(f, dim=tuple(range(2, 2 + ndim)))
        J = [[grads[j][:, i] + (1.0 if i == j else 0.0) for j in range(ndim)] for i in range(ndim)]
        if ndim == 2:
            return J[0][0] * J[1][1] - J[0][1] * J[1][0]
        return (
            J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1])
            - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
            + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0])
        )


def folding_percent(flow: torch.Tensor) -> torch.Tensor:
    """Percentage of voxels with det(I + ∇φ) ≤ 0, per case: (N, ndim, *S) → (N,)."""
    det = jacobian_determinant(flow)
    return 100.0 * (det <= 0).flatten(1).float().mean(dim=1)


def sdlogj(flow: torch.Tensor, clip: float = 1e-9) -> torch.Tensor:
    """Standard deviation of log det(I + ∇φ), determinants clipped to [clip, 1/clip], per case: (N,)."""
    det = jacobian_determinant(flow).flatten(1)
    return torch.log(det.clamp(clip, 1.0 / clip)).std(dim=1)
