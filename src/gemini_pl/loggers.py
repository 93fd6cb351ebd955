"""Experiment loggers: Weights & Biases that works offline by default, with no account needed."""

from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_should_be_offline() -> bool:
    """Offline unless the user chose a mode (``WANDB_MODE``) or is logged in (API key or netrc)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"] in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True


class GeminiWandbLogger(WandbLogger):
    """:class:`~lightning.pytorch.loggers.WandbLogger` with ``offline=None`` meaning "decide":
    offline (no network, no account) unless ``WANDB_MODE`` says otherwise or the user is logged in.
    Sync an offline run later with ``wandb sync <save_dir>/wandb/offline-run-*``.

    Args:
        project: W&B project name.
        name: run name (shown in dashboards).
        save_dir: folder that receives the ``wandb/`` run files.
        offline: force offline (True) or online (False); None decides as above.
        group: W&B group (e.g. the task), for grouped dashboards.
        tags: run tags.
    """

    def __init__(
        self,
        project: str = "gemini-pl",
        name: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ):
        if offline is None:
            offline = wandb_should_be_offline()
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project, name=name, save_dir=save_dir, offline=offline, group=group, tags=tags, **kwargs
        )
