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
    """True on the iterations where the loggers write (and without a trainer).

    Follows the trainer's own decision (``log_every_n_steps`` counted over the batches stepped
    since the start of training, across epochs, and the last step of a stopping run), so that the
    progress-bar value and the guard's check land on the logged steps whatever the epoch length.
    ``batch_idx`` (the index within the epoch) is used only outside a running fit.
    """
    if trainer is None:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None and getattr(trainer, "_active_loop", None) is not None:
        try:
            return bool(connector.should_update_logs)
        except (AttributeError, NotImplementedError):
            pass
    every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 1))
    return (batch_idx + 1) % every == 0
