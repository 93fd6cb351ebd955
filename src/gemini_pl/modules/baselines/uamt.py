"""UA-MT (Yu et al., MICCAI 2019): uncertainty-aware mean teacher.

As the official code (yulequan/UA-MT, ``code/train_LA_meanteacher_certainty_unlabel.py``):

* the student is the shared segmentation network; the teacher its exponential moving average
  (α = 0.99 with the warm start ``min(1 − 1/(step + 1), α)``, :func:`~.common.ema_update` after
  every optimiser step);
* on the unlabeled images the **student sees the images as they are** (``outputs =
  model(volume_batch)``) and the **teacher a noisy copy** (``ema_inputs = unlabeled + clamp(N(0,
  0.1²), ±0.2)``); the uncertainty is the entropy of the mean of T = 8 more noisy teacher passes;
* consistency: squared difference of student and teacher probabilities, counted where the
  uncertainty is below ``(0.75 + 0.25·ramp)·H_max``, divided by K·Σmask;
* weights: supervised ``0.5·(CE + Dice)``, consistency ``0.1·ramp`` (``supervised_loss =
  0.5*(loss_seg+loss_seg_dice)``, ``--consistency 0.1``): here ``lambda_seg: 0.5``,
  ``lambda_unsup: 0.1`` on the shared CE + Dice;
* ramp-ups: the consistency weight over 40 "epochs" of 150 iterations (6000) and the threshold over
  ``max_iterations`` (6000): both over the whole run — ``rampup_steps: null`` (the run's length).

Simplified here (footnote of the Table II row): the GEMINI U-Net instead of a V-Net; the
supervised loss is the shared multi-class CE + Dice (UA-MT: binary); one labeled and two unlabeled
images per iteration (UA-MT: 2 + 2); the student's supervised and consistency passes are separate.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from .common import SemiSegmentation, ema_update, probabilities

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

    Args (beyond :class:`~.common.SemiSegmentation`; defaults are UA-MT's, see the module docstring):
        ema_decay: teacher EMA decay α.
        uncertainty_passes: T noisy teacher passes.
        noise_std: std of the Gaussian noise on the teacher's input (clipped at ±2·std).
    """

    def __init__(self, *args: Any, ema_decay: float = 0.99, uncertainty_passes: int = 8, noise_std: float = 0.1,
                 lambda_seg: float = 0.5, lambda_unsup: float = 0.1, rampup_steps: int | None = None, **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, lambda_unsup=lambda_unsup, rampup_steps=rampup_steps, **kwargs)
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        s = self.hparams.noise_std
        noise = torch.randn(x.shape, generator=self.aug_generator).to(x) * s
        return x + noise.clamp(-2 * s, 2 * s)

    def unsupervised_loss(self, unlabeled: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        kind = self.label_kind
        p_s = probabilities(self.net(unlabeled), kind)
        with torch.no_grad():
            p_t = probabilities(self.teacher(self._noisy(unlabeled)), kind)
            passes = torch.stack([probabilities(self.teacher(self._noisy(unlabeled)), kind)
                                  for _ in range(self.hparams.uncertainty_passes)])
            h = predictive_entropy(passes.mean(0), kind)
            k = p_s.shape[1]
            h_max = k * math.log(2) if kind == "multilabel" else math.log(k)
            mask = (h < (0.75 + 0.25 * self.rampup()) * h_max).float()
        loss = uncertainty_masked_mse(p_s, p_t, mask)
        return {"total": loss, "certain_fraction": mask.mean()}

    def on_fit_start(self) -> None:
        super().on_fit_start()  # init_from, when given, has now loaded the student
        if self.transfer_report is not None:
            self.teacher.load_state_dict(self.net.state_dict())  # the teacher starts from the same weights

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        # UA-MT's update_ema_variables(…, iter_num) runs before iter_num counts the step: the first copies
        ema_update(self.teacher, self.net, self.hparams.ema_decay, step=max(int(self.global_step) - 1, 0))
