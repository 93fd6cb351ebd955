"""Two runs of one table side by side: per row, variant − reference, paired per test case within each seed.

``python -m gemini_pl.reproduce.compare RUNS_A RUNS_B [--column dice] [--out FILE]`` reads the cells'
``result.json`` of two runs folders (``<runs>/cells/<cell>/result.json``, as the table runners write
them) — e.g. a table mode and the same mode with one setting changed — matches each row, task and
seed of A with the same cell of B, and prints one markdown line per row and task: the mean of A and
of B over those seeds' cases, the per-seed mean differences A − B over the cases both scored (matched by name), their mean ±
standard deviation over seeds and the verdict of :func:`gemini_pl.claims.seed_summary`, and the
lowest structure (``dice_<class>`` columns) of each side over every seed. Only ``ok`` cells count.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..claims import paired_differences, seed_summary
from ..errors import ConfigError
from .cell import summarise
from .structures import lowest_structure, result_structure_means
from .table import per_case, stage_cases

__all__ = ["compare_runs", "load_cells"]


def load_cells(runs: str | Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """``{(row, task, seed): cell result}`` of every ok cell under ``runs/cells`` that tested cases; a
    cell that tested another checkpoint than the final weights is the row ``"<row> (<select>)"``."""
    cells = Path(runs) / "cells"
    if not cells.is_dir():
        raise ConfigError(f"{runs}: no cells/ folder (a runs folder of python -m gemini_pl.reproduce)")
    out = {}
    for path in sorted(cells.glob("*/result.json")):
        r = json.loads(path.read_text())
        if r.get("status") == "ok" and stage_cases(r):      # (pre-training cells test nothing)
            row = r["row"] if r.get("select", "final") == "final" else f"{r['row']} ({r['select']})"
            out[(row, r["task"], int(r["seed"]))] = r
    return out


def _lowest(results: dict[int, dict[str, Any]]) -> str:
    """The structure with the lowest mean in any seed of ``{seed: cell result}``, as ``name v (seed s)``."""
    low = lowest_structure({seed: result_structure_means(r) for seed, r in results.items()})
    return "–" if low is None else f"{low[1]} {low[0]:.1f} (seed {low[2]})"


def compare_runs(runs_a: str | Path, runs_b: str | Path, column: str = "dice") -> str:
    """The markdown comparison of two runs folders (module doc), rows in the order of A's cell folders."""
    a, b = load_cells(runs_a), load_cells(runs_b)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, task, seed in a:
        if (row, task, seed) in b:
            groups[(row, task)].append(seed)
    if not groups:
        raise ConfigError(f"{runs_a} and {runs_b} share no finished cell (row, task, seed)")
    lines = [f"A = {runs_a}, B = {runs_b}; {column} per test case, A − B paired within each seed",
             "", "| row | task | seeds | A | B | A − B per seed | over seeds | verdict (pairs A higher) | lowest structure A | lowest structure B |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (row, task), seeds in groups.items():
        diffs = {x: paired_differences(stage_cases(a[(row, task, x)]), stage_cases(b[(row, task, x)]), column)
                 for x in sorted(seeds)}
        seeds = [x for x in diffs if diffs[x]]           # seeds with no case scored on both sides are left out
        if not seeds:
            continue
        s = seed_summary([diffs[x] for x in seeds])
        side_a, side_b = ({x: side[(row, task, x)] for x in seeds} for side in (a, b))
        mean_a, mean_b = (summarise([summarise(per_case([r], column))["mean"] for r in side.values()])["mean"]
                          for side in (side_a, side_b))
        lines.append(
            f"| {row} | {task} | {', '.join(map(str, seeds))} | {mean_a:.1f} | {mean_b:.1f} | "
            f"{' / '.join(f'{m:+.2f}' for m in s['means'])} | {s['mean']:+.2f} ± {s['sd']:.2f} | "
            f"{s['verdict']} ({s['wins']}/{s['pairs']}) | {_lowest(side_a)} | {_lowest(side_b)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(prog="python -m gemini_pl.reproduce.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_a", help="the variant's runs folder (e.g. runs/table2_synthseg_balanced)")
    ap.add_argument("runs_b", help="the reference's runs folder (e.g. runs/table2_synthseg)")
    ap.add_argument("--column", default="dice", help="per-case column to compare (default dice)")
    ap.add_argument("--out", help="also write the markdown to this file")
    args = ap.parse_args(argv)
    text = compare_runs(args.runs_a, args.runs_b, args.column)
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
