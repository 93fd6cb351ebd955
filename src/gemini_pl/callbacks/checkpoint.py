"""Checkpoint callbacks."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Always keeps ``<dirpath>/last.ckpt`` up to date (what ``--ckpt_path last`` resumes from).

    Lightning's ``save_last`` only refreshes ``last.ckpt`` when a monitored top-k checkpoint is
    written too; this callback writes it at every epoch end (or every ``every_n_train_steps``
    optimiser steps), whatever the metrics do. Combine it with a monitored ``ModelCheckpoint``
    for the best model.

    Args:
        dirpath: folder of ``last.ckpt``.
        every_n_train_steps: also save every this many optimiser steps (0: only at epoch ends).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0, **kwargs: Any):
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_train_steps=every_n_train_steps or None,
            **kwargs,
        )
