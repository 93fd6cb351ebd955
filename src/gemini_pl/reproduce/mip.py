"""The pre-training tables (III and VI): rows pre-trained once, each backbone fine-tuned on every task.

A *mode* file (``experiments/mip/table3/{paper,phantom}.yaml``, ``table6/…``) names the table
(``III`` / ``VI``), the seeds, the rows file (``experiments/mip/table3.yaml``: the paper's rows in
order, each ``{row, type, pretrain: <key> | null, external: bool}``), the unlabeled pre-training
data (``pretrain_data``: a ``data:`` config, with its phantom settings in phantom mode), the
downstream tasks (``tasks``: a ``data:`` config each, its ``scene`` — inner/inter relative to the
pre-training data —, ``slicewise: true`` where a 2D backbone meets a 3D task, and ``set:``, overrides
of its cells, e.g. ``{data.init_args.num_labeled: 2}``), the fine-tuning
method file (``finetune``: the same Segmentation for every row), and the two budgets.

Cells (each one process, resumable: :mod:`gemini_pl.reproduce.cell`):

* one **pre-training cell per row** (``<table>__<row>__pretrain``), seed ``pretrain_seed`` (default:
  the first seed) — or, with ``pretrain_per_seed: true`` in the mode file, one per row and seed, each
  fine-tuned only by the downstream cells of its seed, so that a seed varies the whole pipeline::

      --config <pretrain_data> --config methods/<key>.yaml --config <pretrain_budget> [--config <presets>/<key>.yaml]

  (the method file gives the model and its own trainer budget; the mode's presets folder, e.g.
  ``experiments/mip/phantom/methods``, its phantom scale, last). It leaves
  ``<cell>/pretrain/checkpoints/last.ckpt``.
* one **downstream cell per row, task and seed** (``<table>__<row>__<task>__seed<S>``)::

      --config <task> --config <finetune> --config <budget> --model.init_args.init_from <that last.ckpt>

  so every row's backbone is pre-trained once and reused by all its downstream cells; Scratch has no
  pre-training (random initialisation), a ``Sup`` row needs external weights (``external_weights:
  {row: file}`` in the mode file, else shown "needs external weights").

A row whose ``methods/<key>.yaml`` does not exist is shown "not implemented". A task marked
``slicewise`` (a 2D network on a 3D task, which the paper runs slice by slice) is fine-tuned with the
mode's ``slicewise_finetune`` file (``experiments/mip/finetune_slicewise.yaml``:
:class:`~gemini_pl.modules.slicewise.SliceWiseSegmentation`) instead of ``finetune``; a mode without
one shows such cells "not run: 2D→3D slice-wise transfer".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .matrix import Cell, Matrix, _cli_value, load_mode, only_rows, paired_row

__all__ = ["MipMatrix", "load_mip_matrix", "row_status", "SLICEWISE", "NEEDS_WEIGHTS", "NOT_IMPLEMENTED"]

SLICEWISE = "not run: 2D→3D slice-wise transfer"
NEEDS_WEIGHTS = "needs external weights"
NOT_IMPLEMENTED = "not implemented"


@dataclass
class MipMatrix(Matrix):
    """:class:`~gemini_pl.reproduce.matrix.Matrix` of a pre-training table (see the module doc)."""

    table: str = "III"
    pretrain_data: dict[str, Any] = field(default_factory=dict)   # {"config": Path, "phantom": {...} | None}
    finetune: Path | None = None
    pretrain_seed: int = 0
    external_weights: dict[str, str] = field(default_factory=dict)
    methods_dir: Path | None = None    # the pre-training method files: <methods_dir>/<key>.yaml
    select: str = "final"              # the selection policy when the command line names none
    slicewise_finetune: Path | None = None   # the fine-tuning of a 2D network on a 3D task (slice by slice)
    pretrain_per_seed: bool = False    # one pre-training per row and seed (else one per row)

    def pretrain_seeds(self) -> list[int]:
        """The seeds of a row's pre-training cells."""
        return list(self.seeds) if self.pretrain_per_seed else [self.pretrain_seed]

    # ---------------------------------------------------------------- rows
    def method_file(self, key: str) -> Path:
        return Path(self.methods_dir) / f"{key}.yaml"

    def row_status(self, spec: dict[str, Any]) -> str | None:
        """``None`` when the row can run, else why not (not implemented / needs external weights)."""
        return row_status(spec, Path(self.methods_dir), self.external_weights)

    def task_status(self, task: str) -> str | None:
        """``None`` when the task's cells run; SLICEWISE for a 2D→3D task without ``slicewise_finetune``."""
        return SLICEWISE if self.tasks[task].get("slicewise") and self.slicewise_finetune is None else None

    def finetune_file(self, task: str) -> Path:
        """``slicewise_finetune`` for a task marked ``slicewise``, else ``finetune``."""
        return Path(self.slicewise_finetune if self.tasks[task].get("slicewise") else self.finetune)

    # ---------------------------------------------------------------- stages
    def _overrides(self, seed: int, root: Path, phantom: bool) -> list[str]:
        out = [f"--seed_everything={seed}", f"--data.init_args.seed={seed}", f"--model.init_args.aug_seed={seed}",
               f"--trainer.default_root_dir={root}"]
        if self.data_root and not phantom:
            out.append(f"--data.init_args.root={self.data_root}")
        return out

    def pretrain_dir(self, out: Path, row: str, seed: int | None = None) -> Path:
        """The folder of the row's pre-training cell for downstream ``seed`` (its weights:
        ``pretrain/checkpoints/last.ckpt``)."""
        seed = seed if self.pretrain_per_seed and seed is not None else self.pretrain_seed
        return Path(out) / "cells" / Cell(row, "pretrain", seed, [], table=self.table).name

    def pretrain_cells(self, out: Path, spec: dict[str, Any]) -> list[Cell]:
        """The row's pre-training cells, one per :meth:`pretrain_seeds` (none: Scratch, external
        weights, not implemented)."""
        if not spec.get("pretrain") or self.row_status(spec):
            return []
        return [self.pretrain_cell(out, spec, seed) for seed in self.pretrain_seeds()]

    def pretrain_cell(self, out: Path, spec: dict[str, Any], seed: int | None = None) -> Cell | None:
        """The row's pre-training cell of ``seed`` (default ``pretrain_seed``; ``None``: Scratch,
        external weights, not implemented)."""
        if not spec.get("pretrain") or self.row_status(spec):
            return None
        seed = self.pretrain_seed if seed is None else seed
        key = spec["pretrain"]
        configs = [str(self.pretrain_data["config"]), str(self.method_file(key)), str(self.pretrain_budget)]
        if self.method_presets is not None and (self.method_presets / f"{key}.yaml").is_file():
            configs.append(str(self.method_presets / f"{key}.yaml"))
        cell = Cell(spec["row"], "pretrain", seed, [], table=self.table, key="pretrain")
        cdir = self.pretrain_dir(out, spec["row"], seed)
        overrides = self._overrides(seed, cdir / "pretrain", bool(self.pretrain_data.get("phantom")))
        overrides += [f"--{k}={_cli_value(v)}" for k, v in (spec.get("pretrain_set") or {}).items()]
        cell.stages.append({"name": "pretrain", "configs": configs, "overrides": overrides, "test": False,
                            "init_from_stage": None, "count_flops": True})
        return cell

    def downstream_cells(self, out: Path, spec: dict[str, Any], tasks: list[str] | None = None,
                         select: str = "final") -> list[Cell]:
        """The row's fine-tuning cells (task × seed) that can run (not slice-wise, row runnable)."""
        if self.row_status(spec):
            return []
        cells = []
        for task in self.tasks:
            if (tasks and task not in tasks) or self.task_status(task):
                continue
            for seed in self.seeds:
                init = None
                if spec.get("external"):
                    init = self.external_weights[spec["row"]]
                elif spec.get("pretrain"):
                    init = str(self.pretrain_dir(out, spec["row"], seed) / "pretrain" / "checkpoints" / "last.ckpt")
                cell = Cell(spec["row"], task, seed, [], table=self.table, key="", select=select)
                cdir = Path(out) / "cells" / cell.name
                configs = [str(self.tasks[task]["config"]), str(self.finetune_file(task)), str(self.budget)]
                overrides = self._overrides(seed, cdir / "main", bool(self.tasks[task].get("phantom")))
                overrides += [f"--{k}={_cli_value(v)}" for k, v in (self.tasks[task].get("set") or {}).items()]
                main = {"name": "main", "configs": configs, "overrides": overrides}
                if select == "best":
                    main = self._with_best_checkpoint(main)
                cell.stages.append({**main, "test": True, "init_from_stage": None, "init_from": init, "count_flops": True})
                cells.append(cell)
        return cells

    def cells(self, out: Path, rows: list[str] | None = None, tasks: list[str] | None = None,
              select: str = "final") -> list[Cell]:
        """Every cell: the pre-training cells first, then the downstream ones."""
        from .matrix import SELECT

        if select not in SELECT:
            from ..errors import ConfigError

            raise ConfigError(f"select={select!r} is not one of {', '.join(SELECT)}")
        specs = [s for s in self.rows if not rows or s["row"] in rows]
        pre = [c for s in specs for c in self.pretrain_cells(out, s)]
        down = [c for s in specs for c in self.downstream_cells(out, s, tasks, select)]
        return pre + down


