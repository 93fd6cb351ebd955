"""Per-case results of ``test``: a CSV file and a Markdown summary that says where they came from.

The evaluation modules (``Segmentation``, ``GeminiSemi``, ``Registration``) return
``{"cases": [row, ...]}`` from ``test_step``, one row per case (``case`` plus metric columns, in
the paper's units: Dice in %, AVD/HD95 in mm, folding in %). :class:`ResultsWriter` gathers them
from every DDP rank and, on rank 0, writes

* ``<dir>/test_cases.csv`` — one line per case (NaN where a metric could not be computed, e.g.
  the AVD of an empty prediction: the paper's "unable");
* ``<dir>/test_summary.md`` — mean ± std (sample std) over the cases of every metric, with the
  number of "unable" cases, headed by the config file(s), commit (``git rev-parse``; "unknown"
  outside a repository, "+dirty" with uncommitted changes), split (the data module's
  ``split_hash`` and its train/val/test counts, :func:`~gemini_pl.data.splits.describe_split`),
  the selection policy of the tested weights (:func:`selection_policy`: "final weights" or "best
  val/seg_dice on N validation cases"), seed, checkpoint, model and data classes;

and prints the summary; the summary is also the ``test`` section of ``<dir>/report.md``
(:mod:`gemini_pl.report`), and with a W&B logger the per-case rows are the run's table
``<name>/cases``. ``<dir>`` is ``results_dir`` or ``<trainer.log_dir>/results``.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..report import REPORT_NAME, write_section
from .wandb_resume import _wandb_loggers

__all__ = ["FINAL_WEIGHTS", "ResultsWriter", "best_policy", "config_files", "format_summary", "git_commit",
           "selection_policy"]

#: the selection policy of weights tested as they are after the last training step
FINAL_WEIGHTS = "final weights"


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """Short commit hash of ``cwd`` (default: the package's checkout) with ``+dirty``; "unknown" otherwise."""
    folders = [cwd] if cwd is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for folder in folders:
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
            )
            if rev.returncode != 0:
                continue
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder, capture_output=True, text=True, timeout=10
            )
            return rev.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def config_files(argv: list[str] | None = None) -> list[str]:
    """The ``--config``/``-c`` files of a command line (default ``sys.argv``)."""
    argv = sys.argv[1:] if argv is None else argv
    out = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--config="):
            out.append(arg.split("=", 1)[1])
    return out


def best_policy(monitor: str, num_val: int) -> str:
    """``best val/seg_dice on 5 validation cases``: the policy of a monitored checkpoint."""
    return f"best {monitor} on {num_val} validation case{'' if num_val == 1 else 's'}"


def _val_cases(datamodule: Any) -> int:
    split = getattr(datamodule, "split", None) or {}
    return len(split.get("val") or [])


