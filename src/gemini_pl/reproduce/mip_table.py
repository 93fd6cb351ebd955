"""Render a pre-training table (III or VI) from its cells' ``result.json`` files.

Per row and task: our DSC (%) and AVD as mean ± std over the test cases pooled over the seeds (as
Table II, :func:`gemini_pl.reproduce.table.aggregate`), the paper's value and ours − paper; per row:
the average DSC over the table's tasks (the paper's AVG column), the **gap coefficient** and the
**pre-training cost** (GFLOPs of one counted training step; Table IX) with its wall time.

Gap coefficient (:func:`gap_coefficient`): the paper's Table VII is not among the numbers this
project holds, so its formula is not reproduced here. What is computed instead, for ours and — by
the same formula — from the paper's Table III/VI DSCs, is the difference between what a
pre-training gains over Scratch on the inner-scene tasks and on the inter-scene tasks::

    G = mean_{t inner}(DSC_row,t − DSC_Scratch,t) − mean_{t inter}(DSC_row,t − DSC_Scratch,t)

(DSC in %; ``None`` unless both kinds of task have a number; 0 for Scratch). G > 0: the
pre-training helps more on the pre-training data's own scene than across scenes.

Paired column (mode files with ``paired_vs: <row>``, as Table II's; e.g. ``paired_vs: Scratch (2D
U-Net)``): per row and task, the per-case Dice difference row − that row within each seed (the same
test cases, matched by name), summarised over seeds by :func:`gemini_pl.claims.seed_summary` — mean ± std of the per-seed means, the verdict
("holds": better in every seed and mean > 2 s.e.; "reversed"; "not significant") and how many
seed × case pairs the row scored higher on.

Statuses: "not implemented" (no method file), "needs external weights" (Sup rows), "not run: 2D→3D
slice-wise transfer", "not run" (no result yet), "failed" (the errors are listed under the table).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from ..claims import paired_differences, seed_summary
from .paper_mip import MIP_TABLES, SCENES, TABLE9_DOWNSTREAM, TABLE9_FLOPS
from .table import _cell_status, _pm, aggregate, format_ours, stage_cases

__all__ = ["gap_coefficient", "paired_cell", "paired_legend", "paired_vs", "mip_records", "render_mip_markdown", "render_mip_csv", "row_notes", "SCRATCH"]

#: the Scratch row's name starts with this (Table III "Scratch (2D U-Net)", Table VI "Scratch (3D U-Net)")
SCRATCH = "Scratch"
_NUMBER = {"III": 3, "VI": 6}


def gap_coefficient(dsc: dict[str, float | None], scratch: dict[str, float | None], scenes: dict[str, str]) -> float | None:
    """``G`` of the module doc from per-task DSCs of a row and of Scratch (``scenes``: task → inner/inter)."""
    gains: dict[str, list[float]] = {"inner": [], "inter": []}
    for task, kind in scenes.items():
        a, b = dsc.get(task), scratch.get(task)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        gains[kind].append(a - b)
    if not gains["inner"] or not gains["inter"]:
        return None
    return sum(gains["inner"]) / len(gains["inner"]) - sum(gains["inter"]) / len(gains["inter"])


def task_scenes(table: str, scenes: dict[str, str | None] | None = None) -> dict[str, str]:
    """Task → inner/inter: the paper's (``SCENES``), overridden by the mode's own where it names one."""
    return {**SCENES[table], **{t: s for t, s in (scenes or {}).items() if s}}


def _fin(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def mip_records(table: str, rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: list[str],
                static: dict[str, str | None], scenes: dict[str, str] | None = None,
                base: str | None = None) -> list[dict[str, Any]]:
    """One record per row: ``{row, type, status, tasks: {task: {status, DSC, AVD, errors}}, avg, gap,
    pretrain: {...}}``. ``static``: ``"<row>|<task>"`` or ``"<row>"`` → a status fixed before any run
    (not implemented, needs external weights, slice-wise), ``None`` for cells that run; ``scenes``:
    task → inner/inter (default: the paper's, ``SCENES``); ``base``: the row each task's ``paired``
    difference is taken against (default the Scratch row; named in the difference's ``vs``)."""
    paper = MIP_TABLES[table]
    scenes = {t: s for t, s in task_scenes(table, scenes).items() if t in tasks}
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["row"], r["task"]), []).append(r)
    recs = []
    for spec in rows:
        name = spec["row"]
        typ, pap = paper.get(name, (spec.get("type", ""), {}))
        typ = spec.get("type", typ)
        rec: dict[str, Any] = {"row": name, "type": typ, "status": static.get(name), "tasks": {}}
        for task in tasks:
            p = pap.get(task)
            runs = by.get((name, task), [])
            status = static.get(name) or static.get(f"{name}|{task}") or _cell_status(runs) or "ok"
            t: dict[str, Any] = {"status": status, "errors": [r.get("error", "") for r in runs if r.get("status") != "ok"]}
            for metric, col, idx in (("DSC", "dice", 0), ("AVD", "avd", 2)):
                agg = aggregate(runs, col) if status == "ok" else {}
                t[metric] = {"ours_mean": agg.get("mean"), "ours_std": agg.get("std"), "seed_std": agg.get("seed_std"),
                             "seeds": agg.get("seeds", 0), "cases": agg.get("n", 0), "unable": agg.get("unable", 0),
                             "paper_mean": None if p is None else p[idx], "paper_std": None if p is None else p[idx + 1]}
            flops = [_fin(r.get("stages", [{}])[-1].get("flops_per_step")) for r in runs if r.get("status") == "ok"]
            t["flops"] = next((f for f in flops if f is not None), None)
            rec["tasks"][task] = t
        ours = {k: _fin(v["DSC"]["ours_mean"]) for k, v in rec["tasks"].items()}
        theirs = {k: v["DSC"]["paper_mean"] for k, v in rec["tasks"].items()}
        done = [v for v in ours.values() if v is not None]
        rec["avg"] = {"ours": sum(done) / len(done) if done else None, "tasks": len(done),
                      "paper": sum(v for v in theirs.values() if v is not None) / len(tasks)
                      if all(v is not None for v in theirs.values()) else None}
        rec["_dsc"] = (ours, theirs)
        pre = by.get((name, "pretrain"), [])
        st = pre[0]["stages"][0] if pre and pre[0].get("status") == "ok" and pre[0].get("stages") else {}
        rec["pretrain"] = {
            "status": "none" if not spec.get("pretrain") else (static.get(name) or _cell_status(pre) or "ok"),
            "flops": _fin(st.get("flops_per_step")), "seconds": _fin(st.get("fit_seconds")),
            "steps": st.get("optimizer_steps"), "iterations": st.get("iterations"), "paper_gflops": TABLE9_FLOPS.get(name) if table == "III" else None,
            "errors": [r.get("error", "") for r in pre if r.get("status") != "ok"]}
        recs.append(rec)
    scratch = next((r for r in recs if r["row"].startswith(SCRATCH)), None)
    base = base or (scratch["row"] if scratch else None)
    for rec in recs:
        for task, t in rec["tasks"].items():
            t["paired"] = None if base is None or rec["row"] == base else {**paired_vs(by, rec["row"], base, task), "vs": base}
    for rec in recs:
        if scratch is None:
            rec["gap"] = {"ours": None, "paper": None}
            continue
        rec["gap"] = {"ours": gap_coefficient(rec["_dsc"][0], scratch["_dsc"][0], scenes),
                      "paper": gap_coefficient(rec["_dsc"][1], scratch["_dsc"][1], scenes)}
    for rec in recs:
        del rec["_dsc"]
    return recs


