"""MASSL (Chen et al., MICCAI 2019): multi-task attention-based semi-supervised segmentation.

As the paper and its official code (ShuaiChenBIGR/MASSL-segmentation-framework,
``Network_training_SSL_epoch_attention_BraTS18.py``, ``network/ssl_3d_attention.py``):

* one shared encoder with two decoders: a **segmentation** branch (probabilities P) and a
  **reconstruction** branch with one output channel per region;
* **attention**: the segmentation prediction splits the image into the regions it predicts, and the
  reconstruction branch reconstructs each region separately: channel c is trained towards
  ``A_c ⊙ x`` (the official code: background ``(1 − P)·x`` and foreground ``P·x``), by MSE, the
  regions weighted by their predicted share of the image ``w_c = Σ A_c / Σ_c Σ A_c``
  (``loss_weighted``; the weights are not detached, as in the code);
* **alternating training**: a step on the labeled images with the segmentation loss (the
  reconstruction weights are 0 there), then a step on the unlabeled images with the attention
  reconstruction loss, during which the segmentation decoder is frozen (``trainU_decoder_seg:
  False``) while the encoder learns from both; the prediction P still carries the encoder's
  gradient.

Regions here (generalising foreground / background to the data's classes): multiclass — the K
softmax probabilities (background included, so the regions sum to the image); multilabel — the K
sigmoid channels and the background ``Π_c (1 − P_c)``.

Simplified here (footnote of the Table II row): the GEMINI U-Net as the shared part and its
segmentation head as the segmentation branch, the reconstruction branch a second head of the same
form on the same features (MASSL: two full decoders on a shared encoder); the frozen
"segmentation decoder" of the unlabeled step is the segmentation head; one Adam for both steps
(MASSL: two, learning rates 1e-2 / 1e-3 with step decay); the supervised loss is the shared CE +
Dice (MASSL: Dice).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from ...nets.head import make_head
from ..core import Losses
from .common import SemiSegmentation, probabilities

__all__ = ["MASSL", "attention_regions", "attention_reconstruction_loss"]


def attention_regions(prob: torch.Tensor, label_kind: str) -> torch.Tensor:
    """The regions A (N, R, *S) of a prediction (N, K, *S): the K softmax probabilities
    (multiclass, R = K), or the K sigmoid channels and the background ``Π_c (1 − P_c)``
    (multilabel, R = K + 1)."""
    if label_kind == "multilabel":
        return torch.cat([prob, torch.prod(1 - prob, dim=1, keepdim=True)], 1)
    return prob


def attention_reconstruction_loss(recon: torch.Tensor, image: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``Σ_c w_c · mean((R_c − A_c·x)²)`` with ``w_c = Σ A_c / Σ A``: recon (N, R, *S), image
    (N, 1, *S), regions A (N, R, *S)."""
    target = regions * image
    mse = ((recon.float() - target.float()) ** 2).flatten(2).mean(-1).mean(0)   # (R,) one MSE per channel
    share = regions.float().sum(dim=[d for d in range(regions.dim()) if d != 1])
    w = share / share.sum().clamp(min=1e-12)
    return (w * mse).sum()


class MASSL(SemiSegmentation):
    """Multi-task attention-based semi-supervised segmentation (alternating steps, see the module doc).

    Args (beyond :class:`~.common.SemiSegmentation`):
        lambda_rec: weight of the attention reconstruction loss (its own optimiser step).
    """

    def __init__(self, *args: Any, lambda_seg: float = 1.0, lambda_rec: float = 1.0, **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, **kwargs)
        self.rec_head = self._make_rec_head()

    def _make_rec_head(self) -> torch.nn.Module:
        hp = self.hparams
        regions = hp.num_classes + (1 if self.label_kind == "multilabel" else 0)
        return make_head(hp.spatial_dims, self.net.backbone.out_channels, regions)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # label_kind "auto" resolves against the data here (before the optimiser is built)
        if self.rec_head[-1].out_channels != self.hparams.num_classes + (self.label_kind == "multilabel"):
            self.rec_head = self._make_rec_head().to(self.device)

    def frozen_seg_head(self, features: torch.Tensor) -> torch.Tensor:
        """The segmentation head on ``features`` with its weights held fixed (gradients reach the features only)."""
        params = {k: v.detach() for k, v in self.net.head.named_parameters()}
        return functional_call(self.net.head, params, (features,))

    def reconstruction_terms(self, unlabeled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attention reconstruction of unlabeled images (N, 1, *S)."""
        f = self.net.features(unlabeled)
        regions = attention_regions(probabilities(self.frozen_seg_head(f), self.label_kind), self.label_kind)
        recon = self.rec_head(f)
        loss = attention_reconstruction_loss(recon, unlabeled, regions)
        return {"total": self.hparams.lambda_rec * loss, "mse": loss.detach()}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        yield "seg", self.supervised_loss(batch["image"], batch["label"])
        unlabeled = torch.cat([batch["image_a"], batch["image_b"]], 0)
        yield "rec", self.reconstruction_terms(unlabeled)

