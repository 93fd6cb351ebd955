"""The phantom pipeline end to end, with one results table: ``make demo`` / ``python -m gemini_pl.demo``.

Stages (configs under ``experiments/demo/``; each is also a plain ``gemini-pl fit`` config):

1. ``pretrain.yaml`` — GEMINI-MIP pre-training on the unlabeled 2D phantoms;
2. ``seg.yaml`` — segmentation with the five labeled phantoms from scratch ("U-Net Five"), and for
   reference the same with twice the iterations (as many optimiser steps as GEMINI-Semi);
3. ``seg.yaml`` + ``init_from`` the pre-training checkpoint — the same network fine-tuned;
4. ``semi.yaml`` — GEMINI-Semi (five labeled phantoms + the unlabeled ones);
5. ``reg.yaml`` + ``init_from`` — registration fine-tuned from the pre-training, scored against
   the Dice without warping (``--stages`` can add ``reg_scratch``, the same from scratch, and
   ``reg_gemini_svf``, the same with the velocity-field option: 7 scaling-and-squaring steps).

The compared rows share the seed, the data, the number of iterations and the labeled batch size;
GEMINI-Semi additionally takes a GEMINI step on unlabeled pairs per iteration, and the fine-tuned
rows start from the pre-training (its cost is listed separately). Every row is tested on its final
weights on the 10 held-out test phantoms; the stages validate on the 4 validation phantoms (never
test cases), and the best validation checkpoint their configs keep is not what the demo tests. The
table states this selection policy and the split (hash, train/val/test counts); it is printed and
written to ``<out>/results.md``; per-case CSVs and summaries are under ``<out>/<stage>/results/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "run_pipeline"]

def _configs_dir() -> Path:
    """``experiments/demo`` of the working directory, else of the source checkout."""
    here = Path("experiments") / "demo"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments" / "demo"


#: the stages ``make demo`` runs; ``reg_scratch`` (registration from scratch, a reference row) is
#: opt-in (``--stages ... reg_scratch``) to keep the demo well under 10 minutes on 2 CPU cores.
DEFAULT_STAGES = ["pretrain", "seg_scratch", "seg_scratch_2x", "seg_gemini", "semi", "reg_gemini"]
ALL_STAGES = [*DEFAULT_STAGES, "reg_scratch", "reg_gemini_svf"]


@dataclass
class StageResult:
    name: str
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    iterations: int = 0
    transfer: str = ""
    selection: str = ""
    split: str = ""

    def stat(self, column: str) -> tuple[float, float, int]:
        """mean, sample std and count of the finite values of a per-case column."""
        vals = [float(r[column]) for r in self.rows if column in r and r[column] not in ("", None)]
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            return math.nan, math.nan, 0
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return mean, std, len(vals)


def _stage(name: str, config: Path, out: Path, overrides: list[str], test: bool = True) -> StageResult:
    """``fit`` a config (in this process, through the CLI's parser), then ``test`` the final weights."""
    from lightning.pytorch.utilities import rank_zero_info

    from .callbacks import ResultsWriter
    from .callbacks.results import selection_policy
    from .cli import cli_main
    from .data.splits import describe_split

    run_dir = out / name
    args = [
        "--config", str(config),
        "--trainer.default_root_dir", str(run_dir),
        *overrides,
    ]
    rank_zero_info(f"\n=== demo stage {name}: gemini-pl fit {' '.join(args)}")
    t0 = time.perf_counter()
    cli = cli_main(args, run=False)  # default_root_dir: the stage's logs, checkpoints and results (GeminiCLI)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    writer = next((c for c in trainer.callbacks if isinstance(c, ResultsWriter)), None)
    if writer is not None:
        writer.config = f"{config} " + " ".join(overrides)
    trainer.fit(model, datamodule=dm)
    result = StageResult(name, 0.0, steps=int(trainer.global_step), iterations=int(trainer.fit_loop.total_batch_idx + 1))
    report = getattr(model, "transfer_report", None)
    if report is not None:
        result.transfer = ", ".join(f"{k} {v}" for k, v in report.loaded_parts().items())
    if test:
        trainer.test(model, datamodule=dm, verbose=False)  # the final weights
        result.selection = selection_policy(trainer, dm)
        result.split = describe_split(getattr(dm, "split", None), getattr(dm, "split_hash", None))
        if writer is not None and writer.csv_path is not None:
            with open(writer.csv_path) as f:
                result.rows = list(csv.DictReader(f))
    result.seconds = time.perf_counter() - t0
    return result


def _fmt(mean: float, std: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _paired(ra: StageResult, rb: StageResult, col_a: str, col_b: str) -> str:
    """Per-case paired difference (same test cases) and the verdict it supports."""
    b_by_case = {r["case"]: r for r in rb.rows}
    diffs = []
    for r in ra.rows:
        other = b_by_case.get(r["case"])
        if other is None:
            continue
        x, y = float(r.get(col_a, "nan")), float(other.get(col_b, "nan"))
        if not (math.isnan(x) or math.isnan(y)):
            diffs.append(x - y)
    if not diffs:
        return "no paired cases"
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n > 1 else float("inf")
    wins = sum(d > 0 for d in diffs)
    if mean > 0 and mean > 2 * se:
        verdict = "holds"
    elif mean > 0:
        verdict = "holds on the mean, but within case-to-case noise (mean < 2 s.e.)"
    else:
        verdict = "does NOT hold"
    return f"per case {mean:+.2f} ± {sd:.2f} (s.e. {se:.2f}), better on {wins}/{n} cases — {verdict}"


def render_table(results: dict[str, StageResult], total_seconds: float, threads: int) -> str:
    """The one results table of the demo, plus the claims it checks (measured, not assumed)."""
    from .callbacks.results import FINAL_WEIGHTS

    n_seg = max((len(r.rows) for k, r in results.items() if k.startswith(("seg", "semi"))), default=0)
    n_reg = max((len(r.rows) for k, r in results.items() if k.startswith("reg")), default=0)
    policies = sorted({r.selection for r in results.values() if r.selection}) or ["n/a (nothing tested)"]
    splits = sorted({r.split for r in results.values() if r.split}) or ["n/a"]
    lines = [
        "# gemini-pl demo: 2D phantoms (64 x 64), small widths, CPU",
        "",
        f"Segmentation: {n_seg} held-out test phantoms, foreground classes 1-5 (Dice per class averaged per case), "
        f"mean ± std over cases; AVD/HD95 in mm. Registration: {n_reg} held-out test pairs, Dice of the warped "
        "moving labels (moving → fixed). Every row: same seed and data.",
        "",
        f"- selection: {' | '.join(policies)}" + (" (the weights after the last training step of every row; the best "
                                                   "validation checkpoints the stages keep are not tested)"
                                                   if policies == [FINAL_WEIGHTS] else ""),
        f"- split: {' | '.join(splits)}",
        "",
        "| row | init | labeled | iterations (optimiser steps) | Dice (%) | AVD (mm) | HD95 (mm) | folding (%) | SDlogJ | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def seg_row(label: str, key: str, init: str, labeled: str) -> None:
        r = results.get(key)
        if r is None:
            return
        d, a, h = r.stat("dice"), r.stat("avd"), r.stat("hd95")
        unable = len(r.rows) - a[2]
        avd = _fmt(a[0], a[1], 2) + (f" ({unable} unable)" if unable else "")
        lines.append(
            f"| {label} | {init} | {labeled} | {r.iterations} ({r.steps}) | {_fmt(*d[:2])} | {avd} | {_fmt(*h[:2], 2)} | - | - | {r.seconds:.0f} |"
        )

    seg_row("U-Net Five (scratch)", "seg_scratch", "random", "5")
    seg_row("U-Net Five (scratch), 2x iterations", "seg_scratch_2x", "random", "5")
    seg_row("U-Net Five fine-tuned", "seg_gemini", "GEMINI-MIP", "5")
    seg_row("GEMINI-Semi", "semi", "random", "5 + unlabeled pairs")
    reg = results.get("reg_gemini")
    if reg is not None:
        u = reg.stat("dice_unwarped")
        lines.append(f"| Registration: no warping | - | 0 | - | {_fmt(*u[:2])} | - | - | 0.00 | - | - |")
    for key, label, init in (("reg_scratch", "Registration (scratch)", "random"), ("reg_gemini", "Registration fine-tuned", "GEMINI-MIP"),
                             ("reg_gemini_svf", "Registration fine-tuned, velocity field (7 squarings)", "GEMINI-MIP")):
        r = results.get(key)
        if r is None:
            continue
        d, f, s = r.stat("dice"), r.stat("folding"), r.stat("sdlogj")
        h = r.stat("hd95")
        hd = _fmt(*h[:2], 2) if h[2] else _fmt(*r.stat("hd95_vox")[:2], 2) + " vox"
        lines.append(
            f"| {label} | {init} | 0 | {r.iterations} ({r.steps}) | {_fmt(*d[:2])} | - | {hd} | "
            f"{_fmt(*f[:2], 2)} | {_fmt(*s[:2], 3)} | {r.seconds:.0f} |"
        )
    pre = results.get("pretrain")
    if pre is not None:
        lines.append(f"| (GEMINI-MIP pre-training) | random | 0 | {pre.iterations} ({pre.steps}) | - | - | - | - | - | {pre.seconds:.0f} |")
    lines += ["", "Claims (measured above):"]

    def claim(text: str, a: str, b: str, col: str = "dice") -> None:
        ra, rb = results.get(a), results.get(b)
        if ra is None or rb is None:
            return
        ma, mb = ra.stat(col)[0], rb.stat(col)[0]
        lines.append(f"- {text}: {ma:.1f} vs {mb:.1f} Dice % ({ma - mb:+.1f} points); {_paired(ra, rb, col, col)}")

    claim("GEMINI-Semi (5 labeled) beats U-Net Five", "semi", "seg_scratch")
    claim("(reference) GEMINI-Semi vs U-Net Five with as many optimiser steps (2x iterations)", "semi", "seg_scratch_2x")
    claim("fine-tuning from GEMINI pre-training beats the same network from scratch", "seg_gemini", "seg_scratch")
    if reg is not None:
        d, u, f = reg.stat("dice")[0], reg.stat("dice_unwarped")[0], reg.stat("folding")[0]
        lines.append(
            f"- registration fine-tuned from GEMINI beats no warping: {d:.1f} vs {u:.1f} Dice % ({d - u:+.1f} points), "
            f"folding {f:.2f} % of pixels; {_paired(reg, reg, 'dice', 'dice_unwarped')}"
        )
    scratch = results.get("reg_scratch")
    if reg is not None and scratch is not None:
        claim("(reference) registration fine-tuned from GEMINI vs from scratch", "reg_gemini", "reg_scratch")
    svf = results.get("reg_gemini_svf")
    if reg is not None and svf is not None:
        lines.append(
            f"- (option) velocity-field integration: Dice {svf.stat('dice')[0]:.1f} vs {reg.stat('dice')[0]:.1f} %, "
            f"folding {svf.stat('folding')[0]:.3f} vs {reg.stat('folding')[0]:.3f} % of pixels"
        )
    lines += [
        "",
        "One training seed per row: differences of a Dice point or two between segmentation rows can be within "
        "seed-to-seed variation on these phantoms; compare several runs with --seed N.",
        f"Total wall time {total_seconds:.0f} s ({threads} torch thread{'s' if threads != 1 else ''}).",
    ]
    return "\n".join(lines) + "\n"


def run_pipeline(out: str | Path = "runs/demo", quick: bool = False, threads: int = 1, stages: list[str] | None = None,
                 seed: int | None = None) -> str:
    """Run the demo stages and return the results table (also written to ``<out>/results.md``).

    ``seed`` replaces ``seed_everything`` of every stage (network initialisation); the data
    (phantoms, split, sampling) and the augmentation streams keep their seeds, so that runs with
    several seeds compare the same cases.
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads > 0:
        torch.set_num_threads(threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    common: list[str] = []
    if quick:  # a smoke run of the whole pipeline (tests): one short epoch per stage
        common = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
                  "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "3", "--trainer.log_every_n_steps", "1"]
    if seed is not None:  # network initialisation only: the augmentation (model.aug_seed) and data seeds stay fixed
        common += ["--seed_everything", str(seed)]
    wanted = stages or DEFAULT_STAGES
    results: dict[str, StageResult] = {}
    t0 = time.perf_counter()
    ckpt = out / "pretrain" / "checkpoints" / "last.ckpt"
    configs = _configs_dir()
    epochs = 1 if quick else int(yaml.safe_load((configs / "seg.yaml").read_text())["trainer"]["max_epochs"])
    plan = [
        ("pretrain", "pretrain.yaml", [], False),
        ("seg_scratch", "seg.yaml", [], True),
        # reference: as many optimiser steps as GEMINI-Semi takes (its iterations take two)
        ("seg_scratch_2x", "seg.yaml", ["--trainer.max_epochs", str(2 * epochs)], True),
        ("seg_gemini", "seg.yaml", ["--model.init_args.init_from", str(ckpt)], True),
        ("semi", "semi.yaml", [], True),
        ("reg_gemini", "reg.yaml", ["--model.init_args.init_from", str(ckpt)], True),
        ("reg_scratch", "reg.yaml", [], True),
        ("reg_gemini_svf", "reg.yaml", ["--model.init_args.init_from", str(ckpt), "--model.init_args.integration_steps", "7"], True),
    ]
    for name, config, extra, test in plan:
        if name not in wanted:
            continue
        results[name] = _stage(name, configs / config, out, [*common, *extra], test=test)
    table = render_table(results, time.perf_counter() - t0, torch.get_num_threads())
    (out / "results.md").write_text(table)
    print("\n" + table, flush=True)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gemini_pl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a couple of iterations per stage")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: fastest on small, shared CPUs; 0 = torch's default)")
    parser.add_argument("--seed", type=int, default=None, help="seed_everything of every stage: network initialisation (default: the configs', 0)")
    parser.add_argument("--stages", nargs="*", default=None, choices=ALL_STAGES,
                        help=f"stages to run (default {' '.join(DEFAULT_STAGES)}); the fine-tuning stages need pretrain's checkpoint")
    args = parser.parse_args(argv)
    from .errors import GeminiError
    from .runtime import keep_freed_memory

    keep_freed_memory()

    try:
        run_pipeline(args.out, quick=args.quick, threads=args.threads, stages=args.stages, seed=args.seed)
    except GeminiError as exc:
        print(f"gemini-pl demo: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
