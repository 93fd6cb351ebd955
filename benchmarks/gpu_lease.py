"""The parts of ``benchmarks/gpu_lease.sh``: one GPU run's measurements, each part one command.

Usage (the shell script runs them in this order, each under its own time cap)::

    python benchmarks/gpu_lease.py device     --out OUT [--dry]
    python benchmarks/gpu_lease.py published  --out OUT [--dry] --budget S
    python benchmarks/gpu_lease.py throughput --out OUT [--dry] --budget S
    python benchmarks/gpu_lease.py data       --out OUT [--dry] --budget S
    python benchmarks/gpu_lease.py scale      --out OUT [--dry] --budget S [--work DIR]

Every part writes its own file(s) under ``OUT`` as soon as it has a row, so that a part stopped at
its cap still leaves what it measured:

- ``device.txt`` — GPU, driver, versions, CPU cores, commit, the published code's path;
- ``published_vs_ours.md`` — the published GEMINI-MIP iteration (``published/run_published.py``)
  against ``GeminiPretrain``'s at the same shape, widths, batch and precision (fp32), with the
  GPU-busy share and the kernels that took longest on each side;
- ``throughput.md`` / ``throughput.json`` — every module's step at paper scale (3D 128³, 2D 512² × 5,
  full widths), fp32 / bf16-mixed, eager / compiled / CUDA graphs, with peak memory and busy share
  (``modules.run_one``), in priority order until the budget is spent;
- ``data_pipeline.md`` — batches per second of the training loader (``GeminiDataModule``) at paper
  scale with 0 and many workers, against the step rates of ``throughput.json``;
- ``scale_evidence.md`` / ``scale_cases.json`` — GEMINI-MIP pre-training on ``synthseg2d`` at full
  widths for the time budget, then segmentation fine-tuned from it against the same network from
  scratch with 1 and 5 labeled subjects over three seeds, paired per test case
  (:mod:`gemini_pl.claims`), through the demo's stage runner (:mod:`gemini_pl.demo`).

``--dry`` runs the same code on tiny sizes on the CPU (the test suite runs it).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

FULL = [32, 64, 128, 256, 512, 256, 128, 64, 32]
TINY = [8, 8, 16, 16, 32, 16, 16, 8, 8]  # dry runs
#: the pre-training iterations the scale part aims at (50x the CPU demo's 200)
SCALE_TARGET_ITERATIONS = 10_000
#: seconds of the scale part kept for the fine-tuning runs after the pre-training (GPU)
FT_RESERVE_S = 70


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _num(x: Any, fmt: str = ".1f", missing: str = "n/a") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return missing
    return format(v, fmt) if math.isfinite(v) else missing


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ---------------------------------------------------------------------------------------- device


def part_device(out: Path, dry: bool) -> None:
    lines = [f"mode: {'dry run (CPU, tiny sizes)' if dry else 'GPU run'}", f"python: {sys.version.split()[0]}",
             f"machine: {platform.platform()}, {os.cpu_count()} CPU cores"]
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        lines.append(f"nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.SubprocessError) as exc:
        lines.append(f"nvidia-smi: not available ({type(exc).__name__})")
    import importlib.metadata
    import importlib.util

    # versions from the installed metadata (importing every package would take seconds)
    for dist, module in (("torch", "torch"), ("lightning", "lightning"), ("monai", "monai"), ("jsonargparse", "jsonargparse"),
                         ("SimpleITK", "SimpleITK"), ("nibabel", "nibabel"), ("numpy", "numpy"), ("scipy", "scipy"),
                         ("opencv-python-headless", "cv2")):
        if importlib.util.find_spec(module) is None:
            lines.append(f"{dist}: MISSING" + (" (only the published 2D script's own loader needs it; not used)" if module == "cv2" else ""))
            continue
        try:
            lines.append(f"{dist}: {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{dist}: present (version unknown)")
    lines.append(f"gemini_pl: {'importable' if importlib.util.find_spec('gemini_pl') else 'MISSING (PYTHONPATH=src?)'}")
    try:
        import torch

        lines.append(f"CUDA: {torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name()}, "
                     f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB" if torch.cuda.is_available() else ""))
        lines.append(f"torch threads: {torch.get_num_threads()}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"CUDA: unknown ({exc})")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    lines.append(f"commit: {commit or 'unknown (no git)'}")
    pub = os.environ.get("GEMINI_PUBLISHED", "")
    lines.append(f"published code: {pub if pub else 'not given (GEMINI_PUBLISHED unset or empty)'}"
                 + ("" if not pub or Path(pub, 'GEMINI_SS_MIP').is_dir() else " (no GEMINI_SS_MIP folder there)"))
    text = "\n".join(lines) + "\n"
    _write(out / "device.txt", text)
    print(text, end="")


# ------------------------------------------------------------------------------------- published


def _ours(name: str, config: tuple, dry: bool, steps: int, warmup: int, precision: str = "32",
          option: str = "eager") -> dict[str, Any]:
    """One ``modules.run_one`` row in this process (GPU memory and compile caches freed after it)."""
    import torch

    import modules
    from modules import run_one

    if dry:  # the CPU reference GEMM of % of peak costs seconds on a small CPU; a dry run does not need it
        modules._peak_flops = lambda precision: (float("nan"), "not measured (dry run)")
    try:
        return run_one(name, not dry, precision, steps, warmup, torch.cuda.is_available(), option, config=config)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            torch._dynamo.reset()
        except Exception:  # noqa: BLE001
            pass


def _published(root: str, dims: int, size: int, batch: int, steps: int, warmup: int, widths: list[int] | None,
               timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "published" / "run_published.py"), "--root", root, "--dims", str(dims),
           "--size", str(size), "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)]
    if widths:
        cmd += ["--widths", *map(str, widths)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, timeout))
    except subprocess.TimeoutExpired:
        return {"error": f"stopped at its time cap ({timeout:.0f} s)"}
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        print(res.stderr[-4000:], file=sys.stderr)
        return {"error": tail}
    return json.loads(res.stdout.strip().splitlines()[-1])


def part_published(out: Path, dry: bool, budget: float) -> None:
    dl = Deadline(budget)
    root = os.environ.get("GEMINI_PUBLISHED", "")
    have = bool(root) and (Path(root) / "GEMINI_SS_MIP").is_dir()
    widths = TINY if dry else FULL
    steps, warmup = (1, 1) if dry else (5, 2)  # gemini-pl (its first iteration sets Lightning's loop up)
    their_steps, their_warmup = (1, 1) if dry else (4, 1)  # published: slower iterations, a plain loop
    # label, our benchmark name, dims, size, batch, target speed-up per iteration
    cases = [("3D", "pretrain-3d", 3, 16 if dry else 128, 1, 2.0), ("2D", "pretrain-2d", 2, 64 if dry else 512, 2 if dry else 5, 1.5)]
    path = out / "published_vs_ours.md"
    head = [
        "## Published GEMINI-MIP vs gemini-pl, one iteration, same GPU and configuration",
        "",
        f"Both sides: full widths {FULL} (dry run: {TINY}), fp32 (TF32 convolutions where cuDNN allows), "
        "synthetic images from memory, both optimiser steps of an iteration. Published: the authors' "
        "GEMINI_SS_MIP_{2d,3d}.py `Trainer.train_epoch` as it is (CPU appearance augmentation per sample, spatial "
        "augmentation, `train_iterator`), its loader swapped for synthetic tensors, `iters` set, and its restoration "
        "call given `res=True` (benchmarks/published/run_published.py). gemini-pl: `GeminiPretrain` through "
        "`Trainer.fit` (benchmarks/modules.py; augmentation and corruption on the GPU inside the step).",
        "",
    ]
    if not have:
        why = "GEMINI_PUBLISHED is not set" if not root else f"{root}/GEMINI_SS_MIP not found"
        skip = f"published code: skipped — {why} (see benchmarks/published/README.md); gemini-pl's side still runs."
        print(skip, flush=True)
        head += [skip, ""]
    else:
        head += [f"published code: {root} (commit {_published_commit(root)})", ""]
    table = ["| input | published iteration ms | published training steps only ms | gemini-pl iteration ms | "
             "speed-up per iteration | target | met | speed-up vs training steps only | GPU busy published / gemini-pl | "
             "peak memory published / gemini-pl |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    details: list[str] = []
    rows: list[str] = []

    def flush() -> None:
        _write(path, "\n".join(head + table + rows + [""] + details) + "\n")

    flush()
    for label, name, dims, size, batch, target in cases:
        shape = f"{label} {size}{'³' if dims == 3 else '²'} ×{batch}"
        theirs: dict[str, Any] = {"error": "skipped (no published code)"}
        if have:
            if dl.left() < 20:
                theirs = {"error": "skipped (part's time cap)"}
            else:
                theirs = _published(root, dims, size, batch, their_steps, their_warmup, TINY if dry else None,
                                    timeout=dl.left() * (0.5 if label == "3D" else 0.75))
        ours: dict[str, Any]
        if dl.left() < 10:
            ours = {"error": "skipped (part's time cap)"}
        else:
            try:
                ours = _ours(name, ("pretrain", dims, size, batch, widths), dry, steps, warmup)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                ours = {"error": f"{type(exc).__name__}: {exc}"}
        t_it, t_step, o_it = theirs.get("iteration_ms"), theirs.get("train_step_ms"), ours.get("step_ms")
        speed = t_it / o_it if t_it and o_it else float("nan")
        speed_step = t_step / o_it if t_step and o_it else float("nan")
        met = "n/a" if not math.isfinite(speed) else ("yes" if speed >= target else "no")
        mem = lambda r: f"{r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else "n/a"  # noqa: E731
        rows.append(f"| {shape} | {_num(t_it)} | {_num(t_step)} | {_num(o_it)} | {_num(speed, '.2f')}{'x' * math.isfinite(speed)} | "
                    f"≥ {target}x | {met} | {_num(speed_step, '.2f')}{'x' * math.isfinite(speed_step)} | {_num(theirs.get('gpu_busy_pct'), '.0f')} / {_num(ours.get('gpu_busy_pct'), '.0f')} % | "
                    f"{mem(theirs)} / {mem(ours)} |")
        for side, r in (("published", theirs), ("gemini-pl", ours)):
            if "error" in r:
                details.append(f"- {shape} {side}: {r['error']}")
        for side, r in (("published", theirs), ("gemini-pl", ours)):
            if r.get("top_kernels"):
                details += ["", f"Largest GPU time, {side}, {shape} (3 profiled iterations):", "", "```", r["top_kernels"].rstrip(), "```"]
        flush()
    print((out / "published_vs_ours.md").read_text(), end="")


def _published_commit(root: str) -> str:
    sys.path.insert(0, str(BENCH / "published"))
    from run_published import _commit

    return _commit(Path(root))


# ------------------------------------------------------------------------------------ throughput

#: (name, precision, option) in the order they run until the budget is spent: the bf16 target
#: pair first, the other 3D modules eager, the compiled 3D pre-training, then the 2D modules and
#: the other compiled variants. Compiled rows run in a child process (a compile that outlasts the
#: budget is stopped there, and the part goes on).
PLAN = [(n, p, "eager") for n in ("pretrain-3d", "pretrain-2d", "seg-3d", "reg-3d", "semi-3d") for p in ("32", "bf16-mixed")] + [
    ("pretrain-3d", "bf16-mixed", "compile"), ("pretrain-3d", "bf16-mixed", "cudagraphs"),
] + [(n, p, "eager") for n in ("seg-2d", "reg-2d", "semi-2d") for p in ("32", "bf16-mixed")] + [
    ("pretrain-3d", "32", "compile"), ("pretrain-2d", "bf16-mixed", "compile"), ("pretrain-2d", "bf16-mixed", "cudagraphs"),
    ("seg-3d", "bf16-mixed", "compile"), ("reg-3d", "bf16-mixed", "compile"), ("semi-3d", "bf16-mixed", "compile"),
]
DRY_PLAN = [("pretrain-3d", "32", "eager"), ("pretrain-3d", "bf16-mixed", "eager"), ("pretrain-2d", "32", "eager"),
            ("pretrain-3d", "bf16-mixed", "compile")]


def _child_row(name: str, precision: str, option: str, steps: int, warmup: int, timeout: float) -> dict[str, Any]:
    """One paper-scale row of ``modules.py`` in a child process, stopped after ``timeout`` seconds."""
    cmd = [sys.executable, str(BENCH / "modules.py"), "--one", f"{name}:{precision}:{option}", "--paper", "--busy",
           "--steps", str(steps), "--warmup", str(warmup)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, WANDB_MODE="disabled"))
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"not finished within the {timeout:.0f} s the part had left (compiling counts)") from None
    if res.returncode != 0:
        print(res.stderr[-4000:], file=sys.stderr)
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise RuntimeError(last)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _shape(name: str, dry: bool) -> tuple:
    from modules import PAPER_CONFIGS

    kind, dims, size, batch, widths = PAPER_CONFIGS[name]
    if dry:
        size, batch, widths = (16 if dims == 3 else 64), (1 if dims == 3 else 2), TINY
    return kind, dims, size, batch, widths


def part_throughput(out: Path, dry: bool, budget: float) -> None:
    import torch

    dl = Deadline(budget)
    cuda = torch.cuda.is_available()
    steps, warmup = (1, 1) if dry else (3, 1)
    rows: list[dict[str, Any]] = []
    lines = ["| module | input | precision | option | step ms (median) | steps/s | peak memory | GFLOP/step | % of peak | GPU busy |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    # seconds a row needs at least (eager: updated as rows run; compiled: given what is left, stopped if it runs over)
    cost = {"eager": 6.0 if cuda else 4.0, "compile": 30.0, "cudagraphs": 30.0}

    def flush() -> None:
        _write(out / "throughput.json", json.dumps(rows, indent=1, default=str))
        _write(out / "throughput.md", "\n".join(_throughput_report(lines, rows, notes, dry)) + "\n")

    flush()
    for name, precision, option in (DRY_PLAN if dry else PLAN):
        kind, dims, size, batch, widths = cfg = _shape(name, dry)
        shape = f"{dims}D {size}{'²' if dims == 2 else '³'} ×{batch}"
        if option != "eager" and not cuda:
            notes.append(f"- {name} {precision} {option}: skipped (compiled variants run on CUDA only; the dry run checks the plumbing)")
            flush()
            continue
        if dl.left() < cost[option]:
            notes.append(f"- {name} {precision} {option}: skipped (part's time cap: {dl.left():.0f} s left, a row takes about {cost[option]:.0f} s)")
            flush()
            continue
        t0 = time.monotonic()
        try:
            if option == "eager":
                r = _ours(name, cfg, dry, steps, warmup, precision, option)
            else:  # warm-up 2: the first iterations compile (and record the graphs)
                r = _child_row(name, precision, option, steps, 2, timeout=dl.left() - 2)
        except Exception as exc:  # noqa: BLE001 - a failed configuration is a row of the report
            notes.append(f"- {name} {precision} {option}: failed — {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            flush()
            continue
        took = time.monotonic() - t0
        if option == "eager":
            cost[option] = max(cost[option], 1.2 * took) if rows else 1.2 * took
        eager = next((e for e in rows if (e["name"], e["precision"], e["option"]) == (name, precision, "eager")), None)
        if not math.isfinite(r["gflop"]) and eager is not None:  # a compiled network does the eager FLOPs
            r["gflop"] = eager["gflop"]
            r["pct_peak"] = eager["pct_peak"] * eager["step_ms"] / r["step_ms"]
        r.pop("top_kernels", None) if option != "eager" else None
        r["name"], r["seconds"] = name, took
        rows.append(r)
        mem = f"{r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else f"{r.get('peak_rss_mib', float('nan')):.0f} MiB RSS"
        lines.append(f"| {r['module']} | {shape}, widths {r['widths']} | {precision} | {option} | {r['step_ms']:.1f} | "
                     f"{1e3 / r['step_ms']:.2f} | {mem} | {_num(r['gflop'])} | {_num(r['pct_peak'])} | {_num(r.get('gpu_busy_pct'), '.0f')} % |")
        flush()
    print((out / "throughput.md").read_text(), end="")


def _throughput_report(lines: list[str], rows: list[dict[str, Any]], notes: list[str], dry: bool) -> list[str]:
    head = ["## Throughput at paper scale: every module's training step"
            + (" (dry run: tiny sizes on the CPU)" if dry else " (3D 128³ ×1, 2D 512² ×5, full widths)"), "",
            "Median of the timed iterations after warm-up (random in-memory batches, `Trainer.fit`, both optimiser steps of "
            "GeminiPretrain/GeminiSemi); peak memory = `torch.cuda.max_memory_allocated` over the timed steps; GPU busy = "
            "union of the kernels' intervals over three profiled iterations (target ≥ 90 %).", ""]
    by = {(r["name"], r["precision"], r["option"]): r for r in rows}
    speed = ["", "bf16-mixed vs fp32 (target ≥ 1.7x at 3D 128³):", "",
             "| module | option | fp32 ms | bf16-mixed ms | bf16 speed-up | GPU busy fp32 / bf16 |", "|---|---|---:|---:|---:|---:|"]
    n = 0
    for (name, prec, option), r in by.items():
        b = by.get((name, "bf16-mixed", option))
        if prec == "32" and b:
            n += 1
            speed.append(f"| {name} | {option} | {r['step_ms']:.1f} | {b['step_ms']:.1f} | {r['step_ms'] / b['step_ms']:.2f}x | "
                         f"{_num(r.get('gpu_busy_pct'), '.0f')} / {_num(b.get('gpu_busy_pct'), '.0f')} % |")
    if not n:
        speed.append("| (no fp32/bf16 pair measured) | | | | | |")
    best = {}
    for r in rows:
        key = r["name"]
        if key not in best or r["step_ms"] < best[key]["step_ms"]:
            best[key] = r
    fastest = ["", "Fastest variant per module:", ""] + [
        f"- {k}: {r['precision']} {r['option']}, {r['step_ms']:.1f} ms ({1e3 / r['step_ms']:.2f} steps/s)" for k, r in best.items()]
    return head + lines + speed + fastest + ([""] + notes if notes else [])


# ------------------------------------------------------------------------------------------ data


def _write_2d(folder: Path, n: int, size: int, seed: int = 0) -> None:
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    target = folder / "train/unlabeled/image"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        img = (img * 2400 + 40 * torch.randn(img.shape, generator=g)).clamp(-1000, 3000)
        nib.save(nib.Nifti1Image(img.numpy().astype(np.int16), np.eye(4)), str(target / f"case_{i:03d}.nii.gz"))


def _loader_rate(root: Path, dims: int, batch: int, cache: bool, workers: int, batches: int) -> tuple[float, float]:
    """(setup seconds, training batches per second) of ``GeminiDataModule``'s training loader."""
    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(root), dataset="bench", spatial_dims=dims, batch_size=batch, num_workers=workers,
                          cache=cache, intensity="ct")
    t0 = time.perf_counter()
    dm.setup("fit")
    setup = time.perf_counter() - t0
    it = iter(dm.train_dataloader())
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches / (time.perf_counter() - t0)
    del it
    return setup, rate


