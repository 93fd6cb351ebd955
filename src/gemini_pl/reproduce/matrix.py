"""The Table II matrix: rows × tasks × seeds, each cell one ``gemini-pl fit`` (or two: a
pre-training and the fine-tuning that starts from it).

A *mode* file (``experiments/table2/paper.yaml`` or ``phantom.yaml``) names the seeds, the budget
file (trainer, loggers, callbacks: it composes the presets of ``experiments/trainer|logger|callbacks``
through its ``config:`` key), the task files (a ``data:`` section each, with a title and, for
phantoms, how to generate them) and the matrix file (``experiments/table2/matrix.yaml``: the rows
in the paper's order, the method file of each row, or ``null`` for "not implemented", and the
ablations). A mode file may start from another with ``extends: <mode file>`` and state only what
differs (:func:`load_mode`; e.g. ``synthseg_balanced.yaml``, which changes the budget). A cell's stage is composed with LightningCLI's own mechanism, a list of config files
(later ones override earlier ones) and command-line overrides::

    --config <task> --config methods/<method>.yaml [--config <method_presets>/<method>.yaml] --config <budget>
    --seed_everything S --data.init_args.seed S --model.init_args.aug_seed S
    --trainer.default_root_dir <cell>/<stage> [--data.init_args.root <data root>] [--<key>=<value> of an ablation's set:]

so the seed changes the initialisation, the training sampling and the augmentation, and the CLI's
parser rejects any key that a file misspells (the cell fails with the parser's error naming it).
The list is written to ``<runs>/cells/<cell>/cell.json`` and run by :mod:`gemini_pl.reproduce.cell`.

Selection (``select``): ``final`` (default, as the published code) tests the main stage's final
weights; ``best`` appends the mode's ``best_checkpoint`` preset (default
``experiments/callbacks/best_seg.yaml``: keep the best ``val/seg_dice``) and
``--trainer.limit_val_batches=1.0`` to the main stage and tests that checkpoint; such cells are
named ``<cell>__best`` so that the two policies never share a result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Cell", "Matrix", "SELECT", "load_matrix", "stage_args"]

#: the selection policies of a cell: test the final weights, or the best validation checkpoint
SELECT = ("final", "best")
#: the checkpoint preset of ``select: best`` when the mode file names none
_REPO_BEST = Path(__file__).resolve().parents[3] / "experiments" / "callbacks" / "best_seg.yaml"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _cli_value(value: Any) -> str:
    """A value as the CLI's parser reads it (YAML/JSON; strings as they are)."""
    return value if isinstance(value, str) else json.dumps(value)


def stage_args(stage: dict[str, Any]) -> list[str]:
    """The ``gemini-pl fit`` arguments of a stage (``{"configs": [...], "overrides": [...]}``)."""
    args: list[str] = []
    for config in stage["configs"]:
        args += ["--config", str(config)]
    return args + list(stage.get("overrides", []))


@dataclass
class Cell:
    """One run of the matrix: a row on a task with a seed (stages: [pre-training,] main).

    Each stage: ``{"name", "configs": [config files], "overrides": [--key=value ...], "test": bool,
    "init_from_stage": <stage> | None}``.
    """

    row: str
    task: str
    seed: int
    stages: list[dict[str, Any]]
    table: str = "II"
    key: str = ""
    pairs_test: bool = False
    select: str = "final"

    @property
    def name(self) -> str:
        base = f"{slug(self.table)}__{slug(self.row)}__{self.task.lower()}__seed{self.seed}"
        return base if self.select == "final" else f"{base}__{self.select}"

    def args(self, stage: str = "main") -> list[str]:
        """The ``gemini-pl fit`` arguments of one of its stages (without ``init_from``, set when it runs)."""
        return stage_args(next(s for s in self.stages if s["name"] == stage))


