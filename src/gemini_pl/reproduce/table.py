"""Render Table II (and the Table IV/V ablations) from the cells' ``result.json`` files.

For each row and task: our DSC (%) and AVD as mean ± std over the test cases pooled over the seeds
(the paper reports mean ± std over test cases), the spread of the per-seed means (``s``), the
paper's value and the difference ours − paper. A row without a method reads "not implemented",
a failed cell "failed" (its error is listed under the table), a cell not run yet "not run", and a
setting that the paper marks "-" (and we do not run) "-". An implemented row that stays simplified
relative to its own paper gets a footnote (``paper.NOTES``): its number in the last column, the
text under the table.

The tasks are the paper's T1–T3 unless the mode has others (e.g. ``S5`` of the SynthSeg-derived
mode, which the paper has no column for). With ``paired_vs`` (a mode file's ``paired_vs: U-Net Five``)
each task gets a column pairing every other row with that row per test case within each seed
(:func:`gemini_pl.reproduce.mip_table.paired_vs`, verdict of :func:`gemini_pl.claims.seed_summary`).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from .cell import summarise
from .paper import NOTES, TABLE2, TABLE4, TABLE5, TASKS

__all__ = ["aggregate", "footnotes", "per_case", "render_markdown", "render_csv", "stage_cases"]


def stage_cases(result: dict[str, Any], key: str = "cases") -> list[dict[str, Any]]:
    """The per-case rows (``key``) of a cell result's last stage; [] when it has none (e.g. a pre-training)."""
    return (result.get("stages") or [{}])[-1].get(key) or []


def per_case(results: list[dict[str, Any]], column: str, key: str = "cases") -> list[float]:
    """``column`` of every per-case row (``key``) of the results' last stages, as floats (NaN where missing)."""
    vals = []
    for r in results:
        for case in stage_cases(r, key):
            try:
                vals.append(float(case.get(column, math.nan)))
            except (TypeError, ValueError):
                vals.append(math.nan)
    return vals


def aggregate(results: list[dict[str, Any]], column: str) -> dict[str, float]:
    """Pooled per-case mean ± std of ``column`` over the ok results (seeds), plus the std of the seed means."""
    ok = [r for r in results if r.get("status") == "ok"]
    pooled = summarise(per_case(ok, column))
    seed_means = [summarise(per_case([r], column))["mean"] for r in ok]
    pooled["seed_std"] = summarise(seed_means)["std"]
    pooled["seeds"] = len(ok)
    return pooled


def _reg_dice(pairs_metrics: dict[str, Any]) -> Any:
    """Deformation Dice of a pairs test (``test/reg_dice``; ``dice_warped`` in results written before the rename)."""
    return pairs_metrics.get("reg_dice", pairs_metrics.get("dice_warped"))