def _monitor_of_best(trainer: Any, ckpt: str) -> str | None:
    """The key a ``ModelCheckpoint`` monitored when it kept ``ckpt`` as its best checkpoint (this
    run's callbacks, else the callback states saved in the file); None for any other file."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in getattr(trainer, "checkpoint_callbacks", None) or []:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_path \
                and Path(cb.best_model_path).resolve() == Path(ckpt).resolve():
            return cb.monitor
    try:
        from ..safe_load import safe_torch_load

        states = safe_torch_load(ckpt, mmap=True).get("callbacks") or {}
    except Exception:  # noqa: BLE001 - provenance only: an unreadable file is "checkpoint <path>"
        return None
    for key, state in states.items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor") \
                and Path(str(state.get("best_model_path") or "")).name == Path(ckpt).name:
            return str(state["monitor"])
    return None


def _labeled_used(datamodule: Any) -> int | None:
    """The few-shot budget a data module trains with (None: all, or no labeled training)."""
    return None if getattr(datamodule, "train_mode", "pairs") == "pairs" else getattr(datamodule, "num_labeled", None)


def selection_policy(trainer: Any, datamodule: Any = None) -> str:
    """Which weights ``trainer`` tests (``trainer.ckpt_path``): :data:`FINAL_WEIGHTS` without a
    checkpoint (the model as trained), :func:`best_policy` for the best checkpoint of a monitored
    ``ModelCheckpoint`` (N: the data module's validation cases), else ``checkpoint <path>``."""
    ckpt = getattr(trainer, "ckpt_path", None)
    if not ckpt:
        return FINAL_WEIGHTS
    monitor = _monitor_of_best(trainer, str(ckpt))
    return best_policy(monitor, _val_cases(datamodule)) if monitor else f"checkpoint {ckpt}"


def _fmt(x: float, digits: int = 2) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _stats(values: list[float]) -> tuple[float, float, int, int]:
    """mean, sample std, number of finite values, number of NaN ("unable")."""
    ok = [v for v in values if v is not None and not math.isnan(v)]
    unable = len(values) - len(ok)
    if not ok:
        return math.nan, math.nan, 0, unable
    mean = sum(ok) / len(ok)
    std = math.sqrt(sum((v - mean) ** 2 for v in ok) / (len(ok) - 1)) if len(ok) > 1 else 0.0
    return mean, std, len(ok), unable


def format_summary(rows: list[dict[str, Any]], provenance: dict[str, str], units: dict[str, str] | None = None) -> str:
    """The Markdown summary: provenance lines, then a table of metric | mean ± std | n | unable."""
    units = units or {}
    columns = [c for c in (rows[0].keys() if rows else []) if c != "case"]
    for r in rows[1:]:
        columns += [c for c in r if c != "case" and c not in columns]
    lines = ["# Test results", ""]
    lines += [f"- {k}: {v}" for k, v in provenance.items()]
    lines += ["", "| metric | mean ± std | cases | unable |", "|---|---|---|---|"]
    for c in columns:
        mean, std, n, unable = _stats([float(r.get(c, math.nan)) for r in rows])
        unit = units[c] if c in units else units.get(c.split("_", 1)[0], "")
        label = f"{c} ({unit})" if unit else c
        lines.append(f"| {label} | {_fmt(mean)} ± {_fmt(std)} | {n} | {unable} |")
    return "\n".join(lines) + "\n"


class ResultsWriter(L.Callback):
    """Collect the per-case rows that ``test_step`` returns; write a CSV and a Markdown summary.

    Args:
        results_dir: output folder (default ``<trainer.log_dir>/results``, or
            ``<default_root_dir>/results`` without a logger).
        name: file name stem (``<name>_cases.csv``, ``<name>_summary.md``).
        config: the config to name in the summary (default: the ``--config`` files of the command line).
        print_summary: print the Markdown summary at the end of ``test``.
    """

    def __init__(self, results_dir: str | None = None, name: str = "test", config: str | None = None, print_summary: bool = True):
        super().__init__()
        self.results_dir = results_dir
        self.name = name
        self.config = config
        self.print_summary = print_summary
        self.rows: list[dict[str, Any]] = []
        self.csv_path: Path | None = None
        self.summary_path: Path | None = None
        self.summary: str | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and isinstance(outputs.get("cases"), list):
            self.rows.extend(outputs["cases"])

    def _out_dir(self, trainer: L.Trainer) -> Path:
        if self.results_dir:
            return Path(self.results_dir)
        base = trainer.log_dir if trainer.loggers else None
        return Path(base or trainer.default_root_dir) / "results"

    def provenance(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        from ..data.splits import describe_split

        dm = getattr(trainer, "datamodule", None)
        split = getattr(dm, "split_hash", None) if dm is not None else None
        dataset = getattr(dm, "dataset", None) if dm is not None else None
        return {
            "config": self.config or (", ".join(config_files()) or "none (Python API)"),
            "commit": git_commit(),
            "split": describe_split(getattr(dm, "split", None), split, _labeled_used(dm))
            if split else "n/a (the data module exposes no split_hash)",
            "selection": selection_policy(trainer, dm),
            "seed": os.environ.get("PL_GLOBAL_SEED", "not set"),
            "checkpoint": str(getattr(trainer, "ckpt_path", None) or "the model as given (no --ckpt_path)"),
            "model": type(pl_module).__name__,
            "data": f"{type(dm).__name__}({dataset})" if dm is not None else "n/a",
        }

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
            # DistributedSampler may repeat cases to even out the ranks: keep each case once
            seen, unique = set(), []
            for r in rows:
                if r.get("case") not in seen:
                    seen.add(r.get("case"))
                    unique.append(r)
            rows = unique
        self.rows = rows
        if not trainer.is_global_zero or not rows:
            return
        out = self._out_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        columns = ["case"]
        for r in rows:
            columns += [c for c in r if c not in columns]
        self.csv_path = out / f"{self.name}_cases.csv"
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({c: (_fmt(v, 4) if isinstance(v, float) else v) for c, v in r.items()})
        provenance = self.provenance(trainer, pl_module)
        self.summary = format_summary(rows, provenance, getattr(pl_module, "result_units", None))
        self.summary += f"\nPer-case values: {self.csv_path}\n"
        self.summary_path = out / f"{self.name}_summary.md"
        self.summary_path.write_text(self.summary)
        write_section(out / REPORT_NAME, self.name, self.summary.replace("# Test results", "## Test results", 1))
        for logger in _wandb_loggers(trainer):  # the per-case rows as a W&B table
            logger.log_table(key=f"{self.name}/cases", columns=columns,
                             data=[[r.get(c) for c in columns] for r in rows])
        if self.print_summary:
            rank_zero_info("\n" + self.summary)
