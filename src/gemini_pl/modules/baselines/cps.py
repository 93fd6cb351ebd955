"""CPS (Chen et al., CVPR 2021): cross pseudo supervision between two segmentation networks.

As the official code (charlesCXK/TorchSemiSeg, ``exp.voc/voc8.res50v3+.CPS/train.py`` and
``config.py``):

* two networks of the same architecture, initialised differently; each is trained with the
  supervised loss on the labeled images and with the cross-entropy against the other's hard
  pseudo-labels (argmax; > 0.5 for multi-label) on the labeled **and** unlabeled images together —
  one pixel mean over their concatenation (``criterion(pred_l, max_r) + criterion(pred_r, max_l)``
  with ``pred_l = cat([pred_sup_l, pred_unsup_l])``);
* ``loss = loss_sup + loss_sup_r + cps_weight · cps_loss`` with ``cps_weight = 1.5`` and no
  ramp-up: here ``lambda_seg: 1`` (each network's supervised loss weighted 1), ``lambda_unsup:
  1.5``, ``rampup_steps: 0``.

Evaluation uses the first network (``self.net``). Simplified here (footnote of the Table II row):
the GEMINI U-Net instead of DeepLabv3+ / ResNet-50; the supervised loss is the shared CE + Dice
(CPS: CE).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...nets import GeminiNet
from .common import SemiSegmentation

__all__ = ["CPS", "cps_loss", "pixel_rows"]


def _pseudo_ce(logits: torch.Tensor, other: torch.Tensor, label_kind: str) -> torch.Tensor:
    other = other.detach()
    if label_kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), (other > 0).float())
    return F.cross_entropy(logits.float(), other.argmax(1))


def cps_loss(logits_1: torch.Tensor, logits_2: torch.Tensor, label_kind: str = "multiclass") -> torch.Tensor:
    """``CE(l1, argmax l2) + CE(l2, argmax l1)`` (pseudo-labels without gradient); logits (N, K, *S)
    or pixel rows (M, K)."""
    return _pseudo_ce(logits_1, logits_2, label_kind) + _pseudo_ce(logits_2, logits_1, label_kind)


def pixel_rows(*logits: torch.Tensor) -> torch.Tensor:
    """Logits (N, K, *S) of any sizes → one (M, K) table of their pixels (a pixel mean over it is
    the mean over the concatenation)."""
    return torch.cat([t.movedim(1, -1).reshape(-1, t.shape[1]) for t in logits], 0)


class CPS(SemiSegmentation):
    """Cross pseudo supervision (defaults: the CPS paper's weights, see the module docstring)."""

    def __init__(self, *args: Any, lambda_seg: float = 1.0, lambda_unsup: float = 1.5, rampup_steps: int | None = 0,
                 **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, lambda_unsup=lambda_unsup, rampup_steps=rampup_steps, **kwargs)
        hp = self.hparams
        self.net2 = GeminiNet(hp.spatial_dims, hp.in_channels, hp.num_classes, hp.widths)
        self.net2.deformer = None

    def semi_losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Both networks on the labeled sample (supervised loss) and on labeled + unlabeled images
        (CPS, one pixel mean over all of them)."""
        image, label = batch["image"], batch["label"]
        lab1, lab2 = self.net(image), self.net2(image)
        s1, s2 = self.seg_loss(lab1, label), self.seg_loss(lab2, label)
        unlabeled = torch.cat([batch["image_a"], batch["image_b"]], 0)
        l1, l2 = self.net(unlabeled), self.net2(unlabeled)
        unsup = cps_loss(pixel_rows(lab1, l1), pixel_rows(lab2, l2), self.label_kind)
        return {"total": s1 + s2, "net1": s1, "net2": s2}, {"total": unsup}
