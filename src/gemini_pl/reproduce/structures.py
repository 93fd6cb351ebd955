"""Per-structure Dice of a table's rows (``<out>/table2_structures.md``, ``table3_structures.md``).

A mode file with ``per_structure: true`` asks for it. For each row, task and seed the cell's
per-case test rows (``dice_<structure>`` columns, in %, :mod:`gemini_pl.modules.seg_eval`) give
each structure's mean over the test cases — a case whose structure is absent from both label maps
(NaN) is left out of that structure's mean. The table has one line per row and seed; under it, per
row, the lowest structure mean over its seeds and every structure that falls under ``near_zero``
(default 10 %) in some seed — a structure "lost" — and, with ``base`` (the row the others are
paired against), each structure's difference row − base, per seed, then mean over seeds.
"""

from __future__ import annotations

import math
from typing import Any

from .cell import summarise
from .table import per_case, stage_cases

__all__ = ["NEAR_ZERO", "lowest_structure", "render_structures", "result_structure_means", "structure_means"]

#: a structure whose mean Dice over the test cases is under this (%) counts as lost
NEAR_ZERO = 10.0


def structure_means(results: list[dict[str, Any]], row: str, task: str) -> dict[int, dict[str, float]]:
    """``{seed: {structure: mean Dice % over the test cases}}`` of the finished cells of ``row`` on
    ``task`` (structures in the cases' column order; NaN cases left out; NaN when none is left)."""
    out: dict[int, dict[str, float]] = {}
    for r in results:
        if r.get("row") != row or r.get("task") != task or r.get("status") != "ok":
            continue
        out[int(r["seed"])] = result_structure_means(r)
    return dict(sorted(out.items()))


def result_structure_means(result: dict[str, Any]) -> dict[str, float]:
    """``{structure: mean Dice % over the test cases}`` of one cell result (its ``dice_<structure>``
    columns in the cases' order; NaN cases left out; NaN when none is left)."""
    cases = stage_cases(result)
    names = [k[len("dice_"):] for k in (cases[0] if cases else {}) if k.startswith("dice_")]
    return {name: summarise(per_case([result], f"dice_{name}"))["mean"] for name in names}


def lowest_structure(seeds: dict[int, dict[str, float]]) -> tuple[float, str, int] | None:
    """``(mean, structure, seed)`` of the lowest finite structure mean over ``{seed: {structure: mean}}``
    (a tie goes to the first structure name, then seed, in sort order); None when there is none."""
    return min(((v, n, s) for s, m in seeds.items() for n, v in m.items() if math.isfinite(v)), default=None)


def _f(v: float, sign: bool = False) -> str:
    return "-" if not math.isfinite(v) else (f"{v:+.1f}" if sign else f"{v:.1f}")


def render_structures(title: str, rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: list[str],
                      base: str | None = None, header: dict[str, str] | None = None, near_zero: float = NEAR_ZERO) -> str:
    """The Markdown of the per-structure Dice of ``rows`` (in order) on each of ``tasks`` (see the module doc)."""
    lines = [f"# {title}: Dice per structure", ""]
    lines += [f"- {k}: {v}" for k, v in (header or {}).items()]
    lines += ["", f"Dice in %: per row and seed, each structure's mean over the test cases (a case without the "
              f"structure in either label map left out); 'lost' = a structure mean under {near_zero:g} % in a seed."
              + (f" Δ vs {base}: per structure, row − {base} per seed, then the mean over seeds." if base else ""), ""]
    for task in tasks:
        per_row = {spec["row"]: structure_means(results, spec["row"], task) for spec in rows}
        names: list[str] = []
        for seeds in per_row.values():
            for means in seeds.values():
                names += [n for n in means if n not in names]
        if not names:
            lines += [f"## {task}", "", "No finished cell with per-structure columns.", ""]
            continue
        lines += [f"## {task}", "", "| row | seed | mean | " + " | ".join(n.replace("_", " ") for n in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for row, seeds in per_row.items():
            for seed, means in seeds.items():
                vals = [means.get(n, math.nan) for n in names]
                lines.append(f"| {row} | {seed} | {_f(summarise(vals)['mean'])} | " + " | ".join(_f(v) for v in vals) + " |")
        lines.append("")
        base_seeds = per_row.get(base, {}) if base else {}
        for row, seeds in per_row.items():
            if not seeds:
                lines.append(f"- {row}: no finished cell.")
                continue
            low = lowest_structure(seeds)
            lost = sorted({(n, s) for s, m in seeds.items() for n in names if m.get(n, math.nan) < near_zero},
                          key=lambda t: (names.index(t[0]), t[1]))
            text = f"- {row}: lowest structure mean {_f(low[0])} % ({low[1].replace('_', ' ')}, seed {low[2]})" if low else f"- {row}:"
            text += ("; lost: " + ", ".join(f"{n.replace('_', ' ')} (seed {s})" for n, s in lost)) if lost else \
                f"; no structure under {near_zero:g} % in any of {len(seeds)} seed(s)"
            lines.append(text + ".")
        if base and base_seeds:
            lines += ["", f"Δ vs {base} (mean over the seeds both finished):", "",
                      "| row | seeds | mean | " + " | ".join(n.replace("_", " ") for n in names) + " |",
                      "|---|---|---|" + "---|" * len(names)]
            for row, seeds in per_row.items():
                common = [s for s in seeds if s in base_seeds]
                if row == base or not common:
                    continue
                deltas = [summarise([seeds[s].get(n, math.nan) - base_seeds[s].get(n, math.nan) for s in common])["mean"] for n in names]
                lines.append(f"| {row} | {len(common)} | {_f(summarise(deltas)['mean'], True)} | " + " | ".join(_f(d, True) for d in deltas) + " |")
        lines.append("")
    return "\n".join(lines)
