"""The ``gemini-pl`` console script: LightningCLI (fit / validate / test / predict).

Examples::

    gemini-pl fit --config experiments/demo_pretrain.yaml
    gemini-pl fit --config experiments/demo_pretrain.yaml --trainer.precision bf16-mixed
    gemini-pl fit --config experiments/demo_pretrain.yaml --print_config
    gemini-pl fit --config experiments/demo_pretrain.yaml --ckpt_path last

Errors that concern the user's data, config or checkpoints (:class:`~gemini_pl.errors.GeminiError`)
are printed as one line naming the file, setting or step, with exit status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lightning.pytorch.plugins.io import CheckpointIO

from .callbacks import WandbResume
from .callbacks.wandb_resume import continue_wandb_run
from .checkpoint_io import AtomicCheckpointIO
from .errors import GeminiError
from .runtime import keep_freed_memory
from .safe_load import safe_torch_load


class GeminiCLI(LightningCLI):
    """LightningCLI with gemini-pl's defaults: any LightningModule / LightningDataModule via
    ``class_path``, optimisers configured by the modules themselves, atomic checkpoint writes
    (:class:`~gemini_pl.checkpoint_io.AtomicCheckpointIO`, unless the config names another
    CheckpointIO plugin) and the W&B run id kept in checkpoints
    (:class:`~gemini_pl.callbacks.WandbResume`)."""

    def before_fit(self) -> None:  # noqa: D102 - LightningCLI hook
        continue_wandb_run(self.trainer, self.config_init[self.subcommand].get("ckpt_path"))

    def instantiate_trainer(self, **kwargs):  # noqa: D102 - LightningCLI hook
        config = self._get(self.config_init, "trainer", default={}) or {}
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def cli_main(args: list[str] | None = None, run: bool = True) -> GeminiCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests, the demo and
    Table II cells run stages in-process this way; the caller's own command line is hidden from
    ``sys.argv`` meanwhile, so that LightningCLI does not see two command lines)."""
    argv = sys.argv
    if args is not None:
        sys.argv = sys.argv[:1]
    try:
        return GeminiCLI(
            model_class=L.LightningModule,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [WandbResume()]},
            args=args,
            run=run,
        )
    finally:
        sys.argv = argv


def _ckpt_path_arg(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def check_checkpoint_file(path: str | None) -> None:
    """Refuse a checkpoint that cannot be read with ``weights_only=True`` before anything loads it
    (LightningCLI reads its hyper-parameters while parsing)."""
    if not path or path in ("last", "best", "hpc", "registry") or not Path(path).is_file():
        return
    safe_torch_load(path, mmap=True)


def main(args: list[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault("WANDB_SILENT", "true")
    keep_freed_memory()  # CPU: reuse freed buffers instead of page-faulting fresh ones (runtime.py)
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "check-data":  # gemini-pl check-data --config ... (see gemini_pl.data.check)
        from .data.check import main as check_data_main

        sys.exit(check_data_main(argv[1:]))
    try:
        check_checkpoint_file(_ckpt_path_arg(sys.argv[1:] if args is None else args))
        cli_main(args)
    except GeminiError as exc:
        print(f"gemini-pl: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
