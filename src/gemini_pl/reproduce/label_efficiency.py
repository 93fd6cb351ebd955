"""Label-efficiency curves: fine-tuning Dice versus the number of labeled images.

``python -m gemini_pl.reproduce.label_efficiency`` runs the mode file
``experiments/mip/label_efficiency/mni.yaml`` (a :class:`~gemini_pl.reproduce.mip.MipMatrix`: each
row — Scratch, Models Genesis, GEMINI-MIP — pre-trained once on the unlabeled MNI152-derived
subjects, its backbone fine-tuned once per label count and seed; every *task* of the mode file is
one label count, ``labels: k`` with ``set: {data.init_args.num_labeled: k}``), resumable as the
tables are, and writes

* ``<out>/label_efficiency.csv``: per row and label count, the test Dice (%) as mean ± std over
  the test cases pooled over the seeds, the std of the per-seed means, the counts and the status,
  and the paired difference against Scratch (per seed the mean per-case difference, then mean ±
  std over seeds and the verdict of :func:`gemini_pl.claims.seed_summary`);
* ``<out>/label_efficiency.md``: the same as a table, with the verdicts in words;
* ``<out>/label_efficiency.png``: Dice (y) versus labeled images (x, log scale), one line per row
  with ± std bars (matplotlib when installed, else drawn with PIL);
* with ``--wandb PROJECT``: a W&B run holding the same points as a table and a line plot
  (``wandb.plot.line_series``).

The mode file's ``generate:`` entry writes the demo subjects (:func:`gemini_pl.data.anatomy.generate_mni_dataset`)
before any cell runs. Its cells are those of the real-anatomy Table III mode
(``experiments/mip/table3/mni.yaml``, same cell folder ``runs/table3_mni``): the pre-trainings and
the five-label fine-tunings of Scratch, Models Genesis and GEMINI-MIP run once for both.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path
from typing import Any

from .mip_table import SCRATCH, paired_vs
from .table import aggregate

__all__ = ["curve_points", "render_curve_csv", "render_curve_markdown", "draw_curve_png", "log_wandb", "run_label_efficiency", "main"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def curve_points(rows: list[dict[str, Any]], results: list[dict[str, Any]], tasks: dict[str, dict[str, Any]],
                 static: dict[str, str | None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Row → points ``{task, labels, dice, dice_std, seed_std, seeds, cases, status, paired}`` in the
    tasks' order (``labels`` from each task's ``labels:``; Dice in %, as the cells' per-case results;
    ``paired``: :func:`~gemini_pl.claims.seed_summary` of the row − Scratch differences, ``None``
    for Scratch itself or without a Scratch row)."""
    static = static or {}
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["row"], r["task"]), []).append(r)
    scratch = next((s["row"] for s in rows if s["row"].startswith(SCRATCH)), None)
    out: dict[str, list[dict[str, Any]]] = {}
    for spec in rows:
        pts = []
        for task, t in tasks.items():
            runs = by.get((spec["row"], task), [])
            status = static.get(spec["row"]) or ("not run" if not runs else
                                                 "failed" if all(r.get("status") != "ok" for r in runs) else "ok")
            agg = aggregate(runs, "dice") if status == "ok" else {}
            pts.append({"task": task, "labels": int(t["labels"]), "dice": agg.get("mean"), "dice_std": agg.get("std"),
                        "seed_std": agg.get("seed_std"),
                        "seeds": agg.get("seeds", 0), "cases": agg.get("n", 0), "status": status,
                        "paired": None if scratch in (None, spec["row"]) else paired_vs(by, spec["row"], scratch, task),
                        "errors": [r.get("error", "") for r in runs if r.get("status") != "ok"]})
        out[spec["row"]] = pts
    return out


def render_curve_csv(points: dict[str, list[dict[str, Any]]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "task", "labeled_images", "dice_mean", "dice_std", "seed_std", "seeds", "cases", "status",
                "vs_scratch_mean", "vs_scratch_sd", "vs_scratch_seeds", "vs_scratch_verdict", "error"])
    f = lambda v: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"  # noqa: E731
    for row, pts in points.items():
        for p in pts:
            q = p.get("paired") or {}
            w.writerow([row, p["task"], p["labels"], f(p["dice"]), f(p["dice_std"]), f(p["seed_std"]), p["seeds"], p["cases"],
                        p["status"], f(q.get("mean")), f(q.get("sd")), q.get("seeds", ""), q.get("verdict", ""),
                        " | ".join(p["errors"])[:300]])
    return buf.getvalue()


