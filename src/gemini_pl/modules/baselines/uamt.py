"""UA-MT (Yu et al., MICCAI 2019): uncertainty-aware mean teacher.

The student is the shared segmentation network; the teacher is its exponential moving average
(:func:`~.common.ema_update` after every optimiser step). On unlabeled images the teacher runs
``T`` times on noisy inputs; the mean prediction's entropy is the uncertainty, and the consistency
(squared difference of student and teacher probabilities) counts only where the uncertainty is
below a threshold rising from 0.75·H_max to H_max over the ramp-up.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from .common import SemiSegmentation, ema_update, probabilities, sigmoid_rampup

__all__ = ["UAMT", "uncertainty_masked_mse", "predictive_entropy"]


def predictive_entropy(prob: torch.Tensor, label_kind: str) -> torch.Tensor:
    """Entropy (nats) of a mean prediction (N, K, *S) → (N, 1, *S); multilabel: summed binary entropies."""
    eps = 1e-6
    if label_kind == "multilabel":
        h = -(prob * torch.log(prob + eps) + (1 - prob) * torch.log(1 - prob + eps))
        return h.sum(1, keepdim=True)
    return -(prob * torch.log(prob + eps)).sum(1, keepdim=True)


def uncertainty_masked_mse(p_student: torch.Tensor, p_teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ mask·(p_s − p_t)² / (K·Σ mask + 1e-16)``: the mean squared difference over the certain voxels."""
    k = p_student.shape[1]
    return (mask * (p_student - p_teacher) ** 2).sum() / (k * mask.expand_as(p_student[:, :1]).sum() + 1e-16)


class UAMT(SemiSegmentation):
    """Uncertainty-aware mean teacher on the shared backbone + head.

    Args (beyond :class:`~.common.SemiSegmentation`; ``lambda_unsup`` defaults to 0.1 and
    ``rampup_steps`` to 4000 as in the UA-MT code, scale them with the step budget):
        ema_decay: teacher EMA decay α.
        uncertainty_passes: T noisy teacher passes.
        noise_std: std of the Gaussian input noise (clipped at ±2·std).
    """

    def __init__(self, *args: Any, ema_decay: float = 0.99, uncertainty_passes: int = 8, noise_std: float = 0.1,
                 lambda_unsup: float = 0.1, rampup_steps: int = 4000, **kwargs: Any):
        super().__init__(*args, lambda_unsup=lambda_unsup, rampup_steps=rampup_steps, **kwargs)
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        s = self.hparams.noise_std
        noise = torch.randn(x.shape, generator=self.aug_generator).to(x) * s
        return x + noise.clamp(-2 * s, 2 * s)

    def unsupervised_loss(self, unlabeled: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        kind = self.label_kind
        p_s = probabilities(self.net(self._noisy(unlabeled)), kind)
        with torch.no_grad():
            p_t = probabilities(self.teacher(self._noisy(unlabeled)), kind)
            passes = torch.stack([probabilities(self.teacher(self._noisy(unlabeled)), kind)
                                  for _ in range(self.hparams.uncertainty_passes)])
            h = predictive_entropy(passes.mean(0), kind)
            k = p_s.shape[1]
            h_max = k * math.log(2) if kind == "multilabel" else math.log(k)
            ramp = sigmoid_rampup(int(self.global_step), self.hparams.rampup_steps)
            mask = (h < (0.75 + 0.25 * ramp) * h_max).float()
        loss = uncertainty_masked_mse(p_s, p_t, mask)
        return {"total": loss, "certain_fraction": mask.mean()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        ema_update(self.teacher, self.net, self.hparams.ema_decay, step=int(self.global_step))
