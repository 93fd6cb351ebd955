"""The registration loss shared by GEMINI's GVS term, ``Registration`` and the registration baselines.

For one direction (``moving`` warped onto ``fixed`` by φ, docs/METHOD.md §3):

* ``ncc`` = ``NCC_M(warp(moving, φ), fixed, M_φ)``, the masked local NCC with the validity mask
  ``M_φ = sg(warp(1, φ, nearest))`` (voxels that sample outside the image do not count);
* ``smooth`` = ``S(φ)``, the mean squared forward difference of φ (published), or its bending
  energy with ``smoother="bending"``.

Images (N, C, *S), flows (N, ndim, *S). ``eps_per_voxel=False`` is the published 2D denominator
(ΣM + 1e-5 instead of Σ(M + 1e-6)).
"""

from __future__ import annotations

import torch

from ..spatial import validity_mask, warp
from .regularisation import regulariser
from .similarity import masked_lncc

__all__ = ["registration_terms", "warped_ncc"]


def warped_ncc(
    moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, window: int = 9,
    sampling: str = "exact", eps_per_voxel: bool = True,
) -> torch.Tensor:
    """``NCC_M(warp(moving, φ), fixed, M)``: 1 − masked mean local NCC (a scalar)."""
    kw: dict = {"window": window, "eps_per_voxel": eps_per_voxel}
    if not eps_per_voxel:
        kw["eps"] = 1e-5
    return masked_lncc(warp(moving, flow, sampling=sampling), fixed, mask, **kw)


def registration_terms(
    moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor, window: int = 9, sampling: str = "exact",
    eps_per_voxel: bool = True, smoother: str = "gradient",
) -> dict[str, torch.Tensor]:
    """``{"ncc", "smooth"}`` of one registration direction (the validity mask is computed here)."""
    mask = validity_mask(flow, sampling=sampling)
    return {
        "ncc": warped_ncc(moving, fixed, flow, mask, window, sampling, eps_per_voxel),
        "smooth": regulariser(flow, smoother),
    }
