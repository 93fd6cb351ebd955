"""Shared pieces of the Table II baselines: a semi-supervised segmentation base, the EMA update,
the consistency ramp-up, the run's length, and probabilities that follow the label kind.

:class:`SemiSegmentation` is :class:`~gemini_pl.modules.Segmentation` (same network, head,
augmentation, evaluation) trained on ``data.train_mode: pairs+labeled`` batches
``{"image_a", "image_b", "image", "label"}``: the supervised loss on the labeled sample plus
``unsupervised_loss`` on the unlabeled images (A and B of the pair), which each baseline defines;
one optimiser step on ``sup + w·unsup``, logged as ``train/semi/{total,sup_*,unsup_*,unsup_weight}``.

Weights: each baseline keeps its own paper's supervised weight (``lambda_seg``, applied to the
shared ``CE + Dice`` loss, docs/METHOD.md §3) and unsupervised weight (``lambda_unsup``), so the
ratio of the two is the paper's; GEMINI's ×100 (``lambda_seg: 100``) is GEMINI's own and not used
here. With Adam a common factor on the whole loss does not change the updates, so the papers'
numbers can be used as they stand.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..batches import require_batch_keys
from ..core import Losses
from ..segment import Segmentation

__all__ = ["SemiSegmentation", "ema_update", "probabilities", "run_steps", "sigmoid_rampup"]


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


def run_steps(module: Any) -> int:
    """Optimiser steps of the module's whole run (``trainer.estimated_stepping_batches``: max_epochs ×
    batches, or max_steps); 0 without a trainer or for an unbounded run."""
    trainer = getattr(module, "_trainer", None)
    total = getattr(trainer, "estimated_stepping_batches", 0) if trainer is not None else 0
    return int(total) if total and math.isfinite(total) else 0


def probabilities(logits: torch.Tensor, label_kind: str) -> torch.Tensor:
    """softmax over channels (multiclass) or sigmoid per channel (multilabel)."""
    return torch.sigmoid(logits.float()) if label_kind == "multilabel" else torch.softmax(logits.float(), 1)


class SemiSegmentation(Segmentation):
    """Segmentation + an unsupervised loss on unlabeled images (a base for UA-MT, CPS, ...).

    Args (beyond :class:`~gemini_pl.modules.Segmentation`):
        lambda_unsup: weight of the unsupervised loss at the end of the ramp-up.
        rampup_steps: sigmoid ramp-up length in optimiser steps (0: no ramp-up; ``None``: the whole
            run, :func:`run_steps`).
    """

    def __init__(self, *args: Any, lambda_unsup: float = 1.0, rampup_steps: int | None = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def rampup_length(self) -> int:
        """The ramp-up length in optimiser steps (``rampup_steps``, or the run's length for ``None``)."""
        steps = self.hparams.rampup_steps
        return run_steps(self) if steps is None else int(steps)

    def rampup(self) -> float:
        """The sigmoid ramp-up factor at the current step, in [exp(−5), 1]."""
        return sigmoid_rampup(int(self.global_step), self.rampup_length())

    def unsup_weight(self) -> float:
        return self.hparams.lambda_unsup * self.rampup()

    def unsupervised_loss(self, unlabeled: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss terms on the unlabeled images (N, C, *S); ``"total"`` is weighted by ``unsup_weight``."""
        raise NotImplementedError

    def supervised_loss(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": self.seg_loss(self.net(image), label)}

    def semi_losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(supervised terms, unsupervised terms) of a prepared batch; a method whose two parts
        share computations (CPS) overrides this."""
        sup = self.supervised_loss(batch["image"], batch["label"])
        unlabeled = torch.cat([batch["image_a"], batch["image_b"]], 0)
        return sup, self.unsupervised_loss(unlabeled, batch)

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One random affine for the labeled image and its label (the unlabeled images as they are)."""
        require_batch_keys(batch, ("image_a", "image_b", "image", "label"), type(self).__name__, "pairs+labeled")
        return self.augment(batch, [("image", "label")])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        sup, unsup = self.semi_losses(batch)
        w = self.unsup_weight()
        terms = {"total": sup["total"] + w * unsup["total"], "unsup_weight": float(w)}
        terms.update({f"sup_{k}": v for k, v in sup.items()})
        terms.update({f"unsup_{k}": v for k, v in unsup.items()})
        yield "semi", terms
