"""Count the FLOPs of one real training step: :class:`StepFlops`, a Lightning callback.

``torch.utils.flop_counter.FlopCounterMode`` is open from ``on_train_batch_start`` to
``on_train_batch_end`` of the first training batch, so everything that step runs — the forward
passes of every network the method uses, the backward passes and the optimizer step — is counted,
at the run's own image size, batch size and widths (Table IX reports pre-training FLOPs per step).
Convolutions, matrix products and the other operations FlopCounterMode knows are counted; the rest
(element-wise work, normalisation) is not, as in Table IX's convention of counting network FLOPs.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["StepFlops"]


class StepFlops(Callback):
    """``flops``: the FLOPs of training step ``step`` (``None`` until it ran)."""

    def __init__(self, step: int = 0) -> None:
        self.step = step
        self.flops: float | None = None
        self._mode: Any = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.flops is None and self._mode is None and trainer.fit_loop.total_batch_idx == self.step:
            from torch.utils.flop_counter import FlopCounterMode

            self._mode = FlopCounterMode(display=False)
            self._mode.__enter__()

    def _close(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
            self.flops = float(mode.get_total_flops())

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()