def row_status(spec: dict[str, Any], methods_dir: Path, external_weights: dict[str, str] | None = None) -> str | None:
    """Why a row cannot run (``None``: it can): a ``Sup`` row without a weights file, a
    pre-training key without ``<methods_dir>/<key>.yaml``."""
    if spec.get("external"):
        return None if (external_weights or {}).get(spec["row"]) else NEEDS_WEIGHTS
    key = spec.get("pretrain")
    if key and not (Path(methods_dir) / f"{key}.yaml").is_file():
        return NOT_IMPLEMENTED
    return None


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def load_mip_matrix(mode_file: str | Path, data_root: str | None = None,
                    external_weights: dict[str, str] | None = None) -> MipMatrix:
    """Read a pre-training table's mode file (paths in it are relative to its folder)."""
    from ..errors import ConfigError

    mode_file = Path(mode_file)
    base = mode_file.parent
    mode = load_mode(mode_file)
    for key in ("table", "seeds", "rows", "pretrain_data", "tasks", "finetune", "budget", "pretrain_budget", "methods"):
        if key not in mode:
            raise ConfigError(f"{mode_file}: missing '{key}:' (see gemini_pl.reproduce.mip)")
    def at(rel: str) -> Path:  # a path of the mode file, normalised (table6/../methods -> methods)
        return Path(os.path.normpath(base / rel))

    rows = only_rows(_load(at(mode["rows"]))["rows"], mode.get("only_rows"), mode_file)
    tasks = {}
    for name, spec in mode["tasks"].items():
        spec = dict(spec)
        spec["config"] = at(spec["config"])
        tasks[name] = spec
    pre = dict(mode["pretrain_data"])
    pre["config"] = at(pre["config"])
    presets = mode.get("method_presets")
    weights = {**(mode.get("external_weights") or {}), **(external_weights or {})}
    seeds = list(mode["seeds"])
    return MipMatrix(
        mode=mode.get("mode", mode_file.stem), mode_file=mode_file, seeds=seeds, tasks=tasks, rows=rows, ablations=[],
        budget=at(mode["budget"]), pretrain_budget=at(mode["pretrain_budget"]), config_dir=base,
        data_root=data_root or mode.get("data_root"), notes=list(mode.get("notes", [])),
        method_presets=at(presets) if presets else None,
        best_checkpoint=Path(__file__).resolve().parents[3] / "experiments" / "callbacks" / "best_seg.yaml",
        table=str(mode["table"]), pretrain_data=pre, finetune=at(mode["finetune"]),
        pretrain_seed=int(mode.get("pretrain_seed", seeds[0])), external_weights=weights,
        methods_dir=at(mode["methods"]), select=str(mode.get("select", "final")),
        slicewise_finetune=at(mode["slicewise_finetune"]) if mode.get("slicewise_finetune") else None,
        pretrain_per_seed=bool(mode.get("pretrain_per_seed", False)), generate=list(mode.get("generate") or []),
        paired_vs=paired_row(mode, rows, mode_file), per_structure=bool(mode.get("per_structure", False)),
    )
