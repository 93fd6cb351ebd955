"""Table IV ablation: GEMINI-Semi with the GSS positive-pair term switched on part-way.

``pos_start_fraction`` f: ``weights.pos`` is 0 before ``f·max_epochs`` epochs and ``lambda_pos``
from then on (f = 0: always on, the published model; f = 0.5: "on from half way"; f ≥ 1: off for
the whole run, same as ``lambda_pos: 0``).
"""

from __future__ import annotations

from typing import Any

from ..semi import GeminiSemi

__all__ = ["GeminiSemiPosSchedule"]


class GeminiSemiPosSchedule(GeminiSemi):
    def __init__(self, *args: Any, pos_start_fraction: float = 0.5, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def pos_weight_at(self, epoch: int, max_epochs: int) -> float:
        start = self.hparams.pos_start_fraction * max(max_epochs, 1)
        return float(self.hparams.lambda_pos) if epoch >= start else 0.0

    def on_train_epoch_start(self) -> None:
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        self.weights.pos = self.pos_weight_at(int(self.current_epoch), int(max_epochs))
        self.log("train/lambda_pos", self.weights.pos, on_step=False, on_epoch=True)
