"""Does GEMINI-MIP pre-training help segmentation of real anatomy? Paired differences over seeds.

On the MNI152-derived 2D brain slices (``gemini_pl.data.anatomy``; 40 unlabeled, 5 labeled, 20
test subjects; grey/white matter), for each seed: U-Net Five from scratch, and the same network
fine-tuned from GEMINI-MIP pre-training in one or more variants (``--variants``; e.g. ``nopos`` =
the GSS positive-pair term off). Configs: ``experiments/mni/`` (300 iterations per stage, widths
÷ 4, final weights tested). A seed sets ``seed_everything``, the data sampling and the
augmentation.

Prints, per variant, the paired per-case Dice difference (fine-tuned − scratch, in Dice points:
mean over the test cases per seed, then mean ± std over seeds, and how many of the seed × case
pairs are worse), and each pre-training's last ``feature_similarity`` (near 1: collapsed features).

    python benchmarks/mni_transfer.py --runs runs/mni_transfer --seeds 0 1 2 --variants base nopos
    python benchmarks/mni_transfer.py --runs runs/mni_transfer --analyse-only
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "mni"
#: variant -> extra pre-training overrides
VARIANTS = {"base": [], "nopos": ["--model.init_args.lambda_pos", "0"], "published_flow": ["--model.init_args.flow_init", "published"]}
PRE_DIR = {"base": "pre", "nopos": "pre_nopos", "published_flow": "pre_pubflow"}
SEG_DIR = {"base": "seg_pre", "nopos": "seg_nopos", "published_flow": "seg_pubflow"}


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gemini_pl.cli", *args], check=True, cwd=REPO)


def run(runs: Path, data_root: Path, seeds: list[int], variants: list[str]) -> None:
    from gemini_pl.data.anatomy import generate_mni_dataset

    generate_mni_dataset(data_root, spatial_dims=2, num_unlabeled=40, num_labeled=5, num_test=20, num_val=0, seed=0)
    data = ["--config", str(CONFIGS / "data.yaml"), "--data.init_args.root", str(data_root)]

    def seeded(s: int) -> list[str]:
        return ["--seed_everything", str(s), "--model.init_args.aug_seed", str(s), "--data.init_args.seed", str(s)]

    def seg(s: int, name: str, init: Path | None) -> None:
        out = runs / f"{name}{s}"
        if (out / "results" / "test_cases.csv").exists():
            return
        extra = ["--model.init_args.init_from", str(init)] if init else []
        _cli("fit", *data, "--config", str(CONFIGS / "seg.yaml"), *seeded(s), "--trainer.default_root_dir", str(out), *extra)
        _cli("test", *data, "--config", str(CONFIGS / "seg.yaml"), "--seed_everything", str(s),
             "--trainer.default_root_dir", str(out), "--ckpt_path", str(out / "checkpoints" / "last.ckpt"))

    for s in seeds:
        seg(s, "seg_scratch", None)
        for v in variants:
            pre = runs / f"{PRE_DIR[v]}{s}"
            if not (pre / "checkpoints" / "last.ckpt").exists():
                _cli("fit", *data, "--config", str(CONFIGS / "pretrain.yaml"), *seeded(s),
                     "--trainer.default_root_dir", str(pre), *VARIANTS[v])
            seg(s, SEG_DIR[v], pre / "checkpoints" / "last.ckpt")


def _dice(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {r["case"]: float(r["dice"]) for r in csv.DictReader(f)}


def _last(path: Path, column: str) -> float:
    files = sorted(path.glob("csv/version_*/metrics.csv"))
    if not files:
        return math.nan
    with open(files[-1]) as f:
        vals = [r[column] for r in csv.DictReader(f) if r.get(column)]
    return float(vals[-1]) if vals else math.nan


def analyse(runs: Path, seeds: list[int], variants: list[str]) -> str:
    lines = [
        "| variant | seeds | scratch Dice | fine-tuned Dice | Δ per seed (points) | Δ mean ± std over seeds | worse pairs | pre-training feature_similarity (last) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        per_seed, worse, total, scratch_means, tuned_means, sims = [], 0, 0, [], [], []
        for s in seeds:
            a, b = runs / f"seg_scratch{s}/results/test_cases.csv", runs / f"{SEG_DIR[v]}{s}/results/test_cases.csv"
            if not (a.exists() and b.exists()):
                continue
            da, db = _dice(a), _dice(b)
            diffs = [db[c] - da[c] for c in da if c in db]
            per_seed.append(statistics.mean(diffs))
            worse += sum(d < 0 for d in diffs)
            total += len(diffs)
            scratch_means.append(statistics.mean(da.values()))
            tuned_means.append(statistics.mean(db.values()))
            sims.append(_last(runs / f"{PRE_DIR[v]}{s}", "train/gemini/feature_similarity"))
        if not per_seed:
            continue
        spread = statistics.stdev(per_seed) if len(per_seed) > 1 else math.nan
        lines.append(
            f"| {v} | {len(per_seed)} | {statistics.mean(scratch_means):.1f} | {statistics.mean(tuned_means):.1f} | "
            f"{', '.join(f'{d:+.2f}' for d in per_seed)} | {statistics.mean(per_seed):+.2f} ± {spread:.2f} | "
            f"{worse}/{total} | {', '.join('n/a' if math.isnan(x) else f'{x:.3f}' for x in sims)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "mni_transfer")
    p.add_argument("--data-root", type=Path, default=REPO / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["base", "nopos"], choices=sorted(VARIANTS))
    p.add_argument("--analyse-only", action="store_true", help="only read the runs folder and print the table")
    args = p.parse_args(argv)
    if not args.analyse_only:
        run(args.runs, args.data_root, args.seeds, args.variants)
    print(analyse(args.runs, args.seeds, args.variants))


if __name__ == "__main__":
    main()
