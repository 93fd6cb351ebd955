"""When a training step may read values on the host.

Lightning converts progress-bar values to Python numbers at every ``self.log(..., prog_bar=True)``
call, which waits for the device. The modules therefore put their per-step loss on the progress
bar only every ``trainer.log_every_n_steps`` iterations (when the loggers read their values
anyway) and keep every other step free of host reads.
"""

from __future__ import annotations

import lightning as L

__all__ = ["at_log_step"]


def at_log_step(trainer: L.Trainer | None, batch_idx: int) -> bool:
    """True on every ``trainer.log_every_n_steps``-th iteration of an epoch (and without a trainer)."""
    if trainer is None:
        return True
    every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 1))
    return (batch_idx + 1) % every == 0
