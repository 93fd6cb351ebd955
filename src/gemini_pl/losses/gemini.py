"""The GEMINI objective on one unlabeled pair: DHL (GVS + smoothness) and GSS (docs/METHOD.md §3).

Beyond the paper (all off by default, i.e. published): bending energy instead of the gradient
smoothness (``smoother``), and the topology terms of :mod:`gemini_pl.losses.topology`
(inverse consistency, negative Jacobian determinants) weighted by ``GeminiWeights.inverse`` and
``GeminiWeights.jacobian``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spatial import validity_mask, warp
from .regularisation import regulariser
from .registration import warped_ncc
from .similarity import masked_cosine
from .topology import topology_terms


@dataclass
class GeminiWeights:
    """Loss weights: ``L = smooth·L_smo + gss·L_GSS + gvs·L_GVS`` with ``L_GSS = pos·pos-term + align-term``,
    plus ``inverse``·inverse consistency + ``jacobian``·negative-Jacobian penalty (0: off, published)."""

    smooth: float = 0.4
    gss: float = 0.8
    gvs: float = 1.0
    pos: float = 0.1
    inverse: float = 0.0
    jacobian: float = 0.0


def gss_terms(
    f_a: torch.Tensor, f_b: torch.Tensor, flow_ab: torch.Tensor, flow_ba: torch.Tensor,
    mask_ab: torch.Tensor, mask_ba: torch.Tensor, sampling: str = "exact",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two GSS terms summed over both directions: (positive-pair term, alignment term).

    - positive pairs ``cos_M(warp(f_A, sg φ_AB), f_B, M_AB)``: gradient reaches the backbone only;
    - alignment ``cos_M(warp(sg f_A, φ_AB), sg f_B, M_AB)``: gradient reaches the deformer (and the
      backbone through the deformer's inputs, which are not detached).
    Features (N, C, *S), flows (N, ndim, *S), masks (N, 1, *S).
    """
    pos = masked_cosine(warp(f_a, flow_ab.detach(), sampling=sampling), f_b, mask_ab) + masked_cosine(
        warp(f_b, flow_ba.detach(), sampling=sampling), f_a, mask_ba
    )
    align = masked_cosine(warp(f_a.detach(), flow_ab, sampling=sampling), f_b.detach(), mask_ab) + masked_cosine(
        warp(f_b.detach(), flow_ba, sampling=sampling), f_a.detach(), mask_ba
    )
    return pos, align


def gvs_term(
    x_a: torch.Tensor, x_b: torch.Tensor, flow_ab: torch.Tensor, flow_ba: torch.Tensor,
    mask_ab: torch.Tensor, mask_ba: torch.Tensor, window: int = 9, sampling: str = "exact",
    eps_per_voxel: bool = True,
) -> torch.Tensor:
    """``NCC_M(warp(x_A, φ_AB), x_B, M_AB) + NCC_M(warp(x_B, φ_BA), x_A, M_BA)``; images (N, C, *S)."""
    return warped_ncc(x_a, x_b, flow_ab, mask_ab, window, sampling, eps_per_voxel) + warped_ncc(
        x_b, x_a, flow_ba, mask_ba, window, sampling, eps_per_voxel
    )


def gemini_loss(
    x_a: torch.Tensor, x_b: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor,
    flow_ab: torch.Tensor, flow_ba: torch.Tensor, weights: GeminiWeights | None = None,
    window: int = 9, sampling: str = "exact", eps_per_voxel: bool = True, smoother: str = "gradient",
) -> dict[str, torch.Tensor]:
    """All GEMINI terms for a pair; returns ``{"smooth", "gvs", "gss_pos", "gss_align", "gss", "total"}``,
    plus ``"inverse"`` / ``"neg_jacobian"`` when their weights are > 0.

    ``x_*`` images (N, C, *S); ``f_*`` backbone features (N, F, *S); ``flow_ab = D([f_A, f_B])``
    warps A onto B, ``flow_ba`` the reverse (N, ndim, *S), displacements. ``smoother``:
    ``"gradient"`` (published) or ``"bending"``; its value is the ``"smooth"`` term either way.
    """
    w = weights or GeminiWeights()
    mask_ab = validity_mask(flow_ab, sampling)
    mask_ba = validity_mask(flow_ba, sampling)
    smo = regulariser(flow_ab, smoother) + regulariser(flow_ba, smoother)
    gvs = gvs_term(x_a, x_b, flow_ab, flow_ba, mask_ab, mask_ba, window, sampling, eps_per_voxel)
    pos, align = gss_terms(f_a, f_b, flow_ab, flow_ba, mask_ab, mask_ba, sampling)
    gss = w.pos * pos + align
    total = w.smooth * smo + w.gss * gss + w.gvs * gvs
    extra, extra_total = topology_terms(flow_ab, flow_ba, w.inverse, w.jacobian, sampling)
    if extra:
        total = total + extra_total
    return {"smooth": smo, "gvs": gvs, "gss_pos": pos, "gss_align": align, "gss": gss, **extra, "total": total}
