"""Shared pieces of the Table II baselines: a semi-supervised segmentation base, the EMA update,
the consistency ramp-up, and probabilities that follow the label kind.

:class:`SemiSegmentation` is :class:`~gemini_pl.modules.Segmentation` (same network, head,
augmentation, evaluation) trained on ``data.train_mode: pairs+labeled`` batches
``{"image_a", "image_b", "image", "label"}``: the supervised loss on the labeled sample plus
``unsupervised_loss`` on the unlabeled images (A and B of the pair), which each baseline defines.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..batches import require_batch_keys
from ..segment import Segmentation
from ..cadence import at_log_step

__all__ = ["SemiSegmentation", "ema_update", "sigmoid_rampup", "probabilities"]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float, step: int | None = None) -> float:
    """Mean-teacher update ``t ← a·t + (1 − a)·s`` for every parameter (buffers are copied).

    With ``step`` the decay is ``min(1 − 1/(step + 1), alpha)`` (the usual warm start: the first
    update copies the student). Returns the decay used.
    """
    a = alpha if step is None else min(1.0 - 1.0 / (step + 1), alpha)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(a).add_(s.detach(), alpha=1.0 - a)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)
    return a


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(−5 (1 − t)²)``, t = step/length clipped to [0, 1] (Laine & Aila); 1 when length ≤ 0."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def probabilities(logits: torch.Tensor, label_kind: str) -> torch.Tensor:
    """softmax over channels (multiclass) or sigmoid per channel (multilabel)."""
    return torch.sigmoid(logits.float()) if label_kind == "multilabel" else torch.softmax(logits.float(), 1)


class SemiSegmentation(Segmentation):
    """Segmentation + an unsupervised loss on unlabeled images (a base for UA-MT, CPS, ...).

    Args (beyond :class:`~gemini_pl.modules.Segmentation`):
        lambda_unsup: weight of the unsupervised loss at the end of the ramp-up.
        rampup_steps: sigmoid ramp-up length in optimiser steps (0: no ramp-up).
    """

    def __init__(self, *args: Any, lambda_unsup: float = 1.0, rampup_steps: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def unsup_weight(self) -> float:
        return self.hparams.lambda_unsup * sigmoid_rampup(int(self.global_step), self.hparams.rampup_steps)

    def unsupervised_loss(self, unlabeled: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss terms on the unlabeled images (N, C, *S); ``"total"`` is weighted by ``unsup_weight``."""
        raise NotImplementedError

    def supervised_loss(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": self.seg_loss(self.net(image), label)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        require_batch_keys(batch, ("image_a", "image_b", "image", "label"), type(self).__name__, "pairs+labeled")
        self._ensure_segmentation()
        image, label = self.augment(batch["image"], batch["label"])
        sup = self.supervised_loss(image, label)
        unlabeled = torch.cat([batch["image_a"], batch["image_b"]], 0)
        unsup = self.unsupervised_loss(unlabeled, batch)
        w = self.unsup_weight()
        loss = sup["total"] + w * unsup["total"]
        n = image.shape[0]
        logs = {f"train/sup_{k}": v.detach() for k, v in sup.items()}
        logs.update({f"train/unsup_{k}": v.detach() for k, v in unsup.items()})
        logs["train/unsup_weight"] = float(w)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)
        if at_log_step(self._trainer, batch_idx):  # progress-bar values are read on the host (cadence.py)
            self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=n, logger=False)
        return loss
