"""Keep one W&B run across crashes: the run id travels in the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from ..safe_load import safe_torch_load


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class WandbResume(L.Callback):
    """Stores each W&B logger's run id in the checkpoint; :func:`continue_wandb_run` (called by the
    ``gemini-pl`` CLI before ``fit``) reads it back so that a resumed run continues the same W&B
    run, online or offline, instead of starting a new one. Does nothing without a
    :class:`~lightning.pytorch.loggers.WandbLogger`."""

    @property
    def state_key(self) -> str:  # type: ignore[override]
        return "WandbResume"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        ids = [lg.version for lg in _wandb_loggers(trainer)]
        if any(ids):
            checkpoint["wandb_run_ids"] = ids



def resolve_ckpt_path(trainer: L.Trainer, ckpt_path: str | None) -> Path | None:
    """The file that ``trainer.fit(ckpt_path=...)`` will resume from ("last" resolved as Lightning does)."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        found = set()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                found |= cb._find_last_checkpoints(trainer)
        existing = [Path(p) for p in found if Path(p).is_file()]
        return max(existing, key=lambda p: p.stat().st_mtime) if existing else None
    path = Path(ckpt_path)
    return path if path.is_file() else None


def continue_wandb_run(trainer: L.Trainer, ckpt_path: str | None) -> str | None:
    """Before ``fit`` resumes from ``ckpt_path``: make the W&B loggers continue the checkpoint's runs.

    Must run before the trainer creates the W&B run (Lightning does so at the start of ``fit``).
    Returns the first run id set, or None.
    """
    path = resolve_ckpt_path(trainer, ckpt_path)
    loggers = _wandb_loggers(trainer)
    if path is None or not loggers:
        return None
    ids = safe_torch_load(path, mmap=True).get("wandb_run_ids", [])
    first = None
    for logger, run_id in zip(loggers, ids):
        if run_id and logger._experiment is None:
            logger._id = run_id
            logger._wandb_init["id"] = run_id
            logger._wandb_init["resume"] = "allow"
            first = first or run_id
    return first
