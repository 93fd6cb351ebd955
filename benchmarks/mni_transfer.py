"""What changes GEMINI's effect on segmentation of real anatomy? Variants of the demo, paired over seeds.

Works on the folder of a real-anatomy demo run (``python -m gemini_pl.demo --out runs/demo_mni``:
MNI152-derived 2D slices, 40 unlabeled / 5 labeled / 20 test subjects, ``experiments/demo_mni/``
budgets, seeds 0 1 2) and reuses its stages: per seed the pre-training (``pretrain``), U-Net Five
from scratch (``seg_scratch``), the plain fine-tuning (``seg_gemini``) and GEMINI-Semi (``semi``).
Each variant adds the stages it needs (``--variants``; ``--list`` prints them):

- fine-tuning after GEMINI-MIP, compared with scratch and with the plain fine-tuning:
  ``encoder`` (encoder only transferred: ``init_exclude: [backbone.up]``), ``ft_lr1e-4`` (fine-tuning
  lr 1e-4 instead of 1e-3), ``nopos`` (pre-trained without the GSS positive term), ``pre_lr1e-4``
  (pre-trained with the paper's lr 1e-4 instead of the demo's 1e-3), ``long`` (pre-trained
  three times as long), ``published_flow`` (pre-trained with the published Kaiming-random flow init);
- the topology switches of the DHL (``experiments/homeomorphic/``), each alone, in the pre-training
  before fine-tuning (``mip_velocity``, ``mip_inverse``, ``mip_jacobian``, ``mip_bending``,
  ``mip_homeomorphic`` = velocity + inverse + Jacobian) and in GEMINI-Semi, compared with the
  published Semi (``semi_velocity``, ``semi_inverse``, ``semi_jacobian``, ``semi_bending``);
- the balance of the two pre-training steps (``experiments/mip/balance/``, beyond the paper), each
  compared with scratch, the published recipe and restoration-only pre-training:
  ``mip_per_loss`` (one Adam per loss), ``mip_balance_1`` / ``mip_balance_10`` (the head loss
  scaled so its backbone gradient is 1× / 10× the GEMINI loss's) and ``mip_restoration_only``
  (the GEMINI terms off: what the restoration alone gives).

A seed sets ``seed_everything``, the data sampling and the augmentation, as in the demo. Stages run
``--jobs`` chains at a time (a chain = one seed of one variant: its pre-training, then its
fine-tuning). Prints per variant and comparison the paired per-case Dice difference (Dice points):
per seed the mean over the 20 test subjects, then mean ± std over seeds with the verdict of
:func:`gemini_pl.claims.seed_summary` (holds only when it holds in every seed and the mean exceeds
two standard errors over seeds), plus each pre-training's last ``feature_similarity`` (near 1:
collapsed features).

    python benchmarks/mni_transfer.py --runs runs/demo_mni --variants encoder long published_flow --jobs 2
    python benchmarks/mni_transfer.py --runs runs/demo_mni --variants mip_velocity semi_velocity --analyse-only
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "demo_mni"
HOMEO = REPO / "experiments" / "homeomorphic"
BALANCE = REPO / "experiments" / "mip" / "balance"
SWITCHES = {   # switch -> the pre-training / Semi overrides that turn it on (alone)
    "velocity": ["--config", str(HOMEO / "velocity.yaml")],
    "inverse": ["--model.init_args.lambda_inverse", "0.1"],
    "jacobian": ["--model.init_args.lambda_jacobian", "1.0"],
    "bending": ["--config", str(HOMEO / "bending.yaml")],
    "homeomorphic": ["--config", str(HOMEO / "homeomorphic.yaml")],
}


@dataclass
class Variant:
    """A stage to add per seed (``stage``, from ``config`` with ``extra`` overrides), optionally after
    its own pre-training (``pretrain``: stage name, overrides; ``None`` = the demo's ``pretrain``,
    ``False`` = no pre-training), compared with the stages of ``against``."""

    stage: str
    config: str = "seg"
    extra: list[str] = field(default_factory=list)
    pretrain: tuple[str, list[str]] | None | bool = None
    against: tuple[str, ...] = ("seg_scratch", "seg_gemini")
    doc: str = ""

    @property
    def pretrain_stage(self) -> str | None:
        """The folder of the pre-training this variant starts from (``None``: none)."""
        if self.pretrain is False:
            return None
        return self.pretrain[0] if isinstance(self.pretrain, tuple) else "pretrain"


VARIANTS: dict[str, Variant] = {
    "plain": Variant("seg_gemini", against=("seg_scratch",), doc="the demo's fine-tuning (whole U-Net)"),
    "encoder": Variant("seg_gemini_encoder", extra=["--model.init_args.init_exclude", "[backbone.up]"],
                       doc="encoder only transferred"),
    "ft_lr1e-4": Variant("seg_gemini_lr1e-4", extra=["--model.init_args.lr", "0.0001"], doc="fine-tuning lr 1e-4"),
    "nopos": Variant("seg_nopos", pretrain=("pretrain_nopos", ["--model.init_args.lambda_pos", "0"]),
                     doc="pre-trained without the GSS positive term"),
    "pre_lr1e-4": Variant("seg_prelr1e-4", pretrain=("pretrain_lr1e-4", ["--model.init_args.lr", "0.0001"]),
                          doc="pre-trained with lr 1e-4 (the paper's) instead of 1e-3"),
    "long": Variant("seg_long", pretrain=("pretrain_long", ["--trainer.max_epochs", "15"]), doc="pre-trained 3x as long"),
    "published_flow": Variant("seg_pubflow", pretrain=("pretrain_pubflow", ["--model.init_args.flow_init", "published"]),
                              doc="pre-trained with the published flow init"),
}
for _s, _o in SWITCHES.items():
    VARIANTS[f"mip_{_s}"] = Variant(f"seg_{_s}", pretrain=(f"pretrain_{_s}", _o), doc=f"pre-trained with the {_s} switch")
    if _s != "homeomorphic":
        VARIANTS[f"semi_{_s}"] = Variant(f"semi_{_s}", config="semi", extra=_o, pretrain=False, against=("semi", "seg_scratch"),
                                         doc=f"GEMINI-Semi with the {_s} switch")


VARIANTS["mip_restoration_only"] = Variant(
    "seg_restoration_only", pretrain=("pretrain_restoration_only", ["--config", str(BALANCE / "restoration_only.yaml")]),
    doc="pre-trained by restoration alone (the GEMINI terms off)")
for _b in ("per_loss", "balance_1", "balance_10"):
    VARIANTS[f"mip_{_b}"] = Variant(f"seg_{_b}", pretrain=(f"pretrain_{_b}", ["--config", str(BALANCE / f"{_b}.yaml")]),
                                    against=("seg_scratch", "seg_gemini", "seg_restoration_only"),
                                    doc=f"pre-trained with experiments/mip/balance/{_b}.yaml")


def _cli(*args: str, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "gemini_pl.cli", *args], check=True, cwd=REPO, env=env)


def _seeded(s: int) -> list[str]:
    return ["--seed_everything", str(s), "--model.init_args.aug_seed", str(s), "--data.init_args.seed", str(s)]


def _chain(base: Path, data: list[str], s: int, v: Variant, threads: int) -> None:
    """One seed of one variant: its pre-training (if any, unless done), then its stage (unless done)."""
    pre = base / v.pretrain_stage if v.pretrain_stage else None
    if isinstance(v.pretrain, tuple) and not (pre / "checkpoints" / "last.ckpt").exists():
        _cli("fit", "--config", str(CONFIGS / "pretrain.yaml"), *data, *_seeded(s),
             "--trainer.default_root_dir", str(pre), *v.pretrain[1], threads=threads)
    out = base / v.stage
    if (out / "results" / "test_cases.csv").exists():
        return
    cfg = ["--config", str(CONFIGS / f"{v.config}.yaml"), *data]
    init = [] if pre is None else ["--model.init_args.init_from", str(pre / "checkpoints" / "last.ckpt")]
    _cli("fit", *cfg, *_seeded(s), "--trainer.default_root_dir", str(out), *init, *v.extra, threads=threads)
    _cli("test", *cfg, *v.extra, "--seed_everything", str(s), "--trainer.default_root_dir", str(out),
         "--ckpt_path", str(out / "checkpoints" / "last.ckpt"), threads=threads)


def run(runs: Path, data_root: Path, seeds: list[int], variants: list[str], jobs: int = 1, threads: int = 1) -> None:
    from gemini_pl.data.anatomy import generate_mni_dataset
    from gemini_pl.demo import MNI_COUNTS

    generate_mni_dataset(data_root, spatial_dims=2, **MNI_COUNTS)
    data = ["--data.init_args.root", str(data_root)]
    chains = [(runs / f"seed{s}", s, VARIANTS[v]) for v in variants for s in seeds]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for f in [pool.submit(_chain, base, data, s, v, threads) for base, s, v in chains]:
            f.result()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _last(path: Path, column: str) -> float:
    files = sorted(path.glob("csv/version_*/metrics.csv"))
    if not files:
        return math.nan
    with open(files[-1]) as f:
        vals = [r[column] for r in csv.DictReader(f) if r.get(column)]
    return float(vals[-1]) if vals else math.nan


def _mean_dice(rows: list[dict[str, str]]) -> float:
    return statistics.fmean(float(r["dice"]) for r in rows)


def analyse(runs: Path, seeds: list[int], variants: list[str]) -> str:
    from gemini_pl.claims import paired_differences, seed_summary

    lines = [
        "| variant | A − B | seeds | B Dice | A Dice | Δ per seed (points) | Δ mean ± std over seeds | verdict | A higher on | pre-training feature_similarity (last) | pre-training grad_share (last) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in variants:
        v = VARIANTS[name]
        sim = {s: _last(runs / f"seed{s}" / v.pretrain_stage, "train/gemini/feature_similarity")
               for s in seeds} if v.pretrain_stage else {}
        share = {s: _last(runs / f"seed{s}" / v.pretrain_stage, "train/gemini/grad_share")
                 for s in seeds} if v.pretrain_stage else {}
        for b in v.against:
            if b == v.stage:
                continue
            per_seed, a_means, b_means, sims, shares = [], [], [], [], []
            for s in seeds:
                fa = runs / f"seed{s}" / v.stage / "results" / "test_cases.csv"
                fb = runs / f"seed{s}" / b / "results" / "test_cases.csv"
                if not (fa.exists() and fb.exists()):
                    continue
                ra, rb = _rows(fa), _rows(fb)
                per_seed.append(paired_differences(ra, rb, "dice"))
                a_means.append(_mean_dice(ra))
                b_means.append(_mean_dice(rb))
                if s in sim:
                    sims.append(sim[s])
                    shares.append(share[s])
            if not per_seed:
                continue
            p = seed_summary(per_seed)
            spread = f"{p['mean']:+.2f} ± {p['sd']:.2f}" if p["seeds"] > 1 else f"{p['mean']:+.2f} (1 seed)"
            lines.append(
                f"| {name} | {v.stage} − {b} | {p['seeds']} | {statistics.fmean(b_means):.1f} | {statistics.fmean(a_means):.1f} | "
                f"{', '.join(f'{m:+.2f}' for m in p['means'])} | {spread} | {p['verdict']} | {p['wins']}/{p['pairs']} | "
                f"{', '.join('n/a' if math.isnan(x) else f'{x:.3f}' for x in sims) or '-'} | "
                f"{', '.join('n/a' if math.isnan(x) else f'{x:.3f}' for x in shares) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "demo_mni", help="a real-anatomy demo run folder")
    p.add_argument("--data-root", type=Path, default=REPO / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["plain", "encoder", "ft_lr1e-4", "nopos"], choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=1, help="chains (seed × variant) run at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per stage")
    p.add_argument("--analyse-only", action="store_true", help="only read the runs folder and print the table")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    args = p.parse_args(argv)
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:18s} {v.doc} (stage {v.stage}; compared with {', '.join(v.against)})")
        return
    if not args.analyse_only:
        run(args.runs, args.data_root, args.seeds, args.variants, args.jobs, args.threads)
    print(analyse(args.runs, args.seeds, args.variants))


if __name__ == "__main__":
    main()
