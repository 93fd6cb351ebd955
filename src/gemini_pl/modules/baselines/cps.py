"""CPS (Chen et al., CVPR 2021): cross pseudo supervision between two segmentation networks.

Two networks of the same architecture, initialised differently, each trained with the supervised
loss on the labeled sample and with the cross-entropy against the other's hard pseudo-labels
(argmax, or > 0.5 for multi-label) on the unlabeled images (and the labeled one). Evaluation uses
the first network (``self.net``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...nets import GeminiNet
from .common import SemiSegmentation

__all__ = ["CPS", "cps_loss"]


def _pseudo_ce(logits: torch.Tensor, other: torch.Tensor, label_kind: str) -> torch.Tensor:
    other = other.detach()
    if label_kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), (other > 0).float())
    return F.cross_entropy(logits.float(), other.argmax(1))


def cps_loss(logits_1: torch.Tensor, logits_2: torch.Tensor, label_kind: str = "multiclass") -> torch.Tensor:
    """``CE(l1, argmax l2) + CE(l2, argmax l1)`` (pseudo-labels without gradient)."""
    return _pseudo_ce(logits_1, logits_2, label_kind) + _pseudo_ce(logits_2, logits_1, label_kind)


class CPS(SemiSegmentation):
    """Cross pseudo supervision. ``lambda_unsup`` is the CPS weight (1.5 in the CPS paper)."""

    def __init__(self, *args: Any, lambda_unsup: float = 1.5, **kwargs: Any):
        super().__init__(*args, lambda_unsup=lambda_unsup, **kwargs)
        hp = self.hparams
        self.net2 = GeminiNet(hp.spatial_dims, hp.in_channels, hp.num_classes, hp.widths)
        self.net2.deformer = None

    def semi_losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Both networks on the labeled sample (supervised loss, and CPS on its logits) and on the
        unlabeled images (CPS)."""
        image, label = batch["image"], batch["label"]
        lab1, lab2 = self.net(image), self.net2(image)
        s1, s2 = self.seg_loss(lab1, label), self.seg_loss(lab2, label)
        unlabeled = torch.cat([batch["image_a"], batch["image_b"]], 0)
        l1, l2 = self.net(unlabeled), self.net2(unlabeled)
        unsup = cps_loss(l1, l2, self.label_kind) + cps_loss(lab1, lab2, self.label_kind)
        return {"total": s1 + s2, "net1": s1, "net2": s2}, {"total": unsup}
