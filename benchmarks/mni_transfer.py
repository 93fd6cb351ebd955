"""Why does GEMINI-MIP fine-tuning not beat training from scratch on real anatomy? Variants, paired over seeds.

Works on the folder of a real-anatomy demo run (``python -m gemini_pl.demo --out runs/demo_mni``:
MNI152-derived 2D slices, 40 unlabeled / 5 labeled / 20 test subjects, ``experiments/demo_mni/``
budgets, seeds 0 1 2) and reuses its stages: per seed the pre-training (``pretrain``), U-Net Five
from scratch (``seg_scratch``) and the plain fine-tuning (``seg_gemini``). Each variant adds what
it needs (``--variants``):

- ``encoder``: fine-tune with the encoder only transferred (``init_exclude: [backbone.up]``);
- ``ft_lr1e-4``: fine-tune with learning rate 1e-4 instead of 1e-3;
- ``nopos``: pre-train without the GSS positive-pair term (``lambda_pos: 0``), then fine-tune;
- ``long``: pre-train three times as long, then fine-tune;
- ``published_flow``: pre-train with the published (Kaiming-random) flow initialisation, then fine-tune.

A seed sets ``seed_everything``, the data sampling and the augmentation, as in the demo. Prints per
variant the paired per-case Dice difference (fine-tuned − scratch, Dice points): per seed the mean
over the 20 test subjects, then mean ± std over seeds, and how many seed × subject pairs are
worse; plus each pre-training's last ``feature_similarity`` (near 1: collapsed features).

    python benchmarks/mni_transfer.py --runs runs/demo_mni --variants plain encoder ft_lr1e-4 nopos
    python benchmarks/mni_transfer.py --runs runs/demo_mni --analyse-only
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
CONFIGS = REPO / "experiments" / "demo_mni"
#: variant -> (pre-training stage name, its extra overrides or None = the demo's, fine-tuning stage, its overrides)
VARIANTS = {
    "plain": ("pretrain", None, "seg_gemini", []),
    "encoder": ("pretrain", None, "seg_gemini_encoder", ["--model.init_args.init_exclude", "[backbone.up]"]),
    "ft_lr1e-4": ("pretrain", None, "seg_gemini_lr1e-4", ["--model.init_args.lr", "0.0001"]),
    "nopos": ("pretrain_nopos", ["--model.init_args.lambda_pos", "0"], "seg_nopos", []),
    "long": ("pretrain_long", ["--trainer.max_epochs", "15"], "seg_long", []),
    "published_flow": ("pretrain_pubflow", ["--model.init_args.flow_init", "published"], "seg_pubflow", []),
}


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gemini_pl.cli", *args], check=True, cwd=REPO)


def _seeded(s: int) -> list[str]:
    return ["--seed_everything", str(s), "--model.init_args.aug_seed", str(s), "--data.init_args.seed", str(s)]


def run(runs: Path, data_root: Path, seeds: list[int], variants: list[str]) -> None:
    from gemini_pl.data.anatomy import generate_mni_dataset
    from gemini_pl.demo import MNI_COUNTS

    generate_mni_dataset(data_root, spatial_dims=2, **MNI_COUNTS)
    data = ["--data.init_args.root", str(data_root)]
    for s in seeds:
        base = runs / f"seed{s}"
        for v in variants:
            pre_name, pre_extra, seg_name, seg_extra = VARIANTS[v]
            pre = base / pre_name
            if not (pre / "checkpoints" / "last.ckpt").exists():
                _cli("fit", "--config", str(CONFIGS / "pretrain.yaml"), *data, *_seeded(s),
                     "--trainer.default_root_dir", str(pre), *(pre_extra or []))
            out = base / seg_name
            if not (out / "results" / "test_cases.csv").exists():
                cfg = ["--config", str(CONFIGS / "seg.yaml"), *data]
                _cli("fit", *cfg, *_seeded(s), "--trainer.default_root_dir", str(out),
                     "--model.init_args.init_from", str(pre / "checkpoints" / "last.ckpt"), *seg_extra)
                _cli("test", *cfg, "--seed_everything", str(s), "--trainer.default_root_dir", str(out),
                     "--ckpt_path", str(out / "checkpoints" / "last.ckpt"))


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
        pre_name, _, seg_name, _ = VARIANTS[v]
        per_seed, worse, total, scratch_means, tuned_means, sims = [], 0, 0, [], [], []
        for s in seeds:
            a = runs / f"seed{s}" / "seg_scratch" / "results" / "test_cases.csv"
            b = runs / f"seed{s}" / seg_name / "results" / "test_cases.csv"
            if not (a.exists() and b.exists()):
                continue
            da, db = _dice(a), _dice(b)
            diffs = [db[c] - da[c] for c in da if c in db]
            per_seed.append(statistics.mean(diffs))
            worse += sum(d < 0 for d in diffs)
            total += len(diffs)
            scratch_means.append(statistics.mean(da.values()))
            tuned_means.append(statistics.mean(db.values()))
            sims.append(_last(runs / f"seed{s}" / pre_name, "train/gemini/feature_similarity"))
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
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "demo_mni", help="a real-anatomy demo run folder")
    p.add_argument("--data-root", type=Path, default=REPO / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["plain", "encoder", "ft_lr1e-4", "nopos"], choices=list(VARIANTS))
    p.add_argument("--analyse-only", action="store_true", help="only read the runs folder and print the table")
    args = p.parse_args(argv)
    if not args.analyse_only:
        run(args.runs, args.data_root, args.seeds, args.variants)
    print(analyse(args.runs, args.seeds, args.variants))


if __name__ == "__main__":
    main()