def render_curve_markdown(points: dict[str, list[dict[str, Any]]], header: dict[str, str]) -> str:
    """The points as a Markdown table: per row and label count the Dice and, for the pre-trained
    rows, the paired difference against Scratch with its verdict."""
    counts = sorted({p["labels"] for pts in points.values() for p in pts})
    lines = ["# Label efficiency: test Dice vs labeled images", ""] + [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "Dice in %: mean ± std over the test cases pooled over the seeds. vs Scratch: per seed the mean of "
              "the per-case differences (row − Scratch, same test cases), then mean ± std over seeds; holds = higher "
              "in every seed and mean > 2 s.e. over seeds; reversed = the same, lower; else not significant.", ""]
    lines += ["| row | " + " | ".join(f"{n} labeled: Dice | vs Scratch" for n in counts) + " |",
              "|---|" + "---|---|" * len(counts)]
    for row, pts in points.items():
        by = {p["labels"]: p for p in pts}
        cells = []
        for n in counts:
            p = by.get(n)
            if p is None or not _finite(p):
                cells += [p["status"] if p else "-", "-"]
                continue
            cells.append(f"{p['dice']:.1f} ± {p['dice_std']:.1f}")
            q = p.get("paired")
            cells.append("-" if not q or not q["seeds"] else
                         f"{q['mean']:+.2f} ± {q['sd']:.2f} ({q['verdict']}; higher on {q['wins']}/{q['pairs']})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finite(p: dict[str, Any]) -> bool:
    return p["dice"] is not None and math.isfinite(p["dice"])


def draw_curve_png(points: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "Dice vs labeled images") -> Path:
    """Write the curve as a PNG (matplotlib if importable, else PIL); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _draw_pil(points, path, title)
        return path
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for row, pts in points.items():
        ok = [p for p in pts if _finite(p)]
        if ok:
            ax.errorbar([p["labels"] for p in ok], [p["dice"] for p in ok], yerr=[p["dice_std"] or 0 for p in ok],
                        marker="o", capsize=3, label=row)
    ax.set_xscale("log")
    xs = sorted({p["labels"] for pts in points.values() for p in pts})
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test Dice (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_pil(points: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    W, H, left, right, top, bottom = 720, 480, 70, 170, 50, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = sorted({p["labels"] for pts in points.values() for p in pts}) or [1]
    vals = [p["dice"] for pts in points.values() for p in pts if _finite(p)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 100.0)
    lo, hi = max(0.0, math.floor(lo / 10) * 10 - 10), min(100.0, math.ceil(hi / 10) * 10 + 10)
    lx0, lx1 = math.log(min(xs)), math.log(max(xs))

    def px(n: float) -> float:
        span = (lx1 - lx0) or 1.0
        return left + (math.log(n) - lx0) / span * (W - left - right) if lx1 > lx0 else (left + W - right) / 2

    def py(v: float) -> float:  # clipped to the plot area
        v = min(max(v, lo), hi)
        return H - bottom - (v - lo) / ((hi - lo) or 1.0) * (H - top - bottom)

    for i in range(6):  # y grid and ticks
        v = lo + (hi - lo) * i / 5
        d.line([left, py(v), W - right, py(v)], fill=(225, 225, 225))
        d.text((left - 40, py(v) - 6), f"{v:.0f}", fill="black")
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for n in xs:
        d.line([px(n), H - bottom, px(n), H - bottom + 5], fill="black")
        d.text((px(n) - 6, H - bottom + 8), str(n), fill="black")
    d.text(((left + W - right) / 2 - 45, H - bottom + 28), "labeled images", fill="black")
    d.text((8, top - 16), "test Dice (%)", fill="black")
    d.text((left, 8), title + " (bars: ± std over test cases)", fill="black")
    for i, (row, pts) in enumerate(points.items()):
        c = _COLOURS[i % len(_COLOURS)]
        ok = [p for p in pts if _finite(p)]
        for a, b in zip(ok, ok[1:]):
            d.line([px(a["labels"]), py(a["dice"]), px(b["labels"]), py(b["dice"])], fill=c, width=2)
        for p in ok:
            x, y, s = px(p["labels"]), py(p["dice"]), p["dice_std"] or 0.0
            d.line([x, py(p["dice"] - s), x, py(p["dice"] + s)], fill=c, width=1)
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
        yl = top + 10 + 20 * i
        d.line([W - right + 12, yl + 6, W - right + 32, yl + 6], fill=c, width=3)
        d.text((W - right + 38, yl), row, fill="black")
    img.save(path)


def log_wandb(points: dict[str, list[dict[str, Any]]], project: str, name: str = "label efficiency") -> None:
    """Log the points as a W&B table and a line plot (one line per row) in a run of ``project``."""
    import wandb

    run = wandb.init(project=project, name=name, job_type="label_efficiency", reinit=True)
    try:
        table = wandb.Table(columns=["row", "labeled_images", "dice", "dice_std"])
        for row, pts in points.items():
            for p in pts:
                if _finite(p):
                    table.add_data(row, p["labels"], p["dice"], p["dice_std"])
        xs = sorted({p["labels"] for pts in points.values() for p in pts})
        ys = [[next((p["dice"] for p in pts if p["labels"] == x and _finite(p)), float("nan")) for x in xs]
              for pts in points.values()]
        run.log({"label_efficiency/points": table,
                 "label_efficiency/dice_vs_labels": wandb.plot.line_series(
                     xs=xs, ys=ys, keys=list(points), title="test Dice (%) vs labeled images", xname="labeled images")})
    finally:
        run.finish()


def run_label_efficiency(mode_file: str | Path, runs: str | Path, out: str | Path, jobs: int = 1, threads: int = 1,
                         seeds: list[int] | None = None, rows: list[str] | None = None, retry_failed: bool = False,
                         timeout: float | None = None, render_only: bool = False, wandb_project: str | None = None
                         ) -> dict[str, list[dict[str, Any]]]:
    """Run the curve's cells that have no result yet, write the CSV and PNG; return the points."""
    from .mip import load_mip_matrix
    from .mip_runner import execute, static_statuses

    matrix = load_mip_matrix(mode_file)
    if seeds:
        matrix.seeds = list(seeds)
    runs, out = Path(runs), Path(out)
    _, results, _ = execute(matrix, runs, rows, None, jobs, threads, retry_failed, timeout, render_only,
                            select=matrix.select, label="label efficiency")
    points = curve_points(matrix.rows, results, matrix.tasks, static_statuses(matrix))
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_efficiency.csv").write_text(render_curve_csv(points))
    from ..callbacks.results import git_commit

    (out / "label_efficiency.md").write_text(render_curve_markdown(points, {
        "data": f"{matrix.pretrain_data.get('title', '')}; test subjects and labeled pool: {matrix.tasks[next(iter(matrix.tasks))]['config']}",
        "mode file": str(mode_file), "commit": git_commit(), "seeds": ", ".join(map(str, matrix.seeds))
        + (" (pre-training per seed)" if matrix.pretrain_per_seed else ""),
        "cells": f"{runs}/cells", "selection": "final weights" if matrix.select == "final" else matrix.select}))
    draw_curve_png(points, out / "label_efficiency.png",
                   f"test Dice vs labeled images ({matrix.mode}, seeds {', '.join(map(str, matrix.seeds))})")
    if wandb_project:
        log_wandb(points, wandb_project)
    for row, pts in points.items():
        print(f"{row}: " + ", ".join(f"{p['labels']}: " + (f"{p['dice']:.1f}" if _finite(p) else p["status"]) for p in pts))
    return points


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gemini_pl.reproduce.label_efficiency", description=__doc__.split("\n\n")[0])
    here = Path("experiments/mip/label_efficiency/mni.yaml")
    default = here if here.is_file() else Path(__file__).resolve().parents[3] / here
    p.add_argument("--mode-file", default=str(default), help="the curve's mode file (default %(default)s)")
    p.add_argument("--runs", default="runs/table3_mni", help="cell folders (shared with make reproduce TABLE=3 DATA=mni)")
    p.add_argument("--out", default="results/mni", help="folder of label_efficiency.{png,csv}")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default)")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="override the mode file's seeds")
    p.add_argument("--rows", nargs="*", default=None, help="only run these rows")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log a W&B line plot to this project")
    a = p.parse_args(argv)
    run_label_efficiency(a.mode_file, a.runs, a.out, a.jobs, a.threads, a.seeds, a.rows, a.retry_failed, a.timeout,
                         a.render_only, a.wandb)


if __name__ == "__main__":  # pragma: no cover
    main()
