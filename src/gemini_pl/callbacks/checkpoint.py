"""Checkpoint callbacks."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

_FIXED = ("filename", "monitor", "save_top_k", "save_last", "enable_version_counter", "every_n_train_steps", "save_on_train_epoch_end")


class LastCheckpoint(ModelCheckpoint):
    """Always keeps ``<dirpath>/last.ckpt`` up to date (what ``--ckpt_path last`` resumes from).

    Lightning's ``save_last`` only refreshes ``last.ckpt`` when a monitored top-k checkpoint is
    written too; this callback writes it at every training-epoch end (whether or not validation
    runs) and, with ``every_n_train_steps``, every that many optimiser steps, so that a crash loses
    at most that interval. Combine it with a monitored ``ModelCheckpoint`` for the best model.

    Args:
        dirpath: folder of ``last.ckpt``.
        every_n_train_steps: also save every this many optimiser steps (0: only at epoch ends).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0, **kwargs: Any):
        for key in _FIXED:  # these define the callback; values passed through a config are ignored
            kwargs.pop(key, None)
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
            every_n_train_steps=every_n_train_steps or None,
            **kwargs,
        )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Save ``last.ckpt`` once more when the run ends between two ``every_n_train_steps``
        saves, so that it always holds the last step."""
        super().on_train_end(trainer, pl_module)
        if trainer.fast_dev_run or trainer.sanity_checking or self._last_global_step_saved == trainer.global_step:
            return
        self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