@dataclass
class Matrix:
    mode: str
    mode_file: Path
    seeds: list[int]
    tasks: dict[str, dict[str, Any]]   # {"config": Path, "title": str, "phantom": {...} | None}
    rows: list[dict[str, Any]]
    ablations: list[dict[str, Any]]
    budget: Path
    pretrain_budget: Path
    config_dir: Path
    data_root: str | None = None
    notes: list[str] = field(default_factory=list)
    method_presets: Path | None = None
    best_checkpoint: Path | None = None
    generate: list[dict[str, Any]] = field(default_factory=list)  # datasets to write before any cell runs
    paired_vs: str | None = None       # the row every other row is paired against, per case within each seed
    per_structure: bool = False        # also render each row's Dice per structure (<table>_structures.md)

    # ---------------------------------------------------------------- configs
    def method_files(self, method: str) -> list[Path]:
        """``methods/<method>.yaml``, then the mode's ``<method_presets>/<method>.yaml`` if there is one."""
        files = [self.config_dir / "methods" / f"{method}.yaml"]
        if self.method_presets is not None and (self.method_presets / f"{method}.yaml").is_file():
            files.append(self.method_presets / f"{method}.yaml")
        return files

    def task_data(self, task: str) -> dict[str, Any]:
        """The ``data:`` section of a task file (the runner reads its ``root`` and ``split_file`` to
        generate phantoms and write the split before the cells run: a task file states its whole
        ``data:`` section, without ``config:`` presets)."""
        path = Path(self.tasks[task]["config"])
        cfg = yaml.safe_load(path.read_text()) or {}
        if cfg.get("config"):
            from ..errors import ConfigError

            raise ConfigError(f"{path}: a task file states its whole data: section (no config: presets)")
        return cfg.get("data") or {}

    def stage(self, name: str, method: str, task: str, seed: int, cell_dir: Path, sets: dict[str, Any] | None = None,
              pretrain: bool = False) -> dict[str, Any]:
        """A stage: its config files (task, method, the method's presets of this mode, budget) and overrides."""
        t = self.tasks[task]
        budget = self.pretrain_budget if pretrain else self.budget
        configs = [str(t["config"]), *map(str, self.method_files(method)), str(budget)]
        overrides = [
            f"--seed_everything={seed}",                   # initialisation
            f"--data.init_args.seed={seed}",                # training sampling (the split is pinned by its file)
            f"--model.init_args.aug_seed={seed}",           # augmentation
            f"--trainer.default_root_dir={cell_dir / name}",  # logs, checkpoints and results of the stage
        ]
        if self.data_root and not t.get("phantom"):
            overrides.append(f"--data.init_args.root={self.data_root}")
        for k, v in (sets or {}).items():
            overrides.append(f"--{k}={_cli_value(v)}")
        return {"name": name, "configs": configs, "overrides": overrides}

    def _with_best_checkpoint(self, stage: dict[str, Any]) -> dict[str, Any]:
        """``stage`` with the ``best_checkpoint`` preset (unless one of its files already names it)
        and validation on (``select: best``)."""
        from ..cli import config_presets

        have = {Path(p).resolve() for c in stage["configs"] for p in (*config_presets(c), c)}
        configs = list(stage["configs"])
        if Path(str(self.best_checkpoint)).resolve() not in have:
            configs.append(str(self.best_checkpoint))
        return {**stage, "configs": configs, "overrides": [*stage["overrides"], "--trainer.limit_val_batches=1.0"]}

    # ---------------------------------------------------------------- cells
    def cells(self, out: Path, rows: list[str] | None = None, tasks: list[str] | None = None,
              select: str = "final") -> list[Cell]:
        """The cells of the matrix (``select``: ``final`` or ``best``, see the module doc)."""
        if select not in SELECT:
            from ..errors import ConfigError

            raise ConfigError(f"select={select!r} is not one of {', '.join(SELECT)}")
        cells = []
        for spec in [*({**r, "table": "II"} for r in self.rows), *self.ablations]:
            if not spec.get("method") or spec.get("reuse"):
                continue
            if rows and spec["row"] not in rows:
                continue
            for task in spec.get("tasks") or list(self.tasks):
                if task not in self.tasks or (tasks and task not in tasks):
                    continue
                for seed in self.seeds:
                    cell = Cell(spec["row"], task, seed, [], table=spec.get("table", "II"), key=spec.get("key", ""),
                                pairs_test=bool(spec.get("pairs_test")), select=select)
                    cdir = Path(out) / "cells" / cell.name
                    if spec.get("pretrain"):
                        pre = self.stage("pretrain", spec["pretrain"], task, seed, cdir, pretrain=True)
                        cell.stages.append({**pre, "test": False})
                    main = self.stage("main", spec["method"], task, seed, cdir, spec.get("set"))
                    if select == "best":  # keep the best validation checkpoint (and validate)
                        main = self._with_best_checkpoint(main)
                    cell.stages.append({**main, "test": True, "init_from_stage": "pretrain" if spec.get("pretrain") else None})
                    cells.append(cell)
        return cells


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def load_mode(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A mode file's keys; ``extends: <mode file>`` (a file name in the same folder: the paths in
    both files are read from that folder) takes that file's keys first and lets this file's keys
    replace them whole (a mode states only what differs)."""
    from ..errors import ConfigError

    path = Path(path)
    mode = _load(path)
    parent = mode.pop("extends", None)
    if parent is None:
        return mode
    if Path(str(parent)).name != str(parent):
        raise ConfigError(f"{path}: extends: {parent} must name a mode file in the same folder "
                          "(the paths inside both files are read from that folder)")
    target, here = (path.parent / str(parent)).resolve(), path.resolve()
    if target == here or target in _seen:
        raise ConfigError(f"{path}: extends: {parent} makes a cycle")
    if not target.is_file():
        raise ConfigError(f"{path}: extends: {parent} is not a file ({target})")
    return {**load_mode(target, (*_seen, here)), **mode}


def only_rows(rows: list[dict[str, Any]], names: list[str] | None, where: Path) -> list[dict[str, Any]]:
    """The rows named by a mode file's ``only_rows:`` (all when ``None``), in the rows' order; a name
    that is no row is a ConfigError naming the mode file."""
    if names is None:
        return rows
    known = [r["row"] for r in rows]
    unknown = [n for n in names if n not in known]
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"{where}: only_rows: {', '.join(map(repr, unknown))} not among the rows ({', '.join(known)})")
    return [r for r in rows if r["row"] in names]


def paired_row(mode: dict[str, Any], rows: list[dict[str, Any]], where: Path) -> str | None:
    """A mode file's ``paired_vs:`` (the row every other row is paired against), checked to be one
    of ``rows``; a ConfigError naming the mode file otherwise."""
    from ..errors import ConfigError

    if "paired_vs_scratch" in mode:
        raise ConfigError(f"{where}: 'paired_vs_scratch:' was replaced by 'paired_vs: <row>' (e.g. the Scratch row's name)")
    base = mode.get("paired_vs")
    known = [r["row"] for r in rows]
    if base is not None and base not in known:
        raise ConfigError(f"{where}: paired_vs: {base!r} is not among the rows ({', '.join(known)})")
    return base


def load_matrix(mode_file: str | Path, data_root: str | None = None) -> Matrix:
    """Read a mode file (``experiments/table2/{paper,phantom,synthseg}.yaml``) and the matrix file it names.

    ``tasks``: ``{T1: {config: <file>, title: ..., phantom: {...}}}`` (or ``{T1: <file>}``); file
    paths are relative to the mode file's folder. Optional: ``only_rows:`` (a subset of the rows,
    ablations dropped), ``generate:`` (datasets written before any cell runs, each
    ``{generator: mni|synthseg|phantom, ...}``: :func:`gemini_pl.data.synthetic.generate_dataset`),
    ``paired_vs:`` (a row: the paired per-case column of every other row) and ``per_structure:
    true`` (the per-structure Dice table).
    """
    mode_file = Path(mode_file)
    base = mode_file.parent
    mode = load_mode(mode_file)
    matrix = _load(base / mode.get("matrix", "matrix.yaml"))
    tasks = {}
    for name, spec in mode["tasks"].items():
        spec = {"config": spec} if isinstance(spec, str) else dict(spec)
        spec["config"] = base / spec["config"]
        tasks[name] = spec
    presets = mode.get("method_presets")
    best = base / mode["best_checkpoint"] if mode.get("best_checkpoint") else next(
        (p for p in (base.parent / "callbacks" / "best_seg.yaml", _REPO_BEST) if p.is_file()), _REPO_BEST)
    subset = mode.get("only_rows")
    rows = only_rows(matrix["rows"], subset, mode_file)
    return Matrix(
        mode=mode.get("mode", mode_file.stem), mode_file=mode_file, seeds=list(mode["seeds"]), tasks=tasks,
        rows=rows,
        ablations=[] if subset is not None else matrix.get("ablations", []), budget=base / mode["budget"],
        pretrain_budget=base / mode.get("pretrain_budget", mode["budget"]), config_dir=base,
        data_root=data_root or mode.get("data_root"), notes=list(mode.get("notes", [])),
        method_presets=base / presets if presets else None, best_checkpoint=best,
        generate=list(mode.get("generate") or []), paired_vs=paired_row(mode, rows, mode_file),
        per_structure=bool(mode.get("per_structure", False)),
    )
