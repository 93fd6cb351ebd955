"""DeepRS (He et al., ECCV 2020): deep complementary joint model for registration and few-shot
segmentation.

The registration network R maps the labeled atlas ``x_a`` (label ``y_a``) onto an unlabeled image
``x_u`` (φ = R(x_a, x_u), masked LNCC + smoothness); the two models complement each other:

* **perturbation factor → diverse augmentation**: the segmenter learns from the atlas warped by a
  randomly scaled deformation ``α·φ``, α ~ U(0, 1) per iteration (:func:`perturbed_pair`), so the
  augmented data span the whole path from the atlas to the target instead of the registered image
  only;
* **pixel-wise discriminator → alignment confidence**: a small fully convolutional discriminator D
  (:class:`PixelDiscriminator`) scores each voxel of (warped atlas, target) as aligned or not
  (trained with BCE: (x_u, x_u) aligned, (x_a ∘ φ, x_u) not; R is trained to fool it with weight
  ``λ_adv``); its map c = sigmoid(D) weights the **weakly supervised** segmentation of x_u by the
  warped atlas label ``y_a ∘ φ`` (:func:`confidence_weighted_ce`), suppressing misaligned regions;
* **segmentation → region constraint**: R also minimises ``1 − Dice(y_a ∘ φ, S(x_u))`` against the
  segmenter's (detached) prediction of the target (weight ``λ_region``), a label-free region
  constraint for the unlabeled target.

The segmenter: the shared CE/BCE + Dice on the atlas and on the perturbed pair, + the confidence-
weighted CE on the target. Schedule: the discriminator, R and the segmenter are stepped in turn each
iteration (``disc``, ``reg``, ``seg``).

Weights (relative to the LNCC, 1): smoothness 0.4 (the VM row's), ``λ_region = 1``, ``λ_adv = 0.1``;
segmenter: supervised 1, perturbed pair 1, weak 1. They are this implementation's choice: the
published values could not be checked here.

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer and U-Net instead of
DeepRS's networks; the perturbation factor as a random scaling of the displacement; a 3-layer
pixel-wise discriminator; the weights above.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...nets.blocks import conv_nd
from ...spatial import warp
from ..core import Losses
from .lrls import RegSegBase, label_dice_loss

__all__ = ["DeepRS", "PixelDiscriminator", "confidence_weighted_ce", "perturbed_pair"]


class PixelDiscriminator(nn.Module):
    """(warped, target) (N, 2C, *S) → per-voxel alignment logits (N, 1, *S): conv3-LReLU-conv3-LReLU-conv1."""

    def __init__(self, spatial_dims: int, in_channels: int = 2, width: int = 16):
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.body = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                                  conv(width, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), conv(width, 1, 1))

    def forward(self, warped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([warped, target], 1))


def confidence_weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                           label_kind: str = "multiclass") -> torch.Tensor:
    """``Σ_v w_v·ce_v / Σ_v w_v``: the per-voxel CE (multiclass: −Σ_k y_k log p_k, softmax) or the
    channel-mean BCE (multilabel, sigmoid) against target channels (N, K, *S), weighted by the
    confidence map ``weight`` (N, 1, *S)."""
    y = target.float()
    if label_kind == "multilabel":
        ce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").mean(1, keepdim=True)
    else:
        ce = -(y * F.log_softmax(logits.float(), 1)).sum(1, keepdim=True)
    w = weight.float().expand_as(ce)
    return (w * ce).sum() / w.sum().clamp(min=1e-6)


def perturbed_pair(atlas: torch.Tensor, label: torch.Tensor, flow: torch.Tensor, alpha: float,
                   sampling: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_a ∘ αφ, y_a ∘ αφ)``: the atlas and its label (nearest) warped by the scaled field."""
    f = alpha * flow
    return warp(atlas, f, sampling=sampling), warp(label, f, mode="nearest", sampling=sampling)


class DeepRS(RegSegBase):
    """Registration and segmentation complementing each other (see the module docstring).

    Args (beyond :class:`~.lrls.RegSegBase`): ``lambda_region``, ``lambda_adv``, ``lambda_weak``,
    ``lambda_aug`` (weights, see the module docstring), ``disc_width``.
    """

    def __init__(self, *args: Any, lambda_region: float = 1.0, lambda_adv: float = 0.1, lambda_weak: float = 1.0,
                 lambda_aug: float = 1.0, lambda_smooth: float = 0.4, disc_width: int = 16, **kwargs: Any):
        super().__init__(*args, lambda_smooth=lambda_smooth, **kwargs)
        hp = self.hparams
        self.disc = PixelDiscriminator(hp.spatial_dims, 2 * hp.in_channels, disc_width)

    def _disc_frozen(self, warped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """D's logits with gradients to the inputs only (D's own parameters untouched)."""
        params = list(self.disc.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            return self.disc(warped, target)
        finally:
            for p in params:
                p.requires_grad_(True)

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        atlas, target = batch["image"], batch["image_a"]
        with torch.no_grad():
            warped = warp(atlas, self.register(atlas, target), sampling=hp.sampling)
        real, fake = self.disc(target, target), self.disc(warped, target)
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        yield "disc", {"total": d_loss}
        yield "reg", self.reg_losses(batch)
        yield "seg", self.seg_losses(batch)

    def reg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        atlas, target = batch["image"], batch["image_a"]
        flow = self.register(atlas, target)
        t = self.reg_terms(atlas, target, flow)
        warped = warp(atlas, flow, sampling=hp.sampling)
        with torch.no_grad():
            seg_t = self.probs(self.net(target))
        region = label_dice_loss(warp(self.onehot(batch["label"]), flow, sampling=hp.sampling), seg_t, self.label_kind)
        fool = self._disc_frozen(warped, target)
        adv = F.binary_cross_entropy_with_logits(fool, torch.ones_like(fool))
        total = t["ncc"] + hp.lambda_smooth * t["smooth"] + hp.lambda_region * region + hp.lambda_adv * adv
        with torch.no_grad():
            conf = torch.sigmoid(self.disc(warped.detach(), target))
        batch["cache"].update(flow=flow.detach(), confidence=conf)
        return {"total": total, **t, "region": region, "adv": adv}

    def seg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        atlas, label, target = batch["image"], batch["label"], batch["image_a"]
        flow, conf = batch["cache"]["flow"], batch["cache"]["confidence"]
        alpha = float(torch.rand((), generator=self.aug_generator))
        x_aug, y_aug = perturbed_pair(atlas, label, flow, alpha, hp.sampling)
        sup = self.seg_loss(self.net(atlas), label)
        aug = self.seg_loss(self.net(x_aug), y_aug)
        weak_target = warp(self.onehot(label), flow, mode="nearest", sampling=hp.sampling)
        weak = confidence_weighted_ce(self.net(target), weak_target, conf, self.label_kind)
        total = sup + hp.lambda_aug * aug + hp.lambda_weak * weak
        return {"total": total, "sup": sup, "aug": aug, "weak": weak, "alpha": alpha,
                "confidence": conf.mean()}
