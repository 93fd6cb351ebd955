"""DataAug (Zhao et al., CVPR 2019): data augmentation using learned transformations.

Two transform models learned from the labeled atlas and unlabeled images, then used to synthesise
labeled training pairs for the segmenter:

* **spatial model**: registration of the atlas ``x_a`` onto an unlabeled image and back (one
  :meth:`~.lrls.RegSegBase.register_both` pass; masked LNCC + smoothness each way);
* **appearance model** A (a separate U-Net, 2 inputs → 1 output): in the atlas frame, the additive
  intensity change ψ = A(x_a, x̃) that turns the atlas into an unlabeled image ``x̃`` brought back
  onto the atlas by the inverse spatial model (without gradient): :func:`appearance_terms`,
  ``mean((x_a + ψ − x̃)²) + λ_app·S(ψ)`` (S: the mean squared forward difference);
* **synthesis** (:func:`synthesise`): a spatial target and an appearance target drawn
  independently (the two unlabeled images of the iteration), ``x = (x_a + ψ_appearance) ∘
  φ_spatial``, ``y = y_a ∘ φ_spatial`` (nearest neighbours);
* the **segmenter** learns from the synthesised pair and the atlas (the shared CE/BCE + Dice).

Schedule: each iteration steps the transform models (``reg``) and then the segmenter (``seg``) on a
pair synthesised by them (detached); DataAug trains the transform models first and the segmenter
afterwards on a fixed set of synthesised examples.

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer as the spatial model
and the GEMINI U-Net (2 input channels) as the appearance model instead of DataAug's VoxelMorph-style
U-Nets; masked LNCC for the spatial model; λ_app = 1 and a plain (not boundary-aware) smoothness
of ψ; the transform models and the segmenter trained in one run, alternating.
"""

from __future__ import annotations

from typing import Any

import torch

from ...losses import smoothness
from ...nets import GeminiNet
from ...spatial import warp
from .lrls import RegSegBase

__all__ = ["DataAug", "appearance_terms", "synthesise"]


def appearance_terms(atlas: torch.Tensor, psi: torch.Tensor, target_in_atlas: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"app_mse": mean((x_a + ψ − x̃)²), "app_smooth": S(ψ)}``; all (N, C, *S)."""
    return {"app_mse": (atlas.float() + psi.float() - target_in_atlas.float()).pow(2).mean(),
            "app_smooth": smoothness(psi)}


def synthesise(atlas: torch.Tensor, label: torch.Tensor, psi: torch.Tensor, flow: torch.Tensor,
               sampling: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """A synthesised pair: ``((x_a + ψ) ∘ φ, y_a ∘ φ)``; the label warped by nearest neighbours in its
    own dtype (class indices (N, 1, *S) or masks (N, K, *S))."""
    image = warp(atlas + psi, flow, sampling=sampling)
    return image, warp(label, flow, mode="nearest", sampling=sampling)


class DataAug(RegSegBase):
    """Learned spatial and appearance transforms synthesising the segmenter's training pairs.

    Args (beyond :class:`~.lrls.RegSegBase`): ``lambda_app`` the weight of the smoothness of ψ.
    """

    def __init__(self, *args: Any, lambda_app: float = 1.0, lambda_smooth: float = 0.4, **kwargs: Any):
        super().__init__(*args, lambda_smooth=lambda_smooth, **kwargs)
        hp = self.hparams
        self.app_net = GeminiNet(hp.spatial_dims, 2 * hp.in_channels, hp.in_channels, hp.widths)
        self.app_net.deformer = None

    def reg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        atlas, u_sp, u_app = batch["image"], batch["image_a"], batch["image_b"]
        n = atlas.shape[0]
        atlas2 = torch.cat([atlas, atlas], 0)
        targets = torch.cat([u_sp, u_app], 0)
        to_u, to_atlas = self.register_both(atlas2, targets)   # atlas → u, u → atlas, for both unlabeled images
        fwd, back = self.reg_terms(atlas2, targets, to_u), self.reg_terms(targets, atlas2, to_atlas)
        with torch.no_grad():  # the appearance target brought onto the atlas by the inverse spatial model
            u_in_atlas = warp(u_app, to_atlas[n:].detach(), sampling=hp.sampling)
        psi = self.app_net(torch.cat([atlas, u_in_atlas], 1))
        app = appearance_terms(atlas, psi, u_in_atlas)
        ncc, smooth = fwd["ncc"] + back["ncc"], fwd["smooth"] + back["smooth"]
        total = ncc + hp.lambda_smooth * smooth + app["app_mse"] + hp.lambda_app * app["app_smooth"]
        batch["cache"].update(flow=to_u[:n].detach(), psi=psi.detach())
        return {"total": total, "ncc": ncc, "smooth": smooth, **app}

    def seg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        atlas, label = batch["image"], batch["label"]
        image, lab = synthesise(atlas, label, batch["cache"]["psi"], batch["cache"]["flow"], self.hparams.sampling)
        sup = self.seg_loss(self.net(atlas), label)
        syn = self.seg_loss(self.net(image), lab)
        return {"total": sup + syn, "sup": sup, "synth": syn}