def part_data(out: Path, dry: bool, budget: float) -> None:
    import tempfile

    import torch

    from data_throughput import write_volumes

    dl = Deadline(budget)
    cores = os.cpu_count() or 1
    many = max(2, min(cores - 2, 12))
    steps = _step_rates(out / "throughput.json")
    inputs = [("3D", 3, 16 if dry else 128, 1, 4 if dry else 8, "pretrain-3d"),
              ("2D", 2, 64 if dry else 512, 2 if dry else 5, 6 if dry else 30, "pretrain-2d")]
    batches = 4 if dry else 15
    path = out / "data_pipeline.md"
    lines = [f"## Data pipeline at paper scale: `GeminiDataModule` training loader ({cores} CPU cores, torch threads {torch.get_num_threads()})", "",
             "Synthetic CT-like int16 NIfTI (.nii.gz) files written first; pairs mode (two images per sample), intensity `ct`. "
             "Batches/s after one warm-up batch; \"keeps up\" compares it with the fastest measured GeminiPretrain step rate of "
             "throughput.json at the same input (eager fp32 / fastest variant).", "",
             "| input | cache | workers | setup s | batches/s | GeminiPretrain steps/s (fp32 eager / fastest) | keeps up with the fastest |",
             "|---|---|---:|---:|---:|---:|---|"]
    notes: list[str] = []
    _write(path, "\n".join(lines) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for label, dims, size, batch, cases, name in inputs:
            if dl.left() < 5:
                notes.append(f"- {label}: skipped (part's time cap)")
                continue
            root = Path(tmp) / label
            if dims == 3:
                write_volumes(root / "bench", cases, size)
            else:
                _write_2d(root / "bench", cases, size)
            fp32, fastest = steps.get(name, (float("nan"), float("nan")))
            for cache in (True, False):
                for workers in (0, many):
                    if dl.left() < 3:
                        notes.append(f"- {label} cache {cache} workers {workers}: skipped (part's time cap)")
                        continue
                    try:
                        setup, rate = _loader_rate(root, dims, batch, cache, workers, batches)
                    except Exception as exc:  # noqa: BLE001
                        notes.append(f"- {label} cache {cache} workers {workers}: failed — {type(exc).__name__}: {exc}")
                        continue
                    keeps = "n/a (no step rate)" if not math.isfinite(fastest) else ("yes" if rate >= fastest else "no")
                    lines.append(f"| {label} {size}{'³' if dims == 3 else '²'} ×{batch} | {'memory' if cache else 'none'} | {workers} | "
                                 f"{setup:.2f} | {rate:.1f} | {_num(fp32, '.2f')} / {_num(fastest, '.2f')} | {keeps} |")
                    _write(path, "\n".join(lines + ([""] + notes if notes else [])) + "\n")
    _write(path, "\n".join(lines + ([""] + notes if notes else [])) + "\n")
    print(path.read_text(), end="")


def _step_rates(path: Path) -> dict[str, tuple[float, float]]:
    """name -> (fp32 eager steps/s, fastest steps/s) from throughput.json (empty when missing)."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, tuple[float, float]] = {}
    for name in {r["name"] for r in rows}:
        mine = [r for r in rows if r["name"] == name]
        fp32 = next((1e3 / r["step_ms"] for r in mine if r["precision"] == "32" and r["option"] == "eager"), float("nan"))
        out[name] = (fp32, max(1e3 / r["step_ms"] for r in mine))
    return out


# ----------------------------------------------------------------------------------------- scale


def part_scale(out: Path, dry: bool, budget: float, work: Path, seeds: list[int], labeled: list[int],
               pretrain_s: float, ft_iters: int, jobs: int) -> None:
    import torch

    from gemini_pl.claims import claim_verdict, paired_differences, seed_summary
    from gemini_pl.data.brains import generate_synthseg_dataset
    from gemini_pl.demo import _execute, _stage, _Task

    dl = Deadline(budget)
    cuda = torch.cuda.is_available()
    shutil.rmtree(work, ignore_errors=True)  # the stage runner resumes from finished stages: start clean
    data_root = work / "data"
    t0 = time.monotonic()
    generate_synthseg_dataset(data_root, spatial_dims=2)
    gen_s = time.monotonic() - t0
    configs = ROOT / "experiments" / "synthseg"
    widths = TINY if dry else FULL
    wlist = "[" + ",".join(map(str, widths)) + "]"
    common = ["--data.init_args.root", str(data_root), "--trainer.accelerator", "auto", "--trainer.precision", "32-true",
              "--model.init_args.widths", wlist, "--trainer.enable_progress_bar", "false"]
    if dry:
        common += ["--trainer.limit_test_batches", "2"]
    deformer = "[" + ",".join(map(str, [w // 4 for w in (32, 64, 64, 64, 32)] if dry else (32, 64, 64, 64, 32))) + "]"
    pre_seed = seeds[0]
    pre = ["--model.init_args.deformer_widths", deformer, "--model.init_args.lr", "1e-4",
           "--seed_everything", str(pre_seed), "--model.init_args.aug_seed", str(pre_seed), "--data.init_args.seed", str(pre_seed),
           "--trainer.log_every_n_steps", "200"]
    seconds = 0
    if dry:
        pre += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    else:
        seconds = int(max(10, min(pretrain_s, dl.left() - FT_RESERVE_S - 10)))
        pre += ["--trainer.max_epochs", "100000", "--trainer.limit_train_batches", "500", "--data.init_args.num_workers", "4",
                "--trainer.max_steps", str(2 * 50 * SCALE_TARGET_ITERATIONS),
                "--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"]
    report: dict[str, Any] = {"data": "synthseg2d (gemini_pl.data.brains, 14 training / 4 test subjects, 96 x 112, 2 mm)",
                              "widths": widths, "seeds": seeds, "labeled": labeled, "runs": [], "claims": []}
    md = out / "scale_evidence.md"

    def flush(lines: list[str]) -> None:
        _write(out / "scale_cases.json", json.dumps(report, indent=1, default=str))
        _write(md, "\n".join(lines) + "\n")

    header = [f"## GEMINI at scale: synthseg2d, {'tiny widths (dry run)' if dry else 'full widths'}, "
              "GEMINI-MIP pre-training then fine-tuning vs scratch", "",
              f"- data: {report['data']}; written in {gen_s:.1f} s from the committed label asset",
              f"- device: {torch.cuda.get_device_name() if cuda else 'CPU'}; precision fp32 (TF32 convolutions on CUDA)"]
    flush(header + ["", "pre-training: running"])
    t0 = time.monotonic()
    pre_res = _stage("pretrain", configs / "pretrain.yaml", work, common + pre, test=False)
    pre_s = time.monotonic() - t0
    ckpt = work / "pretrain" / "checkpoints" / "last.ckpt"
    report["pretrain"] = {"iterations": pre_res.iterations, "optimizer_steps": pre_res.steps, "seconds": pre_s, "time_limit_s": seconds,
                          "target_iterations": SCALE_TARGET_ITERATIONS, "checkpoint": ckpt.is_file()}
    per_it = pre_s / max(1, pre_res.iterations)
    header += [f"- pre-training: GEMINI-MIP (experiments/synthseg/pretrain.yaml: pairs of the 14 training subjects, batch 4), "
               f"deformer widths {deformer}, Adam lr 1e-4 (the published value), seed {pre_seed}: **{pre_res.iterations} iterations** "
               f"({pre_res.steps} optimiser steps) in {pre_s:.0f} s ({1e3 * per_it:.1f} ms per iteration incl. set-up"
               + (f"; {1e3 * seconds / max(1, pre_res.iterations):.1f} ms over the {seconds} s training-time limit" if seconds else "")
               + "); "
               f"target ≥ {SCALE_TARGET_ITERATIONS}: {'met' if pre_res.iterations >= SCALE_TARGET_ITERATIONS else 'not met'}"]
    if not ckpt.is_file():
        flush(header + ["", f"pre-training left no checkpoint at {ckpt}: fine-tuning not run"])
        raise SystemExit("pre-training left no checkpoint")
    flush(header + ["", "fine-tuning: running"])

    epochs = max(1, ft_iters // 40)
    ft_common = common + (["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"] if dry else
                          ["--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "40"])
    if not dry:
        rounds = math.ceil(len(seeds) * len(labeled) * 2 / max(1, jobs))
        each = int(max(15, (dl.left() - 10) / max(1, rounds) - 20))  # 20 s: a run's start, set-up and test
        ft_common += ["--trainer.max_time", f"00:00:{each // 60:02d}:{each % 60:02d}"]
    tasks = []
    for seed in seeds:
        seeded = ["--seed_everything", str(seed), "--model.init_args.aug_seed", str(seed), "--data.init_args.seed", str(seed)]
        for k in labeled:
            for arm, extra in (("gemini", ["--model.init_args.init_from", str(ckpt)]), ("scratch", [])):
                tasks.append(_Task(seed, f"L{k}_{arm}", configs / "seg.yaml",
                                   [*ft_common, "--data.init_args.num_labeled", str(k), *extra, *seeded], work / f"seed{seed}"))
    t0 = time.monotonic()
    results, failures = _execute(tasks, jobs, threads=0 if jobs <= 1 else max(1, (os.cpu_count() or 2) // jobs))
    ft_s = time.monotonic() - t0
    per_seed_rows = ["| labeled subjects | seed | fine-tuned Dice (%) | scratch Dice (%) | paired difference (points, mean over cases) | cases |",
                     "|---:|---:|---:|---:|---:|---:|"]
    claims = ["| labeled subjects | fine-tuned Dice (%) | scratch Dice (%) | paired difference per seed (points) | "
              "mean ± sd over seeds | s.e. | fine-tuned higher / pairs | verdict |",
              "|---:|---:|---:|---|---:|---:|---:|---|"]
    iters_seen = set()
    for k in labeled:
        diffs = []
        a_means, b_means = [], []
        for seed in seeds:
            ra, rb = results.get(seed, {}).get(f"L{k}_gemini"), results.get(seed, {}).get(f"L{k}_scratch")
            for arm, r in (("gemini", ra), ("scratch", rb)):
                if r is not None:
                    iters_seen.add(r.iterations)
                    report["runs"].append({"seed": seed, "labeled": k, "arm": arm, "iterations": r.iterations, "seconds": r.seconds,
                                           "transfer": r.transfer, "cases": [{"case": c["case"], "dice": c.get("dice")} for c in r.rows]})
            if ra is None or rb is None:
                continue
            d = paired_differences(ra.rows, rb.rows, "dice")
            diffs.append(d)
            a, b = ra.stat("dice")[0], rb.stat("dice")[0]
            a_means.append(a)
            b_means.append(b)
            per_seed_rows.append(f"| {k} | {seed} | {a:.2f} | {b:.2f} | {_num(statistics.fmean(d) if d else float('nan'), '+.2f')} | {len(d)} |")
        s = seed_summary(diffs)
        report["claims"].append({"labeled": k, **s, "verdict_text": claim_verdict(diffs) if s["seeds"] else "no paired cases"})
        claims.append(f"| {k} | {_num(statistics.fmean(a_means) if a_means else float('nan'), '.2f')} | "
                      f"{_num(statistics.fmean(b_means) if b_means else float('nan'), '.2f')} | "
                      f"{', '.join(f'{m:+.2f}' for m in s['means']) or 'n/a'} | {_num(s['mean'], '+.2f')} ± {_num(s['sd'], '.2f')} | "
                      f"{_num(s['se'], '.2f')} | {s['wins']}/{s['pairs']} | {s['verdict']} |")
    lines = header + [
        f"- fine-tuning: Segmentation (experiments/synthseg/seg.yaml: labeled batch 4, Adam lr 1e-3), "
        f"{', '.join(map(str, sorted(iters_seen))) or 'n/a'} iterations per run, the first {' or '.join(map(str, labeled))} labeled training subjects, "
        f"seeds {' '.join(map(str, seeds))} (initialisation, augmentation, sampling; one shared pre-training), "
        f"both arms alike but the initialisation; {len(tasks)} runs in {ft_s:.0f} s, {jobs} at a time; tested on "
        f"{max((len(r['cases']) for r in report['runs']), default=0)} test subjects (final weights, mean Dice of the 10 "
        "foreground classes per case)",
        "", "Per seed:", "", *per_seed_rows,
        "", "Claim \"fine-tuning from GEMINI-MIP (A) beats the same network from scratch (B)\", A − B in Dice points paired per test "
        "case within each seed (gemini_pl.claims: holds when every seed's mean is positive and the mean over seeds exceeds two "
        "standard errors):", "", *claims]
    if len(iters_seen) > 1:
        lines += ["", f"Note: runs stopped at different iteration counts ({sorted(iters_seen)}; the per-run time limit): "
                  "the arms did not all get the same budget — see scale_cases.json."]
    if failures:
        lines += ["", "Runs that did not finish:"] + [f"- {f}" for f in failures]
    flush(lines)
    print(md.read_text(), end="")


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["device", "published", "throughput", "data", "scale"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (the test suite's run)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds this part may take (it stops adding rows before)")
    ap.add_argument("--work", default=None, help="scale: working folder for data and runs (default: a temporary one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="scale: fine-tuning seeds (default 0 1 2; dry 0 1)")
    ap.add_argument("--labeled", type=int, nargs="+", default=None, help="scale: labeled subjects (default 1 5; dry 1)")
    ap.add_argument("--pretrain-seconds", type=float, default=240.0,
                    help=f"scale: pre-training time at most (the part's budget less {FT_RESERVE_S} s for fine-tuning decides first)")
    ap.add_argument("--ft-iterations", type=int, default=400, help="scale: iterations per fine-tuning run")
    ap.add_argument("--jobs", type=int, default=None, help="scale: fine-tuning runs at a time (default 12 on CUDA: all at once; 1 on CPU)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "disabled")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.part == "device":
        part_device(out, args.dry)
    elif args.part == "published":
        part_published(out, args.dry, args.budget)
    elif args.part == "throughput":
        part_throughput(out, args.dry, args.budget)
    elif args.part == "data":
        part_data(out, args.dry, args.budget)
    else:
        import tempfile

        import torch

        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gemini-lease-"))
        jobs = args.jobs or (12 if torch.cuda.is_available() else 1)
        try:
            part_scale(out, args.dry, args.budget, work, args.seeds or ([0, 1] if args.dry else [0, 1, 2]),
                       args.labeled or ([1] if args.dry else [1, 5]), args.pretrain_seconds, args.ft_iterations, jobs)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
