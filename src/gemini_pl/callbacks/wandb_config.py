"""The complete resolved config (trainer with its callbacks and loggers, model, data, seed) in the
W&B run's config, not only the model's and data module's hyperparameters.

:class:`ConfigToLoggers` is the ``gemini-pl`` CLI's config callback: it writes ``config.yaml`` as
LightningCLI's ``SaveConfigCallback`` does and, on rank 0, updates every W&B logger's run config
with the parsed config as nested dictionaries (``trainer``, ``model``, ``data``,
``seed_everything``, ...: the same values as ``config.yaml``). Without a W&B logger it only writes
the file.
"""

from __future__ import annotations

from typing import Any

import yaml
from lightning.pytorch.cli import SaveConfigCallback

from .wandb_resume import _wandb_loggers

__all__ = ["ConfigToLoggers", "resolved_config"]


def resolved_config(parser: Any, config: Any) -> dict[str, Any]:
    """The parsed config of one subcommand as plain nested dictionaries (what ``config.yaml``
    holds; the ``--config`` file list itself left out)."""
    data = yaml.safe_load(parser.dump(config, skip_none=False)) or {}
    data.pop("config", None)
    return data


class ConfigToLoggers(SaveConfigCallback):
    """``config.yaml`` in the log folder, and the same config in each W&B run (module doc)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:  # noqa: D102 - LightningCLI hook
        loggers = _wandb_loggers(trainer)
        if not loggers:
            return
        config = resolved_config(self.parser, self.config)
        for logger in loggers:
            logger.experiment.config.update(config, allow_val_change=True)
