"""Run a pre-training table (``python -m gemini_pl.reproduce --table 3|6``, ``make reproduce TABLE=3``).

Each row is pre-trained once (its pre-training cell; with ``pretrain_per_seed`` once per seed), then
its backbone is fine-tuned on every task and seed (its downstream cells); chains — a pre-training
and the downstream cells that use it — run ``--jobs`` at a time, each chain's cells one after the other.
Cells are resumable as in Table II (:mod:`gemini_pl.reproduce.runner`): a cell with a
``result.json`` is not run again (``--retry-failed`` reruns failed ones); a row whose pre-training
failed gets its downstream cells written as failed, naming that error. Renders
``<out>/table3.{md,csv}`` / ``table6.{md,csv}`` (:mod:`gemini_pl.reproduce.mip_table`).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .cell import write_json_atomic
from .matrix import Cell
from .mip import MipMatrix, load_mip_matrix
from .mip_table import render_mip_csv, render_mip_markdown, row_notes
from .runner import _selection_line, cell_runner, _span, _write_cell, collect, prepare_splits

__all__ = ["execute", "prepare_data", "run_mip", "static_statuses", "table_file"]


def table_file(table: str) -> str:
    """``III`` → ``table3``, ``VI`` → ``table6``."""
    return {"III": "table3", "VI": "table6"}[table]


def static_statuses(matrix: MipMatrix) -> dict[str, str | None]:
    """``row`` / ``row|task`` → a status fixed before any run (see :mod:`gemini_pl.reproduce.mip`)."""
    out: dict[str, str | None] = {}
    for spec in matrix.rows:
        out[spec["row"]] = matrix.row_status(spec)
        for task in matrix.tasks:
            out[f"{spec['row']}|{task}"] = matrix.task_status(task)
    return out


def prepare_data(matrix: MipMatrix) -> None:
    """Write the generated data of the mode before any cell runs: the datasets of its ``generate:``
    entries (e.g. the MNI152-derived or SynthSeg-derived subjects) and the phantom datasets of the
    pre-training data and of the tasks."""
    import yaml

    from ..data.synthetic import generate_all

    def root(config: str) -> str:
        return (yaml.safe_load(Path(config).read_text()) or {})["data"]["init_args"]["root"]

    phantoms = [{**s["phantom"], "generator": "phantom", "root": root(s["config"])}
                for s in (matrix.pretrain_data, *matrix.tasks.values()) if s.get("phantom")]
    generate_all([*matrix.generate, *phantoms])


def _todo(runs: Path, cell: Cell, retry_failed: bool) -> bool:
    res = runs / "cells" / cell.name / "result.json"
    if res.exists():
        if json.loads(res.read_text()).get("status") == "ok" or not retry_failed:
            return False
        res.unlink()
    return True


def execute(matrix: MipMatrix, runs: Path, rows: list[str] | None = None, tasks: list[str] | None = None,
            jobs: int = 1, threads: int = 1, retry_failed: bool = False, timeout: float | None = None,
            render_only: bool = False, gpus: list[str] | None = None, select: str = "final",
            label: str = "cells") -> tuple[list[Cell], list[dict[str, Any]], int]:
    """Run the cells of ``matrix`` that have no result yet (only ``rows`` when given): each row's
    pre-training, then its downstream cells. Returns (every row's cells, their results, the number
    of rows with a pre-training)."""
    everything = []   # (row, pre-training cell or None, the downstream cells that use it)
    for spec in matrix.rows:
        down = matrix.downstream_cells(runs, spec, tasks, select)
        pres = matrix.pretrain_cells(runs, spec)
        if not pres:
            everything.append((spec["row"], None, down))
        for pre in pres:
            uses = [c for c in down if not matrix.pretrain_per_seed or c.seed == pre.seed]
            everything.append((spec["row"], pre, uses))
    plan = [(pre, down) for row, pre, down in everything if not rows or row in rows]
    cells = [c for _, pre, down in everything for c in ([pre] if pre else []) + down]   # rendered
    todo = {c.name for pre, down in plan for c in ([pre] if pre else []) + down if _todo(runs, c, retry_failed)}
    print(f"{label} ({matrix.mode}): {len(cells)} cells, {len(cells) - len(todo)} done before, {len(todo)} to run", flush=True)
    if todo and not render_only:
        prepare_data(matrix)
        prepare_splits(matrix, sorted({c.task for c in cells if c.name in todo and c.task != "pretrain"}), select)
        for c in cells:
            if c.name in todo:
                _write_cell(c, runs / "cells" / c.name)

        run = cell_runner(runs, threads, timeout, gpus)

        def row(item: tuple[Cell | None, list[Cell]]) -> None:
            pre, down = item
            if pre is not None:
                res = run(pre) if pre.name in todo else json.loads((runs / "cells" / pre.name / "result.json").read_text())
                if res.get("status") != "ok":
                    for c in down:
                        if c.name in todo:
                            write_json_atomic(runs / "cells" / c.name / "result.json", {
                                "row": c.row, "task": c.task, "seed": c.seed, "table": c.table, "key": c.key,
                                "status": "failed", "error": f"pre-training failed: {res.get('error', '')}"[:2000], "seconds": 0.0})
                    return
            for c in down:
                if c.name in todo:
                    run(c)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(row, plan))
    return cells, collect(runs, cells), len({row for row, pre, _ in everything if pre})


def run_mip(mode_file: str | Path, runs: str | Path, out: str | Path, jobs: int = 1, threads: int = 1,
            rows: list[str] | None = None, tasks: list[str] | None = None, seeds: list[int] | None = None,
            retry_failed: bool = False, timeout: float | None = None, data_root: str | None = None,
            render_only: bool = False, gpus: list[str] | None = None, select: str | None = None,
            external_weights: dict[str, str] | None = None) -> str:
    """Run the table's cells that have no result yet; render and write it; return the Markdown.
    ``select``: ``final`` / ``best`` (default: the mode file's ``select:``, else ``final``)."""
    t0 = time.perf_counter()
    matrix = load_mip_matrix(mode_file, data_root, external_weights)
    if seeds:
        matrix.seeds = list(seeds)
    select = select or matrix.select
    runs, out = Path(runs), Path(out)
    name = table_file(matrix.table)
    cells, results, n_pre = execute(matrix, runs, rows, tasks, jobs, threads, retry_failed, timeout, render_only, gpus,
                                    select, label=name)
    from ..callbacks.results import git_commit

    splits: dict[str, set[str]] = {}
    selections: dict[str, set[str]] = {}
    for r in results:
        if r.get("split") and r.get("task") != "pretrain":
            splits.setdefault(r["task"], set()).add(str(r.get("split_summary") or r["split"]))
        if r.get("status") == "ok" and r.get("task") != "pretrain":
            selections.setdefault(r["task"], set()).add(str(r.get("selection") or "final weights"))
    wall = time.perf_counter() - t0
    cell_seconds = sum(float(r.get("seconds") or 0) for r in results)
    span = _span(results)
    header = {
        "mode": f"{matrix.mode} ({matrix.mode_file})" + (f" — {'; '.join(matrix.notes)}" if matrix.notes else ""),
        "commit": git_commit(),
        "configs": f"pre-training methods {matrix.methods_dir}"
                   + (f" (+ scale presets {matrix.method_presets})" if matrix.method_presets else "")
                   + f"; fine-tuning {matrix.finetune}; budgets {matrix.pretrain_budget}, {matrix.budget} "
                     f"(files and overrides per cell: {runs}/cells/<cell>/cell.json)",
        "pre-training data": f"{matrix.pretrain_data['config']} ({matrix.pretrain_data.get('title', '')}); "
                             + (f"one pre-training per row and seed ({n_pre} rows × {len(matrix.seeds)} seeds), its last weights "
                                f"fine-tuned on every task with the same seed" if matrix.pretrain_per_seed else
                                f"one pre-training per row ({n_pre} rows, seed {matrix.pretrain_seed}), its last weights fine-tuned on every task and seed"),
        "tasks": ", ".join(f"{t}: {v.get('title', '')} ({v.get('scene', '?')}-scene)" for t, v in matrix.tasks.items()),
        "selection": _selection_line(select, selections),
        "splits (per task: sha256, train/val/test cases)": "; ".join(
            f"{t}: {' | '.join(sorted(s))}" for t, s in sorted(splits.items())) or "n/a",
        "seeds": ", ".join(map(str, matrix.seeds)),
        "cells": f"{sum(r.get('status') == 'ok' for r in results)} ok, {sum(r.get('status') != 'ok' for r in results)} failed, "
                 f"{len(cells) - len(results)} not run, of {len(cells)} runnable"
                 + (f" (this invocation: rows {', '.join(rows)})" if rows else ""),
        "time": f"this invocation {wall:.0f} s wall ({jobs} job(s) × {threads} thread(s)); all cells' own time {cell_seconds:.0f} s"
                + (f"; first cell start to last cell end {span / 60:.1f} min (interruptions included)" if span else ""),
    }
    static = static_statuses(matrix)
    titles = {t: v.get("title", "") for t, v in matrix.tasks.items()}
    scenes = {t: v.get("scene") for t, v in matrix.tasks.items()}
    md = render_mip_markdown(matrix.table, matrix.rows, results, titles, static, header,
                             reference_only=matrix.mode != "paper", notes=row_notes(matrix.rows),
                             paired_vs=matrix.paired_vs, scenes=scenes,
                             data_title=None if matrix.mode in ("paper", "phantom") else matrix.pretrain_data.get("title"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.csv").write_text(render_mip_csv(matrix.table, matrix.rows, results, list(matrix.tasks), static, scenes,
                                                  matrix.paired_vs))
    if matrix.per_structure:
        from .structures import render_structures

        (out / f"{name}_structures.md").write_text(render_structures(
            f"Table {matrix.table}", matrix.rows, results, list(matrix.tasks), base=matrix.paired_vs, header=header))
    print("\n" + md, flush=True)
    return md
