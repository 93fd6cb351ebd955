"""The demo pipeline end to end, with one results table: ``make demo`` / ``python -m gemini_pl.demo``.

Data (``--data``): ``mni`` (default) — real anatomy, 2D brain slices derived from the MNI152 2009
template with grey/white-matter labels (:mod:`gemini_pl.data.anatomy`; 40 unlabeled, 5 labeled,
20 test subjects; configs under ``experiments/demo_mni/``), or ``phantom`` — the 2D phantoms of
the tests (``experiments/demo/``). Stages (each also a plain ``gemini-pl fit`` config):

1. ``pretrain`` — GEMINI-MIP pre-training on the unlabeled images;
2. ``seg_scratch`` — segmentation with the five labeled images from scratch ("U-Net Five");
   ``seg_scratch_2x`` (opt-in for MNI) the same with twice the iterations (as many optimiser steps
   as GEMINI-Semi);
3. ``seg_gemini`` — the same network fine-tuned from the pre-training (``init_from``);
4. ``semi`` — GEMINI-Semi (five labeled images + the unlabeled ones);
5. ``reg_gemini`` — registration fine-tuned from the pre-training, scored against the Dice without
   warping; ``demons`` — SimpleITK symmetric-forces demons on the same test pairs, the classical
   anchor (MNI; its settings were chosen on training pairs); opt-in ``reg_scratch`` and
   ``reg_gemini_svf`` (velocity field, 7 scaling-and-squaring steps).

Seeds (``--seeds``; MNI default 0 1 2): each seed changes the network initialisation
(``seed_everything``), the augmentation stream (``model.aug_seed``) and, for MNI, the training
sampling (``data.seed``); the data and the test cases stay the same, so that every claim is a
paired per-case difference, computed per seed and summarised over seeds. ``--jobs 2`` runs two
stages at a time (one torch thread each). The compared rows share the data, the number of
iterations and the labeled batch size; every row is tested on its final weights. A finished stage
leaves ``stage.json`` in its folder: rerunning the same command resumes (finished stages are
reused), and a stage that fails is listed under the table while the others go on. The table states
the selection policy and the split; it is printed and written to ``<out>/results.md``; per-case
CSVs are under ``<out>/[seed<N>/]<stage>/results/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .claims import claim_verdict, paired_differences as _paired, sample_sd

__all__ = ["main", "run_pipeline"]

#: the demo's data choices: configs folder, title, seeds by default, the data seed as a sampling seed
DATASETS = {
    "mni": {"configs": "demo_mni", "title": "MNI152-derived 2D brain slices (99 x 117, 2 mm), grey/white matter",
            "seeds": [0, 1, 2], "sampling_seed": True},
    "phantom": {"configs": "demo", "title": "2D phantoms (64 x 64)", "seeds": [0], "sampling_seed": False},
}
#: the MNI demo data (gemini_pl.data.anatomy.generate_mni_dataset): the same files every time
MNI_COUNTS = {"num_unlabeled": 40, "num_labeled": 5, "num_test": 20, "num_val": 0, "seed": 0}


def _configs_dir(data: str = "phantom") -> Path:
    """``experiments/<demo folder>`` of the working directory, else of the source checkout."""
    name = DATASETS[data]["configs"]
    here = Path("experiments") / name
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments" / name


#: the stages ``make demo`` runs per dataset; the others are opt-in with ``--stages``
DEFAULT_STAGES = {"mni": ["pretrain", "seg_scratch", "seg_gemini", "semi", "reg_gemini", "demons"],
                  "phantom": ["pretrain", "seg_scratch", "seg_scratch_2x", "seg_gemini", "semi", "reg_gemini"]}
ALL_STAGES = ["pretrain", "seg_scratch", "seg_scratch_2x", "seg_gemini", "semi", "reg_gemini", "reg_scratch",
              "reg_gemini_svf", "demons"]
#: written into a stage's folder when it has finished (the demo resumes from it)
STAGE_RECORD = "stage.json"
#: stages that start from the pre-training checkpoint
NEEDS_PRETRAIN = ("seg_gemini", "reg_gemini", "reg_gemini_svf")


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


def _stage(name: str, config: Path, out: Path, overrides: list[str], test: bool = True, fit: bool = True,
           threads: int = 0) -> StageResult:
    """``fit`` a config (in this process, through the CLI's parser), then ``test`` the final weights
    (``fit=False``: test only, for methods with nothing to train)."""
    from lightning.pytorch.utilities import rank_zero_info

    from .callbacks import ResultsWriter
    from .callbacks.results import selection_policy
    from .cli import cli_main
    from .data.splits import describe_split

    run_dir = out / name
    done = run_dir / STAGE_RECORD
    if done.is_file():  # finished by an earlier run of the demo: reuse it (the demo resumes)
        rank_zero_info(f"\n=== demo stage {name}: done before, reusing {done}")
        return StageResult(**json.loads(done.read_text()))
    args = [
        "--config", str(config),
        "--trainer.default_root_dir", str(run_dir),
        *overrides,
    ]
    rank_zero_info(f"\n=== demo stage {name}: gemini-pl {'fit' if fit else 'test'} {' '.join(args)}")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cli = cli_main(args, run=False)  # default_root_dir: the stage's logs, checkpoints and results (GeminiCLI)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    writer = next((c for c in trainer.callbacks if isinstance(c, ResultsWriter)), None)
    if writer is not None:
        writer.config = f"{config} " + " ".join(overrides)
    if fit:
        trainer.fit(model, datamodule=dm)
    result = StageResult(name, 0.0, steps=int(trainer.global_step),
                         iterations=int(trainer.fit_loop.total_batch_idx + 1) if fit else 0)
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
    done.write_text(json.dumps(asdict(result)))
    return result


def _fmt(mean: float, std: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_differences(ra: StageResult, rb: StageResult, col_a: str, col_b: str) -> list[float]:
    """Per-case ``a[col_a] − b[col_b]`` over the cases both stages scored (matched by case name)."""
    return _paired(ra.rows, rb.rows, col_a, col_b)


def _over_seeds(per_seed: list[StageResult], column: str, digits: int = 1) -> str:
    """mean ± std over seeds of each seed's case mean (one seed: mean ± std over cases)."""
    stats = [r.stat(column) for r in per_seed]
    stats = [s for s in stats if s[2]]
    if not stats:
        return "n/a"
    if len(per_seed) == 1:
        return _fmt(stats[0][0], stats[0][1], digits)
    means = [s[0] for s in stats]
    return _fmt(statistics.fmean(means), sample_sd(means), digits)


SEG_ROWS = [("U-Net Five (scratch)", "seg_scratch", "random", "5"),
            ("U-Net Five (scratch), 2x iterations", "seg_scratch_2x", "random", "5"),
            ("U-Net Five fine-tuned", "seg_gemini", "GEMINI-MIP", "5"),
            ("GEMINI-Semi", "semi", "random", "5 + unlabeled pairs")]
REG_ROWS = [("reg_scratch", "Registration (scratch)", "random"),
            ("reg_gemini", "Registration fine-tuned", "GEMINI-MIP"),
            ("reg_gemini_svf", "Registration fine-tuned, velocity field (7 squarings)", "GEMINI-MIP"),
            ("demons", "SimpleITK symmetric-forces demons (classical anchor)", "-")]


def render_table(results: dict[int, dict[str, StageResult]], total_seconds: float, threads: int,
                 data: str = "phantom", commit: str | None = None, jobs: int = 1, failures: list[str] | None = None) -> str:
    """The one results table of the demo, plus the claims it checks (measured, not assumed).

    ``results[seed][stage]``; a stage run once for every seed (``demons``: deterministic) may be
    present under the first seed only.
    """
    from .callbacks.results import FINAL_WEIGHTS

    seeds = sorted(results)

    def runs(key: str) -> list[StageResult]:
        got = [results[s][key] for s in seeds if key in results[s]]
        if len(got) == 1 and len(seeds) > 1 and key == "demons":
            return got * len(seeds)
        return got

    every = [r for s in seeds for r in results[s].values()]
    n_seg = max((len(r.rows) for r in every if r.name.startswith(("seg", "semi"))), default=0)
    n_reg = max((len(r.rows) for r in every if r.name.startswith(("reg", "demons"))), default=0)
    policies = sorted({r.selection for r in every if r.selection}) or ["n/a (nothing tested)"]
    splits = sorted({r.split for r in every if r.split}) or ["n/a"]
    over = (f"mean ± std over the {len(seeds)} seeds of each seed's mean over cases" if len(seeds) > 1
            else "mean ± std over cases, one seed")
    lines = [
        f"# gemini-pl demo: {DATASETS[data]['title']}, small widths, CPU",
        "",
        f"Segmentation: {n_seg} held-out test cases, foreground classes averaged per case; AVD/HD95 in mm. "
        f"Registration: {n_reg} held-out test pairs, Dice of the warped moving labels (moving → fixed). "
        f"Values: {over}.",
        "",
        f"- data: {DATASETS[data]['title']}" + (" — gemini_pl.data.anatomy, data seed 0" if data == "mni" else ""),
        f"- seeds: {', '.join(map(str, seeds))} (initialisation, augmentation"
        + (", training sampling" if DATASETS[data]["sampling_seed"] else "") + "; same data and test cases)",
        f"- selection: {' | '.join(policies)}" + (" (the weights after the last training step of every row)"
                                                   if policies == [FINAL_WEIGHTS] else ""),
        f"- split: {' | '.join(splits)}" + (" (one hash per seed: the seed orders the labeled training list; every "
                                             "list holds the same files)" if len(splits) > 1 else ""),
    ]
    if commit:
        lines.append(f"- commit: {commit}")
    lines += [
        "",
        "| row | init | labeled | iterations (optimiser steps) | Dice (%) | AVD (mm) | HD95 (mm) | folding (%) | SDlogJ | time per seed (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def seconds(rs: list[StageResult]) -> str:
        return f"{statistics.fmean(r.seconds for r in rs):.0f}"

    for label, key, init, labeled in SEG_ROWS:
        rs = runs(key)
        if not rs:
            continue
        unable = sum(len(r.rows) - r.stat("avd")[2] for r in rs)
        avd = _over_seeds(rs, "avd", 2) + (f" ({unable} unable)" if unable else "")
        lines.append(f"| {label} | {init} | {labeled} | {rs[0].iterations} ({rs[0].steps}) | {_over_seeds(rs, 'dice')} | "
                     f"{avd} | {_over_seeds(rs, 'hd95', 2)} | - | - | {seconds(rs)} |")
    anchor = runs("reg_gemini") or runs("demons")
    if anchor:
        lines.append(f"| Registration: no warping | - | 0 | - | {_over_seeds(anchor, 'dice_unwarped')} | - | - | 0.00 | - | - |")
    for key, label, init in REG_ROWS:
        rs = runs(key)
        if not rs:
            continue
        hd = _over_seeds(rs, "hd95", 2) if any(r.stat("hd95")[2] for r in rs) else _over_seeds(rs, "hd95_vox", 2) + " vox"
        its = "-" if key == "demons" else f"{rs[0].iterations} ({rs[0].steps})"
        lines.append(f"| {label} | {init} | 0 | {its} | {_over_seeds(rs, 'dice')} | - | {hd} | "
                     f"{_over_seeds(rs, 'folding', 2)} | {_over_seeds(rs, 'sdlogj', 3)} | {seconds(rs)} |")
    pre = runs("pretrain")
    if pre:
        lines.append(f"| (GEMINI-MIP pre-training) | random | 0 | {pre[0].iterations} ({pre[0].steps}) | - | - | - | - | - | {seconds(pre)} |")
    lines += ["", "Claims (measured above; A − B in Dice points, paired per test case within each seed):"]

    def claim(text: str, a: str, b: str, col_a: str = "dice", col_b: str = "dice") -> None:
        ra, rb = runs(a), runs(b)
        if not ra or not rb or len(ra) != len(rb):
            return
        mean_a = statistics.fmean(r.stat(col_a)[0] for r in ra)
        mean_b = statistics.fmean(r.stat(col_b)[0] for r in rb)
        verdict = claim_verdict([paired_differences(x, y, col_a, col_b) for x, y in zip(ra, rb)])
        lines.append(f"- {text}: {mean_a:.1f} vs {mean_b:.1f} % ({mean_a - mean_b:+.1f}); {verdict}")

    claim("GEMINI-Semi (A, 5 labeled) beats U-Net Five (B)", "semi", "seg_scratch")
    claim("(reference) GEMINI-Semi (A) vs U-Net Five with as many optimiser steps (B, 2x iterations)", "semi", "seg_scratch_2x")
    claim("fine-tuning from GEMINI pre-training (A) beats the same network from scratch (B)", "seg_gemini", "seg_scratch")
    claim("registration fine-tuned from GEMINI (A) beats no warping (B)", "reg_gemini", "reg_gemini", "dice", "dice_unwarped")
    claim("registration fine-tuned from GEMINI (A) beats SimpleITK demons (B)", "reg_gemini", "demons")
    claim("(reference) registration fine-tuned from GEMINI (A) vs from scratch (B)", "reg_gemini", "reg_scratch")
    for key, label in (("reg_gemini", "registration fine-tuned from GEMINI"), ("reg_gemini_svf", "velocity-field option"),
                       ("demons", "demons")):
        rs = runs(key)
        if rs:
            lines.append(f"- folding of {label}: {_over_seeds(rs, 'folding', 3)} % of pixels")
    if failures:
        lines += ["", "Stages that did not finish (rerun the same command to resume; finished stages are reused):"]
        lines += [f"- {f}" for f in failures]
    lines += [
        "",
        "A claim holds only when it holds in every seed and its mean over seeds exceeds two standard errors "
        "over seeds; otherwise it is reported as not holding.",
        f"Total wall time {total_seconds:.0f} s ({jobs} stage{'s' if jobs != 1 else ''} at a time, "
        f"{threads} torch thread{'s' if threads != 1 else ''} each).",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class _Task:
    seed: int
    name: str
    config: Path
    overrides: list[str]
    out: Path
    fit: bool = True


def _run_task(task: _Task, threads: int) -> StageResult:
    """One stage in a worker process (the CLI parser and the trainer live there)."""
    from .runtime import keep_freed_memory

    keep_freed_memory()
    os.environ.setdefault("WANDB_MODE", "offline")
    return _stage(task.name, task.config, task.out, task.overrides, test=True, fit=task.fit, threads=threads)


def _plan(data: str, seeds: list[int], wanted: list[str], out: Path, fit_common: list[str], test_common: list[str],
          quick: bool) -> list[_Task]:
    """The stages to run: (seed, stage, config, overrides, output folder); a fitted stage takes
    ``fit_common`` and the seed's settings, a test-only one (demons) ``test_common``."""
    configs = _configs_dir(data)
    epochs = 1 if quick else int(yaml.safe_load((configs / "seg.yaml").read_text())["trainer"]["max_epochs"])
    tasks = []
    for seed in seeds:
        base = out if len(seeds) == 1 else out / f"seed{seed}"
        seeded = ["--seed_everything", str(seed), "--model.init_args.aug_seed", str(seed)]
        if DATASETS[data]["sampling_seed"]:
            seeded += ["--data.init_args.seed", str(seed)]
        ckpt = base / "pretrain" / "checkpoints" / "last.ckpt"
        stages = {
            "pretrain": ("pretrain.yaml", []),
            "seg_scratch": ("seg.yaml", []),
            # reference: as many optimiser steps as GEMINI-Semi takes (its iterations take two)
            "seg_scratch_2x": ("seg.yaml", ["--trainer.max_epochs", str(2 * epochs)]),
            "seg_gemini": ("seg.yaml", ["--model.init_args.init_from", str(ckpt)]),
            "semi": ("semi.yaml", []),
            "reg_gemini": ("reg.yaml", ["--model.init_args.init_from", str(ckpt)]),
            "reg_scratch": ("reg.yaml", []),
            "reg_gemini_svf": ("reg.yaml", ["--model.init_args.init_from", str(ckpt), "--model.init_args.integration_steps", "7"]),
            "demons": ("demons.yaml", []),
        }
        for name in ALL_STAGES:
            if name not in wanted or (name == "demons" and seed != seeds[0]):  # demons: deterministic, once
                continue
            config, extra = stages[name]
            if not (configs / config).is_file():
                raise ValueError(f"stage {name} has no config for the {data} demo ({configs / config})")
            fit = name != "demons"
            overrides = [*fit_common, *extra, *seeded] if fit else [*test_common, *extra]
            tasks.append(_Task(seed, name, configs / config, overrides, base, fit=fit))
    return tasks


def _execute(tasks: list[_Task], jobs: int, threads: int) -> tuple[dict[int, dict[str, StageResult]], list[str]]:
    """Run the tasks, ``jobs`` at a time (``jobs`` 1: in this process, in order); a fine-tuning stage
    starts after its seed's pre-training. A stage that fails is reported (``failures``), its
    dependants are skipped, and the others go on; finished stages are kept for a rerun."""
    results: dict[int, dict[str, StageResult]] = {t.seed: {} for t in tasks}
    failures: list[str] = []
    failed_pretrain: set[int] = set()

    def record(t: _Task, run) -> None:
        try:
            results[t.seed][t.name] = run()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a CLI error is a SystemExit; report it and go on
            failures.append(f"seed {t.seed} {t.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if t.name == "pretrain":
                failed_pretrain.add(t.seed)

    def blocked(t: _Task) -> bool:
        if t.name in NEEDS_PRETRAIN and t.seed in failed_pretrain:
            failures.append(f"seed {t.seed} {t.name}: skipped (its pre-training failed)")
            return True
        return False

    if jobs <= 1:
        for t in tasks:
            if not blocked(t):
                record(t, lambda t=t: _stage(t.name, t.config, t.out, t.overrides, test=True, fit=t.fit))
        return results, failures
    import multiprocessing as mp

    pending = list(tasks)
    running: dict[Any, _Task] = {}

    def ready(t: _Task) -> bool:
        return t.name not in NEEDS_PRETRAIN or "pretrain" in results[t.seed] or t.seed in failed_pretrain or not any(
            x.seed == t.seed and x.name == "pretrain" for x in tasks)

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        while pending or running:
            for t in [t for t in pending if ready(t)][: max(0, jobs - len(running))]:
                pending.remove(t)
                if not blocked(t):
                    running[pool.submit(_run_task, t, threads)] = t
            if not running:
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                t = running.pop(fut)
                record(t, fut.result)
    return results, failures


def run_pipeline(out: str | Path = "runs/demo", quick: bool = False, threads: int = 1, stages: list[str] | None = None,
                 seed: int | None = None, data: str = "mni", seeds: list[int] | None = None, jobs: int = 1,
                 data_root: str | Path = "data") -> str:
    """Run the demo stages over the seeds and return the results table (also ``<out>/results.md``).

    ``data``: ``"mni"`` or ``"phantom"``; ``seeds`` (default: the dataset's, see :data:`DATASETS`;
    ``seed`` is one seed); ``jobs``: stages run at a time (each in its own process with
    ``threads`` torch threads); ``quick``: a couple of iterations per stage (a smoke run).
    """
    import torch

    if data not in DATASETS:
        raise ValueError(f"data must be one of {sorted(DATASETS)}, got {data!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads > 0:
        torch.set_num_threads(threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    seeds = [seed] if seed is not None else list(seeds or DATASETS[data]["seeds"])
    test_common: list[str] = ["--data.init_args.root", str(data_root)]
    common = list(test_common)
    if quick:  # a smoke run of the whole pipeline (tests): one short epoch per stage, a few test cases
        common += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1",
                   "--trainer.limit_test_batches", "3"]
        test_common += ["--trainer.limit_test_batches", "3"]
        if data == "phantom":
            common += ["--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "2"]
    if data == "mni":
        from .data.anatomy import generate_mni_dataset

        generate_mni_dataset(data_root, spatial_dims=2, **MNI_COUNTS)
    wanted = stages or DEFAULT_STAGES[data]
    t0 = time.perf_counter()
    tasks = _plan(data, seeds, wanted, out, common, test_common, quick)
    results, failures = _execute(tasks, jobs, threads)
    from .callbacks.results import git_commit

    table = render_table(results, time.perf_counter() - t0, threads if threads > 0 else torch.get_num_threads(),
                         data=data, commit=git_commit(), jobs=max(1, jobs), failures=failures)
    (out / "results.md").write_text(table)
    print("\n" + table, flush=True)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gemini_pl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mni", choices=sorted(DATASETS),
                        help="mni: MNI152-derived brain slices (default; needs nilearn); phantom: the test phantoms")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--data-root", default="data", help="where the demo data are written and read (default data)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a couple of iterations per stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds (initialisation, augmentation, sampling); default: mni 0 1 2, phantom 0")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at a time, each in its own process (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per stage (default 1: fastest on small, shared CPUs; 0 = torch's default)")
    parser.add_argument("--stages", nargs="*", default=None, choices=ALL_STAGES,
                        help="stages to run (default: mni " + " ".join(DEFAULT_STAGES["mni"]) + "; phantom "
                        + " ".join(DEFAULT_STAGES["phantom"]) + "); the fine-tuning stages need pretrain's checkpoint")
    args = parser.parse_args(argv)
    from .errors import GeminiError
    from .runtime import keep_freed_memory

    keep_freed_memory()

    try:
        run_pipeline(args.out, quick=args.quick, threads=args.threads, stages=args.stages, data=args.data,
                     seeds=args.seeds, jobs=args.jobs, data_root=args.data_root)
    except GeminiError as exc:
        print(f"gemini-pl demo: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