def paired_vs(by: dict[tuple[str, str], list[dict[str, Any]]], row: str, base: str, task: str) -> dict[str, Any]:
    """:func:`gemini_pl.claims.seed_summary` of the per-case Dice differences ``row − base`` on
    ``task``, paired within each seed that both finished."""
    ok = lambda name: {r["seed"]: r for r in by.get((name, task), []) if r.get("status") == "ok"}  # noqa: E731
    a, b = ok(row), ok(base)
    return seed_summary([paired_differences(stage_cases(a[s]), stage_cases(b[s]), "dice") for s in sorted(a) if s in b])


def paired_legend(base: str) -> str:
    """The sentence under a table that explains its paired column against the row ``base``."""
    return (f"vs {base} (paired) = per-case DSC difference row − {base} within each seed, mean ± std of the "
            "per-seed means over seeds, the verdict (holds: higher in every seed and mean > 2 s.e. over seeds; "
            "reversed: the same, lower; otherwise not significant) and the seed × case pairs where the row is higher.")


def paired_cell(t: dict[str, Any]) -> str:
    """A paired column's cell: mean ± std over seeds, the verdict and the pairs where the row is higher."""
    p = t.get("paired")
    if not p or not p["seeds"]:
        return "-"
    spread = f"{p['mean']:+.2f} ± {p['sd']:.2f}" if p["seeds"] > 1 else f"{p['mean']:+.2f}"
    return f"{spread} ({p['verdict']}; higher on {p['wins']}/{p['pairs']})"


