"""The Table II matrix: rows × tasks × seeds, each cell a fully resolved config (or two: a
pre-training and the fine-tuning that starts from it).

A *mode* file (``experiments/table2/paper.yaml`` or ``phantom.yaml``) names the seeds, the step
budget (trainer, loggers, callbacks), the task files (data + the model's task arguments) and the
matrix file (``experiments/table2/matrix.yaml``: the rows in the paper's order, the method file of
each row, or ``null`` for "not implemented", and the ablations). A cell's config is the deep merge
budget ← method ← task data, plus the task's model arguments that the method's class accepts,
the seed and the cell's output folders; it is written to ``<out>/cells/<cell>/<stage>.yaml`` and run
by :mod:`gemini_pl.reproduce.cell` with ``gemini-pl``'s own parser.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Cell", "Matrix", "load_matrix", "deep_merge", "accepted_args"]


def deep_merge(base: dict, over: dict) -> dict:
    """Recursive dict merge (``over`` wins; lists are replaced). Neither input is modified."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """``set_dotted(cfg, "model.init_args.lambda_pos", 0)``."""
    parts = key.split(".")
    d = cfg
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def accepted_args(class_path: str) -> set[str] | None:
    """Keyword arguments a class's ``__init__`` chain accepts (``None``: anything, e.g. a bare ``**kwargs``)."""
    mod, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(mod), name)
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p != "self"}
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            return names
    return names


def _fill(obj: Any, values: dict[str, str]) -> Any:
    """Replace ``{cell_dir}``, ``{name}``, ``{group}``, ``{stage}`` in every string of a config."""
    if isinstance(obj, dict):
        return {k: _fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values) for v in obj]
    if isinstance(obj, str):
        return re.sub(r"\{(cell_dir|name|group|stage|seed)\}", lambda m: values[m.group(1)], obj)
    return obj


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


@dataclass
class Cell:
    """One run of the matrix: a row on a task with a seed (stages: [pre-training,] main)."""

    row: str
    task: str
    seed: int
    stages: list[dict[str, Any]]
    table: str = "II"
    key: str = ""
    pairs_test: bool = False

    @property
    def name(self) -> str:
        return f"{slug(self.table)}__{slug(self.row)}__{self.task.lower()}__seed{self.seed}"


@dataclass
class Matrix:
    mode: str
    mode_file: Path
    seeds: list[int]
    tasks: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    ablations: list[dict[str, Any]]
    budget: dict[str, Any]
    pretrain_budget: dict[str, Any]
    config_dir: Path
    data_root: str | None = None
    notes: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- configs
    def method(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.config_dir / "methods" / f"{name}.yaml").read_text()) or {}

    def stage_config(self, method: str, task: str, seed: int, cell_dir: Path, row: str, stage: str,
                     sets: dict[str, Any] | None = None, pretrain: bool = False) -> dict[str, Any]:
        t = self.tasks[task]
        m = self.method(method)
        m.pop("meta", None)
        budget = self.pretrain_budget if pretrain else self.budget
        cfg = deep_merge(deep_merge(budget, {"data": t["data"]}), m)
        cls = cfg["model"]["class_path"]
        ok = accepted_args(cls)
        init = cfg["model"].setdefault("init_args", {})
        for k, v in {**t.get("model", {}), "seed": seed}.items():
            if (ok is None or k in ok) and k not in m.get("model", {}).get("init_args", {}):
                init[k] = v
        cfg["seed_everything"] = seed
        for k, v in (sets or {}).items():
            set_dotted(cfg, k, v)
        if self.data_root and not t.get("phantom"):
            cfg["data"].setdefault("init_args", {})["root"] = self.data_root
        return _fill(cfg, {"cell_dir": str(cell_dir / stage), "name": row, "group": task, "stage": stage, "seed": str(seed)})

    # ---------------------------------------------------------------- cells
    def cells(self, out: Path, rows: list[str] | None = None, tasks: list[str] | None = None) -> list[Cell]:
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
                                pairs_test=bool(spec.get("pairs_test")))
                    cdir = out / "cells" / cell.name
                    if spec.get("pretrain"):
                        pre = self.stage_config(spec["pretrain"], task, seed, cdir, spec["row"], "pretrain", pretrain=True)
                        cell.stages.append({"name": "pretrain", "config": pre, "test": False})
                    main = self.stage_config(spec["method"], task, seed, cdir, spec["row"], "main", spec.get("set"))
                    cell.stages.append({"name": "main", "config": main, "test": True,
                                        "init_from_stage": "pretrain" if spec.get("pretrain") else None})
                    cells.append(cell)
        return cells


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def load_matrix(mode_file: str | Path, data_root: str | None = None) -> Matrix:
    """Read a mode file (``experiments/table2/{paper,phantom}.yaml``) and what it names."""
    mode_file = Path(mode_file)
    base = mode_file.parent
    mode = _load(mode_file)
    matrix = _load(base / mode.get("matrix", "matrix.yaml"))
    tasks = {name: _load(base / f) for name, f in mode["tasks"].items()}
    budget = _load(base / mode["budget"])
    pre_budget = _load(base / mode.get("pretrain_budget", mode["budget"]))
    return Matrix(
        mode=mode.get("mode", mode_file.stem), mode_file=mode_file, seeds=list(mode["seeds"]), tasks=tasks,
        rows=matrix["rows"], ablations=matrix.get("ablations", []), budget=budget, pretrain_budget=pre_budget,
        config_dir=base, data_root=data_root or mode.get("data_root"), notes=list(mode.get("notes", [])),
    )
