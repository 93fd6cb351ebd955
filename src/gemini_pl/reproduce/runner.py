"""``python -m gemini_pl.reproduce`` (``make reproduce-table2 [DATA=phantom]``): run the Table II
matrix, resumable, and render ``<out>/table2.md`` and ``<out>/table2.csv``. ``--table 3`` / ``6``
(``make reproduce TABLE=3``) runs a pre-training table instead (:mod:`gemini_pl.reproduce.mip_runner`).

Every cell runs as its own subprocess (``python -m gemini_pl.reproduce.cell``), ``--jobs`` at a
time; a finished cell has ``<runs>/cells/<cell>/result.json`` (written atomically at its end) and is
never run again — an interrupted matrix continues where it stopped. A failed cell (its result has
``status: failed`` and the error; a crash or timeout writes the same) is reported in the table and
the other cells still run; ``--retry-failed`` runs failed cells again.

Every cell tests the final weights (``--select final``, the default, as the published code does);
``--select best`` tests each cell's best ``val/seg_dice`` checkpoint instead (cells ``<cell>__best``),
which needs a validation split in every task — a task without one is refused before any cell runs.
The table's header states the policy and each task's split (hash, train/val/test counts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .cell import require_validation, write_json_atomic
from .matrix import SELECT, Cell, Matrix, load_matrix
from .table import render_csv, render_markdown

__all__ = ["run_matrix", "main", "prepare_phantoms", "prepare_splits", "collect"]


def _experiments_dir() -> Path:
    here = Path("experiments") / "table2"
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "experiments" / "table2"


def prepare_phantoms(matrix: Matrix) -> None:
    """Write the datasets of the mode's ``generate:`` entries and the phantom datasets of the tasks
    that have a ``phantom:`` entry (before any cell runs: parallel cells then only read them)."""
    from ..data.synthetic import generate_all

    phantoms = [{**spec["phantom"], "generator": "phantom", "root": matrix.task_data(task)["init_args"]["root"]}
                for task, spec in matrix.tasks.items() if spec.get("phantom")]
    generate_all([*matrix.generate, *phantoms])


def prepare_splits(matrix: Matrix, tasks: list[str] | None = None, select: str = "final") -> None:
    """Write each task's missing ``split_file`` once, from the task file's own ``seed``, before any
    cell runs: every cell (whatever its seed) then trains on the same labeled cases, validates on
    the same validation cases and is tested on the same test cases. Data that cannot be read yet is
    left to the cells (they fail naming it). ``select="best"``: a task whose split has no validation
    cases is refused (ConfigError naming it) before any cell runs."""
    import importlib

    for task, spec in matrix.tasks.items():
        if tasks is not None and task not in tasks:
            continue
        data = matrix.task_data(task)
        init = dict(data.get("init_args") or {})
        missing = bool(init.get("split_file")) and not Path(init["split_file"]).exists()
        if not missing and select != "best":
            continue
        if matrix.data_root and not spec.get("phantom"):
            init["root"] = matrix.data_root
        module, _, name = data["class_path"].rpartition(".")
        try:
            dm = getattr(importlib.import_module(module), name)(**init)
            dm.prepare_data()
            getattr(dm, "no_validation", lambda: None)()  # fixes the split (reads no image)
        except Exception as exc:  # noqa: BLE001 - reported; the cells fail with the data error
            print(f"table2: {task}: split of {init.get('split_file') or 'the listing'} not checked "
                  f"({type(exc).__name__}: {exc})", flush=True)
            continue
        if select == "best":
            require_validation(task, dm)


def _write_cell(cell: Cell, cdir: Path) -> None:
    cdir.mkdir(parents=True, exist_ok=True)
    stages = [{k: st.get(k) for k in ("name", "configs", "overrides", "test", "init_from_stage", "init_from", "count_flops")} for st in cell.stages]
    spec = {"row": cell.row, "task": cell.task, "seed": cell.seed, "table": cell.table, "key": cell.key,
            "pairs_test": cell.pairs_test, "select": cell.select, "stages": stages}
    (cdir / "cell.json").write_text(json.dumps(spec, indent=1))


def cell_runner(runs: Path, threads: int, timeout: float | None, gpus: list[str] | None):
    """A function running one cell (in ``<runs>/cells/<name>``) on a free GPU of ``gpus`` (each
    GPU one cell at a time; none: CPU), printing one line per finished cell; returns its result.
    Safe to call from several threads."""
    import queue

    free: queue.Queue = queue.Queue()
    for g in gpus or []:
        free.put(g)

    def run(c: Cell) -> dict[str, Any]:
        gpu = free.get() if gpus else None
        try:
            r = _run_one(c, runs / "cells" / c.name, threads, timeout, gpu)
        finally:
            if gpus:
                free.put(gpu)
        msg = f"{r.get('seconds', 0):.0f} s" if r["status"] == "ok" else f"FAILED: {r.get('error', '')[:200]}"
        print(f"  {c.name}: {msg}", flush=True)
        return r

    return run


def _run_one(cell: Cell, cdir: Path, threads: int, timeout: float | None, gpu: str | None = None) -> dict[str, Any]:
    result_path = cdir / "result.json"
    env = dict(os.environ, GEMINI_THREADS=str(threads), WANDB_SILENT="true")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.setdefault("WANDB_MODE", "offline")
    t0 = time.perf_counter()
    with open(cdir / "log.txt", "w") as log:
        try:
            subprocess.run([sys.executable, "-m", "gemini_pl.reproduce.cell", str(cdir)], stdout=log, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout, check=False)
            why = "the cell process ended without a result (crash?)"
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:.0f} s"
    if not result_path.exists():
        tail = (cdir / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
        write_json_atomic(result_path, {"row": cell.row, "task": cell.task, "seed": cell.seed, "table": cell.table,
                                        "key": cell.key, "status": "failed", "error": f"{why}; log: {' / '.join(tail)}"[:2000],
                                        "seconds": time.perf_counter() - t0})
    return json.loads(result_path.read_text())


def _span(results: list[dict[str, Any]]) -> float | None:
    """Seconds from the first cell's start to the last cell's end (from the results' timestamps)."""
    import datetime as dt

    times = []
    for r in results:
        try:
            t = dt.datetime.strptime(r["started"], "%Y-%m-%d %H:%M:%S").timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        times.append((t, t + float(r.get("seconds") or 0)))
    return max(e for _, e in times) - min(s for s, _ in times) if times else None


def collect(runs: Path, cells: list[Cell]) -> list[dict[str, Any]]:
    out = []
    for c in cells:
        p = runs / "cells" / c.name / "result.json"
        if p.exists():
            out.append(json.loads(p.read_text()))
    return out


def run_matrix(mode_file: str | Path, runs: str | Path, out: str | Path, jobs: int = 1, threads: int = 1,
               rows: list[str] | None = None, tasks: list[str] | None = None, seeds: list[int] | None = None,
               retry_failed: bool = False, timeout: float | None = None, data_root: str | None = None,
               render_only: bool = False, gpus: list[str] | None = None, select: str = "final") -> str:
    """Run the cells that have no result yet; render and write the tables; return the Markdown.
    ``select``: ``final`` (test the final weights) or ``best`` (the best validation checkpoint)."""
    t0 = time.perf_counter()
    matrix = load_matrix(mode_file, data_root)
    if seeds:
        matrix.seeds = list(seeds)
    runs, out = Path(runs), Path(out)
    cells = matrix.cells(runs, rows, tasks, select=select)
    todo = []
    for c in cells:
        res = runs / "cells" / c.name / "result.json"
        if res.exists():
            status = json.loads(res.read_text()).get("status")
            if status == "ok" or not retry_failed:
                continue
            res.unlink()
        todo.append(c)
    print(f"table2 ({matrix.mode}): {len(cells)} cells, {len(cells) - len(todo)} done before, {len(todo)} to run", flush=True)
    if todo and not render_only:
        prepare_phantoms(matrix)
        prepare_splits(matrix, sorted({c.task for c in todo}), select)
        for c in todo:
            _write_cell(c, runs / "cells" / c.name)

        go = cell_runner(runs, threads, timeout, gpus)
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(go, todo))
    results = collect(runs, cells)
    from ..callbacks.results import git_commit

    splits: dict[str, set[str]] = {}
    selections: dict[str, set[str]] = {}
    for r in results:
        if r.get("split"):
            splits.setdefault(r["task"], set()).add(str(r.get("split_summary") or r["split"]))
        if r.get("status") == "ok":
            selections.setdefault(r["task"], set()).add(str(r.get("selection") or "final weights"))
    wall = time.perf_counter() - t0
    cell_seconds = sum(float(r.get("seconds") or 0) for r in results)
    span = _span(results)
    header = {
        "mode": f"{matrix.mode} ({matrix.mode_file})" + (f" — {'; '.join(matrix.notes)}" if matrix.notes else ""),
        "commit": git_commit(),
        "configs": f"{matrix.config_dir} (files and overrides per cell: {runs}/cells/<cell>/cell.json; resolved: <cell>/<stage>.yaml)",
        "tasks": ", ".join(f"{t}: {v.get('title', '')}" for t, v in matrix.tasks.items()),
        "selection": _selection_line(select, selections),
        "splits (per task: sha256, train/val/test cases)": "; ".join(
            f"{t}: {' | '.join(sorted(s))}" for t, s in sorted(splits.items())) or "n/a",
        "seeds": ", ".join(map(str, matrix.seeds)),
        "cells": f"{sum(r.get('status') == 'ok' for r in results)} ok, {sum(r.get('status') != 'ok' for r in results)} failed, "
                 f"{len(cells) - len(results)} not run, of {len(cells)}",
        "time": f"this invocation {wall:.0f} s wall ({jobs} job(s) × {threads} thread(s)); all cells' own time {cell_seconds:.0f} s"
                + (f"; first cell start to last cell end {span / 60:.1f} min (interruptions included)" if span else ""),
    }
    from .paper import TASKS

    shown = TASKS if set(matrix.tasks) <= set(TASKS) else tuple(matrix.tasks)
    md = render_markdown(matrix.rows, results, header, matrix.ablations, reference_only=matrix.mode != "paper",
                         tasks=shown, paired_vs=matrix.paired_vs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table2.md").write_text(md)
    (out / "table2.csv").write_text(render_csv(matrix.rows, results, tasks=shown, paired_vs=matrix.paired_vs))
    if matrix.per_structure:
        from .structures import render_structures

        (out / "table2_structures.md").write_text(render_structures(
            "Table II", matrix.rows, results, list(matrix.tasks), base=matrix.paired_vs, header=header))
    print("\n" + md, flush=True)
    return md


def _selection_line(select: str, selections: dict[str, set[str]]) -> str:
    """The header's selection policy: the cells' own (``selection`` of their results) per task."""
    from ..callbacks.results import FINAL_WEIGHTS

    policies = {p for s in selections.values() for p in s}
    if select == "final" and policies <= {FINAL_WEIGHTS}:
        return f"{FINAL_WEIGHTS} (every cell tests its weights after the last training step; no checkpoint selection)"
    per_task = "; ".join(f"{t}: {' | '.join(sorted(s))}" for t, s in sorted(selections.items()))
    return f"--select {select}: {per_task or 'no cell finished'}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gemini_pl.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--table", choices=["2", "3", "6"], default="2",
                   help="2: Table II (GEMINI-Semi and the semi-supervised rows); 3 / 6: the pre-training tables "
                        "(each row pre-trained once, fine-tuned on every task: gemini_pl.reproduce.mip)")
    p.add_argument("--init-from", nargs="*", default=None, metavar="ROW=FILE",
                   help="tables 3/6: weights of a row that needs external ones (e.g. ImageNet=/path/weights.pth)")
    p.add_argument("--data", choices=["real", "phantom", "mni", "synthseg"], default="real",
                   help="real data (paper scale), phantoms (small budgets), for table 3 the MNI152-derived "
                        "real-anatomy mode (three seeds, paired differences against Scratch; results/mni), or for "
                        "tables 2 and 3 the SynthSeg-derived real-variability mode (a few rows, three seeds, paired "
                        "differences and per-structure Dice; results/synthseg)")
    p.add_argument("--mode-file", default=None, help="a mode file (default experiments/table2/<data>.yaml: paper, phantom or synthseg)")
    p.add_argument("--runs", default=None, help="cell folders (default runs/table2, or runs/table2_<data>)")
    p.add_argument("--out", default=None, help="table folder (default results, or results/<data>)")
    p.add_argument("--jobs", type=int, default=1, help="cells run at the same time")
    p.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default)")
    p.add_argument("--rows", nargs="*", default=None, help="only these rows (names as in the table)")
    p.add_argument("--tasks", nargs="*", default=None, choices=["T1", "T2", "T3"])
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="override the mode file's seeds")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    p.add_argument("--data-root", default=None, help="root of the real datasets (data/README.md layout)")
    p.add_argument("--gpus", nargs="*", default=None,
                   help="GPU ids: each running cell gets one (CUDA_VISIBLE_DEVICES); use with --jobs = number of GPUs")
    p.add_argument("--render-only", action="store_true", help="only render the tables from the results there are")
    p.add_argument("--select", choices=SELECT, default=None,
                   help="weights each cell tests: final (default, as the published code; tables 3/6: the mode file's "
                        "select:) or best (the best val/seg_dice checkpoint; needs a validation split in every task; "
                        "cells <cell>__best)")
    a = p.parse_args(argv)
    if a.data == "mni" and a.table != "3":
        p.error(f"--data mni: only table 3 has a real-anatomy mode (experiments/mip/table3/mni.yaml), not table {a.table}")
    if a.data == "synthseg" and a.table == "6":
        p.error("--data synthseg: tables 2 and 3 have a SynthSeg-derived mode, not table 6")
    if a.table != "2":
        from .mip_runner import run_mip

        weights = {}
        for item in a.init_from or []:
            row, sep, path = item.partition("=")
            if not sep:
                p.error(f"--init-from {item}: expected ROW=FILE")
            weights[row] = path
        tag = f"table{a.table}"
        mode = {"real": "paper"}.get(a.data, a.data)
        mode_file = a.mode_file or str(_experiments_dir().parent / "mip" / tag / f"{mode}.yaml")
        run_mip(mode_file, a.runs or (f"runs/{tag}_{a.data}" if a.data != "real" else f"runs/{tag}"),
                a.out or (f"results/{a.data}" if a.data != "real" else "results"), jobs=a.jobs, threads=a.threads, rows=a.rows,
                tasks=a.tasks, seeds=a.seeds, retry_failed=a.retry_failed, timeout=a.timeout, data_root=a.data_root,
                render_only=a.render_only, gpus=a.gpus, select=a.select, external_weights=weights)
        return
    mode = {"real": "paper"}.get(a.data, a.data)
    mode_file = a.mode_file or str(_experiments_dir() / f"{mode}.yaml")
    run_matrix(mode_file, a.runs or (f"runs/table2_{a.data}" if a.data != "real" else "runs/table2"),
               a.out or (f"results/{a.data}" if a.data != "real" else "results"), jobs=a.jobs, threads=a.threads, rows=a.rows,
               tasks=a.tasks, seeds=a.seeds, retry_failed=a.retry_failed, timeout=a.timeout, data_root=a.data_root,
               render_only=a.render_only, gpus=a.gpus, select=a.select or "final")


if __name__ == "__main__":  # pragma: no cover
    main()