def _num(v: float | None, digits: int, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _paper(t: dict[str, Any], metric: str, digits: int) -> str:
    m = t[metric]
    return "-" if m["paper_mean"] is None else _pm(m["paper_mean"], m["paper_std"], digits)


def _delta(t: dict[str, Any], metric: str, digits: int) -> str:
    m = t[metric]
    if t["status"] != "ok" or m["paper_mean"] is None or m["ours_mean"] is None or not math.isfinite(m["ours_mean"]):
        return ""
    return f"{m['ours_mean'] - m['paper_mean']:+.{digits}f}"


def _gflops(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e9:.3g}"


def row_notes(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Row → what it keeps simplified relative to its own paper: the method module's "Simplified
    here" paragraph (:func:`gemini_pl.modules.mip.simplified`), or Table II's note of the dense rows."""
    from .paper import NOTES

    try:
        from ..modules.mip import METHODS, simplified
    except ImportError:  # pragma: no cover - the pre-training modules are optional here
        METHODS, simplified = {}, None
    out = {}
    for spec in rows:
        key = spec.get("pretrain")
        text = ""
        if key and key in METHODS and simplified is not None:
            text = simplified(key)
        text = text or NOTES.get(spec["row"], "")
        if text:
            out[spec["row"]] = text
    return out


def render_mip_markdown(table: str, rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: dict[str, str],
                        static: dict[str, str | None], header: dict[str, str], reference_only: bool = False,
                        notes: dict[str, str] | None = None, paired_vs: str | None = None,
                        scenes: dict[str, str] | None = None, data_title: str | None = None) -> str:
    """The Markdown table. ``tasks``: task → title (in the table's order); ``notes``: row → footnote
    (numbered after the row's name) for the rows that run; ``paired_vs``: a row, add each task's paired
    difference against it (module doc); ``scenes``: task → inner/inter (default the paper's);
    ``data_title``: the pre-training data of a mode that is not the paper's (named in the title)."""
    names = list(tasks)
    scenes = task_scenes(table, scenes)
    recs = mip_records(table, rows, results, names, static, scenes, paired_vs)
    paired = paired_vs is not None
    title = {"III": "Table III — pre-training on 2D chest X-rays (ChestX-ray8), fine-tuned on every task",
             "VI": "Table VI — pre-training on 3D brain MRI (PPMI), fine-tuned on every task"}[table]
    if data_title:
        title = f"Table {table}'s rows — here pre-trained on {data_title}, fine-tuned on {', '.join(tasks.values())}"
    lines = [f"# {title}: ours" + ("" if data_title else " vs the paper"), ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "DSC in %, AVD in physical units; ours = mean±std over test cases pooled over seeds, (s …) = std of the "
              "per-seed means; Δ = ours − paper; AVG = mean DSC over the tasks (ours: over the tasks that ran, "
              "their number in brackets when fewer); gap = gap coefficient G (inner-scene gain over Scratch − "
              "inter-scene gain, DSC points; definition in gemini_pl.reproduce.mip_table, the paper column computed "
              "from the paper's DSCs by the same formula); pre-training GFLOPs = one counted training step (iteration) of the "
              "row's own pre-training run (its input size, batch and widths), paper = Table IX (2D, paper scale)."
              + (" **Not the paper's data: the paper columns are a reference, not a target.**" if reference_only else "")
              + (" " + paired_legend(paired_vs) if paired else ""), ""]
    head = "| Type | Pre-training |" + "".join(
        f" {t} ({scenes.get(t, '?')}) DSC |" + (f" {t} vs {paired_vs} (paired) |" if paired else "")
        + f" paper | Δ | {t} AVD | paper | Δ |" for t in names)
    head += " AVG DSC | paper | gap G | paper | pre-training GFLOPs/step | Table IX | pre-training time |"
    lines += [head, "|" + "---|" * (2 + (6 + paired) * len(names) + 7)]
    errors = []
    marks = {row: i + 1 for i, row in enumerate(r for r in (notes or {}) if not static.get(r))}
    for rec in recs:
        cells = [rec["type"], rec["row"] + (f" [{marks[rec['row']]}]" if rec["row"] in marks else "")]
        for t in names:
            tr = rec["tasks"][t]
            for metric, digits in (("DSC", 1), ("AVD", 2)):
                cells += [format_ours(tr, metric, digits)] + ([paired_cell(tr)] if paired and metric == "DSC" else [])
                cells += [_paper(tr, metric, digits), _delta(tr, metric, digits)]
            errors += [f"- {rec['row']} / {t}: {e}" for e in tr["errors"]]
        avg = rec["avg"]
        ours_avg = _num(avg["ours"], 1) + (f" ({avg['tasks']} of {len(names)})" if avg["ours"] is not None and avg["tasks"] < len(names) else "")
        pre = rec["pretrain"]
        its = pre.get("iterations") or pre["steps"]
        opt = f" ({pre['steps']} optimizer steps)" if pre.get("iterations") and pre["steps"] != pre["iterations"] else ""
        ptime = (f"{pre['seconds']:.0f} s, {its} iterations{opt}" if pre["seconds"] is not None else
                 ("-" if pre["status"] == "none" else pre["status"]))
        cells += [ours_avg, _num(avg["paper"], 1), _num(rec["gap"]["ours"], 1, True), _num(rec["gap"]["paper"], 1, True),
                  _gflops(pre["flops"]) if pre["status"] != "none" else "-",
                  "-" if pre["paper_gflops"] is None else f"{pre['paper_gflops']:.2f}", ptime]
        errors += [f"- {rec['row']} / pre-training: {e}" for e in pre["errors"]]
        lines.append("| " + " | ".join(cells) + " |")
    down = {t: next((rec["tasks"][t]["flops"] for rec in recs if rec["tasks"][t]["flops"] is not None), None) for t in names}
    lines += ["", "Fine-tuning GFLOPs per step (counted, first row that ran): "
              + ", ".join(f"{t} {_gflops(v)}" for t, v in down.items())
              + (f"; paper (Table IX, 2D): {TABLE9_DOWNSTREAM:.2f}" if table == "III" else "") + "."]
    if marks:
        lines += ["", "Notes (what each row keeps simplified relative to its own paper):", ""]
        lines += [f"- [{i}] {row}: {notes[row]}" for row, i in marks.items()]
    if errors:
        lines += ["", "Failed cells:", *errors]
    return "\n".join(lines) + "\n"


def render_mip_csv(table: str, rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: list[str],
                   static: dict[str, str | None], scenes: dict[str, str] | None = None,
                   paired_vs: str | None = None) -> str:
    """Long format: per row, task and metric (DSC, AVD, ``DSC_PAIRED_VS <row>``: the paired difference
    against ``paired_vs``, default the Scratch row, its verdict in ``status``), then per row ``all`` ×
    (AVG_DSC, GAP, PRETRAIN_GFLOPS) and per row and task FINETUNE_GFLOPS."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "row", "type", "task", "metric", "ours_mean", "ours_std", "seed_std", "seeds", "cases", "unable",
                "paper_mean", "paper_std", "diff", "status", "error"])
    f = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    for rec in mip_records(table, rows, results, list(tasks), static, scenes, paired_vs):
        for t, tr in rec["tasks"].items():
            for metric in ("DSC", "AVD"):
                m = tr[metric]
                diff = None if m["ours_mean"] is None or m["paper_mean"] is None or not math.isfinite(m["ours_mean"]) \
                    else m["ours_mean"] - m["paper_mean"]
                w.writerow([table, rec["row"], rec["type"], t, metric, f(m["ours_mean"]), f(m["ours_std"]), f(m["seed_std"]),
                            m["seeds"], m["cases"], m["unable"], f(m["paper_mean"]), f(m["paper_std"]), f(diff),
                            tr["status"], " | ".join(tr["errors"])[:500]])
            if tr.get("paired") and tr["paired"]["seeds"]:
                p = tr["paired"]
                w.writerow([table, rec["row"], rec["type"], t, f"DSC_PAIRED_VS {p['vs']}", f(p["mean"]), f(p["sd"]), "", p["seeds"],
                            p["pairs"], "", "", "", "", p["verdict"], ""])
            w.writerow([table, rec["row"], rec["type"], t, "FINETUNE_GFLOPS", f(None if tr["flops"] is None else tr["flops"] / 1e9),
                        "", "", "", "", "", f(TABLE9_DOWNSTREAM if table == "III" else None), "", "", tr["status"], ""])
        a, g, p = rec["avg"], rec["gap"], rec["pretrain"]
        diff = None if a["ours"] is None or a["paper"] is None else a["ours"] - a["paper"]
        w.writerow([table, rec["row"], rec["type"], "all", "AVG_DSC", f(a["ours"]), "", "", "", a["tasks"], "", f(a["paper"]), "",
                    f(diff), rec["status"] or "ok", ""])
        w.writerow([table, rec["row"], rec["type"], "all", "GAP", f(g["ours"]), "", "", "", "", "", f(g["paper"]), "", "",
                    rec["status"] or "ok", ""])
        w.writerow([table, rec["row"], rec["type"], "pretrain", "PRETRAIN_GFLOPS", f(None if p["flops"] is None else p["flops"] / 1e9),
                    "", "", "", "", "", f(p["paper_gflops"]), "", "", p["status"], " | ".join(p["errors"])[:500]])
    return buf.getvalue()
