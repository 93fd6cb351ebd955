"""Data loading speed of ``GeminiDataModule`` for 3D pairs, and how long training waits for data.

Usage: ``python benchmarks/data_throughput.py [--size 96] [--cases 16] [--batches 40] [--step_size 32]
[--steps 12] [--part all|throughput|wait]``

1. **Throughput**: samples (pairs) per second served by the training loader for 3D pairs of
   ``size``³ NIfTI volumes (``.nii.gz``, int16 CT-like values, clip/scale preprocessing), with the
   memory cache (every file read once, at ``setup``) and without it (two files read and
   preprocessed per sample), with 0 and 2 worker processes. The cache fill time is reported apart.
2. **Waiting for data**: real ``GeminiPretrain`` training steps (``Trainer.fit``, small widths,
   3D ``--step_size``³, batch 1) fed by the data module with its default settings
   (``num_workers=0``, memory cache) and with 2 workers; the time from the end of one batch to the
   start of the next (the loader's ``next()`` plus Lightning's bookkeeping, an upper bound of the
   wait) as a fraction of the whole step. Target: < 5 %.

Prints Markdown tables. The files are written to a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from gemini_pl.data import GeminiDataModule

SMALL = [8, 16, 32, 64, 128, 64, 32, 16, 8]


def write_volumes(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` smooth CT-like int16 volumes of ``size``³ (spacing 1 mm) in the canonical layout."""
    g = torch.Generator().manual_seed(seed)
    out = folder / "train/unlabeled/image"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = torch.rand(1, 1, 6, 6, 6, generator=g)
        vol = F.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=False)[0, 0]
        vol = (vol * 2400 + 40 * torch.randn(vol.shape, generator=g)).clamp(-1000, 3000)
        nib.save(nib.Nifti1Image(vol.numpy().astype(np.int16), np.eye(4)), str(out / f"case_{i:03d}.nii.gz"))


def throughput(root: Path, cache: bool, workers: int, batches: int, batch_size: int) -> tuple[float, float]:
    """(setup seconds, samples per second over ``batches`` batches after one warm-up batch)."""
    dm = GeminiDataModule(root=str(root), dataset="bench", spatial_dims=3, batch_size=batch_size,
                          num_workers=workers, cache=cache, intensity="ct")
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # warm-up (starts the workers)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b["image_a"].shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return setup_s, rate


def wait_fraction(root: Path, workers: int, steps: int, warmup: int) -> tuple[float, float, float]:
    """(median step s, median wait s, total wait / total time) of GeminiPretrain training steps."""
    import lightning as L

    from gemini_pl.modules import GeminiPretrain

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []

        def on_train_batch_start(self, *args) -> None:
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, *args) -> None:
            self.ends.append(time.perf_counter())

    dm = GeminiDataModule(root=str(root), dataset="bench", spatial_dims=3, batch_size=1,
                          num_workers=workers, intensity="ct")
    timer = Timer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2 * (steps + warmup), limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(GeminiPretrain(spatial_dims=3, widths=SMALL), datamodule=dm)
    s, e = timer.starts[warmup:], timer.ends[warmup:]
    compute = [b - a for a, b in zip(s, e)]
    waits = [s[i] - e[i - 1] for i in range(1, len(s))]
    total = s[-1] - s[0] + compute[-1]
    return statistics.median(compute), statistics.median(waits), sum(waits) / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=96, help="volume edge of the throughput test")
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--step_size", type=int, default=32, help="volume edge of the training-step test")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--part", choices=["all", "throughput", "wait"], default="all")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("gemini_pl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    if args.part in ("all", "throughput"):
        run_throughput(args)
    if args.part in ("all", "wait"):
        run_wait(args)


def run_throughput(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_volumes(root / "bench", args.cases, args.size)
        print(f"## 3D pairs, {args.cases} volumes of {args.size}³ (.nii.gz int16), batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}\n")
        print("| cache | workers | setup (s) | samples/s |")
        print("|---|---|---|---|")
        for cache in (True, False):
            for workers in (0, 2):
                setup_s, rate = throughput(root, cache, workers, args.batches, args.batch_size)
                print(f"| {'memory' if cache else 'none'} | {workers} | {setup_s:.2f} | {rate:.1f} |", flush=True)


def run_wait(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_volumes(root / "bench", 8, args.step_size, seed=1)
        print(f"\n## Waiting for data: GeminiPretrain 3D {args.step_size}³, widths ÷ 4, batch 1, memory cache\n")
        print("| workers | median step (s) | median wait (s) | wait / total |")
        print("|---|---|---|---|")
        for workers in (0, 2):
            step, wait, frac = wait_fraction(root, workers, args.steps, args.warmup)
            print(f"| {workers}{' (default)' if workers == 0 else ''} | {step:.3f} | {wait:.4f} | {100 * frac:.2f} % |",
                  flush=True)


if __name__ == "__main__":
    main()