def _pm(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "unable"
    return f"{mean:.{digits}f}±{std:.{digits}f}"


def _diff(ours: float, paper: float | None, digits: int) -> str:
    if paper is None or ours is None or not math.isfinite(ours):
        return ""
    return f"{ours - paper:+.{digits}f}"


def _cell_status(results: list[dict[str, Any]]) -> str | None:
    if not results:
        return "not run"
    if all(r.get("status") != "ok" for r in results):
        return "failed"
    return None


def table2_rows(rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: tuple[str, ...] = TASKS,
                paired_vs: str | None = None) -> list[dict[str, Any]]:
    """Long-format records (row, type, task, metric, ours, paper, diff, status, paired) for Table II;
    ``paired``: the per-case difference against the row ``paired_vs`` (None for that row itself)."""
    from .mip_table import paired_vs as pair

    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if r.get("table", "II") == "II":
            by.setdefault((r["row"], r["task"]), []).append(r)
    out = []
    for spec in rows:
        name = spec["row"]
        typ, paper = TABLE2.get(name, ("", {}))
        for task in tasks:
            p = paper.get(task)
            runs = by.get((name, task), [])
            if not spec.get("method"):
                status = "not implemented"
            elif spec.get("tasks") and task not in spec["tasks"]:
                status = "-"
            else:
                status = _cell_status(runs) or "ok"
            rec = {"row": name, "type": typ, "task": task, "status": status,
                   "errors": [r.get("error", "") for r in runs if r.get("status") != "ok"],
                   "paired": pair(by, name, paired_vs, task) if paired_vs and name != paired_vs and status == "ok" else None}
            for metric, col, idx in (("DSC", "dice", 0), ("AVD", "avd", 2)):
                agg = aggregate(runs, col) if status == "ok" else {}
                rec[metric] = {
                    "ours_mean": agg.get("mean"), "ours_std": agg.get("std"), "seed_std": agg.get("seed_std"),
                    "seeds": agg.get("seeds", 0), "cases": agg.get("n", 0), "unable": agg.get("unable", 0),
                    "paper_mean": None if p is None else p[idx], "paper_std": None if p is None else p[idx + 1],
                }
            out.append(rec)
    return out


def format_ours(rec: dict[str, Any], metric: str, digits: int) -> str:
    """One "ours" cell of a rendered table: mean±std over test cases, the std of the per-seed means
    with several seeds, the count of unable cases for AVD; the status when the cell did not run."""
    if rec["status"] != "ok":
        return rec["status"]
    m = rec[metric]
    text = _pm(m["ours_mean"], m["ours_std"], digits)
    if m["seeds"] > 1 and m["seed_std"] is not None and math.isfinite(m["seed_std"]):
        text += f" (s {m['seed_std']:.{digits}f})"
    if m["unable"] and metric == "AVD":
        text += f" [{m['unable']} unable]"
    return text


def _fmt_paper(rec: dict[str, Any], metric: str, digits: int) -> str:
    m = rec[metric]
    if m["paper_mean"] is None:
        return "unable" if metric == "AVD" and rec[("DSC")]["paper_mean"] is not None else "-"
    return _pm(m["paper_mean"], m["paper_std"], digits)


def footnotes(rows: list[dict[str, Any]], notes: dict[str, str] | None = None) -> dict[str, tuple[int, str]]:
    """Row → (number, text) of the implemented rows that have a note, numbered in the rows' order."""
    notes = NOTES if notes is None else notes
    out: dict[str, tuple[int, str]] = {}
    for spec in rows:
        if spec.get("method") and spec["row"] in notes and spec["row"] not in out:
            out[spec["row"]] = (len(out) + 1, notes[spec["row"]])
    return out


def render_markdown(rows: list[dict[str, Any]], results: list[dict[str, Any]], header: dict[str, str],
                    ablations: list[dict[str, Any]] | None = None, reference_only: bool = False,
                    notes: dict[str, str] | None = None, tasks: tuple[str, ...] = TASKS,
                    paired_vs: str | None = None) -> str:
    from .mip_table import paired_cell, paired_legend

    recs = table2_rows(rows, results, tasks, paired_vs)
    marks = footnotes(rows, notes)
    lines = ["# Table II — few-shot semi-supervised segmentation: ours vs the paper", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "DSC in %, AVD in physical units; ours = mean±std over test cases pooled over seeds, "
              "(s …) = std of the per-seed means; Δ = ours − paper."
              + (" **Not the paper's data: the paper column is a reference, not a target.**" if reference_only else "")
              + (" " + paired_legend(paired_vs) if paired_vs else ""), ""]
    pc = bool(paired_vs)
    head = "| Type | Method |" + "".join(f" {t} DSC |" + (f" {t} vs {paired_vs} (paired) |" if pc else "")
                                        + f" {t} DSC paper | Δ | {t} AVD | {t} AVD paper | Δ |" for t in tasks)
    lines += [head + " Note |", "|" + "---|" * (3 + (6 + pc) * len(tasks))]
    errors = []
    by_row: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        by_row.setdefault(rec["row"], []).append(rec)
        for e in rec["errors"]:
            errors.append(f"- {rec['row']} / {rec['task']}: {e}")
    for name, per_task in by_row.items():
        cells = [per_task[0]["type"], name]
        for rec in per_task:
            for metric, digits in (("DSC", 1), ("AVD", 2)):
                m = rec[metric]
                cells += [format_ours(rec, metric, digits)]
                if pc and metric == "DSC":
                    cells.append(paired_cell(rec) if rec["row"] != paired_vs else "-")
                cells += [_fmt_paper(rec, metric, digits), _diff(m["ours_mean"], m["paper_mean"], digits) if rec["status"] == "ok" else ""]
        cells.append(f"[{marks[name][0]}]" if name in marks else "")
        lines.append("| " + " | ".join(cells) + " |")
    if marks:
        lines += ["", "Notes (what each implemented row keeps simplified relative to its own paper):", ""]
        lines += [f"- [{i}] {name}: {text}" for name, (i, text) in marks.items()]
    if ablations:
        lines += ["", "## Ablations (T1)", "",
                  "seg DSC as above; deformation DSC (%, warped moving labels on the registration test pairs) and "
                  "folding % are per-seed means over the pairs, ± over seeds.", "", "| Table | Setting | seg DSC | paper | deformation DSC | paper | folding % | paper | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for spec in ablations:
            runs = [r for r in results if r.get("table") == spec.get("table") and r["row"] == spec["row"]]
            if spec.get("reuse"):
                runs = [r for r in results if r.get("table", "II") == "II" and r["row"] == spec["reuse"] and r["task"] in (spec.get("tasks") or ["T1"])]
            status = _cell_status(runs) or "ok"
            if not spec.get("method") and not spec.get("reuse"):
                status = "not implemented"
            ok = [r for r in runs if r.get("status") == "ok"]
            seg = summarise(per_case(ok, "dice"))
            pm = [r.get("pairs_metrics") or {} for r in ok]
            dd = summarise([_reg_dice(p) for p in pm if _reg_dice(p) is not None])
            fo = summarise([p.get("folding_percent") for p in pm if p.get("folding_percent") is not None])
            key = spec.get("key", "")
            if spec.get("table") == "IV":
                ps, pd, pf = TABLE4.get(key), None, None
            else:
                ps, pd, pf = TABLE5.get(key, (None, None, None))
            f = lambda s, d=1: _pm(s["mean"], s["std"], d) if s["n"] else "-"  # noqa: E731
            g = lambda p: _pm(p[0], p[1], 1) if p else "-"  # noqa: E731
            dd100 = {**dd, "mean": dd["mean"] * 100, "std": dd["std"] * 100} if dd["n"] and dd["mean"] <= 1.0 else dd
            lines.append(f"| {spec.get('table')} | {spec['row']} | {f(seg) if status == 'ok' else status} | {g(ps)} | "
                         f"{f(dd100) if status == 'ok' else ''} | {g(pd)} | {f(fo, 2) if status == 'ok' else ''} | {g(pf)} | {status} |")
            errors += [f"- {spec['row']}: {r.get('error', '')}" for r in runs if r.get("status") != "ok"]
    if errors:
        lines += ["", "Failed cells:", *errors]
    return "\n".join(lines) + "\n"


def _paired_csv(rec: dict[str, Any], metric: str, paired_vs: str | None) -> list[str]:
    """The paired columns of a CSV line (DSC only; empty without a paired result)."""
    p = rec.get("paired")
    if metric != "DSC" or not p or not p.get("seeds"):
        return ["", "", "", ""]
    return [str(paired_vs), f"{p['mean']:.4f}", f"{p['sd']:.4f}", str(p["verdict"])]


def render_csv(rows: list[dict[str, Any]], results: list[dict[str, Any]], notes: dict[str, str] | None = None,
               tasks: tuple[str, ...] = TASKS, paired_vs: str | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    marks = footnotes(rows, notes)
    w.writerow(["row", "type", "task", "metric", "ours_mean", "ours_std", "seed_std", "seeds", "cases", "unable",
                "paper_mean", "paper_std", "diff", "status", "error", "note", "paired_vs", "paired_mean", "paired_sd_over_seeds",
                "paired_verdict"])
    for rec in table2_rows(rows, results, tasks, paired_vs):
        for metric in ("DSC", "AVD"):
            m = rec[metric]
            diff = "" if m["ours_mean"] is None or m["paper_mean"] is None or not math.isfinite(m["ours_mean"]) \
                else f"{m['ours_mean'] - m['paper_mean']:.4f}"
            fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
            w.writerow([rec["row"], rec["type"], rec["task"], metric, fmt(m["ours_mean"]), fmt(m["ours_std"]),
                        fmt(m["seed_std"]), m["seeds"], m["cases"], m["unable"], fmt(m["paper_mean"]),
                        fmt(m["paper_std"]), diff, rec["status"], " | ".join(rec["errors"])[:500],
                        marks.get(rec["row"], (0, ""))[1], *_paired_csv(rec, metric, paired_vs)])
    return buf.getvalue()
