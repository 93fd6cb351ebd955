"""Speed of ``gemini_pl.augment.corruption.corrupt`` against a plain NumPy per-block loop.

Usage: ``PYTHONPATH=src python benchmarks/corruption_speed.py [--runs 20] [--threads 2 1]``

Prints a Markdown table of median wall times (after warm-up) on CPU for one 1×1×128³ volume
and a 5×1×512² batch, with every transform switched on (probabilities 1 for shuffling and the
intensity curve, in-painting p 0.95: the published worst case) and with the published default
probabilities. The NumPy baseline below is written only as a reference point: it follows the
same recipe sample by sample, with one Python iteration per shuffled block and per box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from gemini_pl.augment.corruption import CorruptionConfig, corrupt
from gemini_pl.runtime import keep_freed_memory


# ------------------------------------------------------------------ NumPy reference (baseline)


def _np_shuffle(img: np.ndarray, n_blocks: int, bs, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    spatial = img.shape[1:]
    for _ in range(n_blocks):
        starts = [int(rng.integers(0, s - b + 1)) for s, b in zip(spatial, bs)]
        win = (slice(None),) + tuple(slice(a, a + b) for a, b in zip(starts, bs))
        block = out[win].reshape(img.shape[0], -1)
        order = rng.permutation(block.shape[1])
        out[win] = block[:, order].reshape(out[win].shape)
    return out


def _np_nonlinear(img: np.ndarray, rng: np.random.Generator, n_t: int = 1000) -> np.ndarray:
    p1, p2 = rng.random(2), rng.random(2)
    t = np.linspace(0.0, 1.0, n_t)
    s = 1.0 - t
    w1, w2, w3 = 3 * s * s * t, 3 * s * t * t, t ** 3
    xs = w1 * p1[0] + w2 * p2[0] + w3
    ys = w1 * p1[1] + w2 * p2[1] + w3
    return np.interp(img, xs, ys).astype(img.dtype)


def _np_inpaint(img: np.ndarray, max_boxes: int, prob: float, size_range,
                rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    spatial = img.shape[1:]
    count = 0
    while count < max_boxes and rng.random() < prob:
        sizes = [int(rng.integers(max(1, int(np.ceil(size_range[0] * s))),
                                  max(1, int(size_range[1] * s)) + 1)) for s in spatial]
        starts = [int(rng.integers(0, s - b + 1)) for s, b in zip(spatial, sizes)]
        win = (slice(None),) + tuple(slice(a, a + b) for a, b in zip(starts, sizes))
        out[win] = rng.random(out[win].shape).astype(out.dtype)
        count += 1
    return out


def numpy_corrupt(x: np.ndarray, cfg: CorruptionConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-sample, per-block NumPy loop over a (B, C, *S) array (baseline only)."""
    cfg = cfg.resolved(x.ndim - 2)
    bs = [max(1, s // cfg.shuffle_block_divisor) for s in x.shape[2:]]
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        img = x[b]
        if rng.random() < cfg.shuffle_prob:
            img = _np_shuffle(img, cfg.shuffle_blocks, bs, rng)
        if rng.random() < cfg.nonlinear_prob:
            img = _np_nonlinear(img, rng)
        img = _np_inpaint(img, cfg.inpaint_max_boxes, cfg.inpaint_prob, cfg.inpaint_size_range,
                          rng)
        out[b] = img
    return out


# ------------------------------------------------------------------------------------ timing


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline-runs", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to time (default: the current setting)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's thresholds alone (default: gemini_pl.runtime.keep_freed_memory, "
                         "as the gemini-pl command does)")
    args = ap.parse_args()
    kept = False if args.default_malloc else keep_freed_memory()
    threads = args.threads or [torch.get_num_threads()]

    cases = [("1×1×128³", (1, 1, 128, 128, 128)), ("5×1×512²", (5, 1, 512, 512))]
    configs = [("all on", CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0)),
               ("default p", CorruptionConfig())]
    print(f"torch {torch.__version__}, CPU ({os.cpu_count()} cores), median of {args.runs} "
          f"runs after warm-up (NumPy: {args.baseline_runs} runs); keep_freed_memory: {kept}\n")
    head = " | ".join(f"torch {t} thr ms" for t in threads)
    print(f"| input | probabilities | {head} | NumPy per-block loop ms | speed-up |")
    print("|---|---|" + "---:|" * len(threads) + "---:|---:|")
    for name, shape in cases:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        xn = x.numpy()
        for cname, cfg in configs:
            times = []
            for t in threads:
                torch.set_num_threads(t)
                g = torch.Generator().manual_seed(1)
                times.append(median_ms(lambda: corrupt(x, cfg, g), args.runs))
            rng = np.random.default_rng(1)
            t_np = median_ms(lambda: numpy_corrupt(xn, cfg, rng), args.baseline_runs, warmup=1)
            cols = " | ".join(f"{t:.1f}" for t in times)
            print(f"| {name} | {cname} | {cols} | {t_np:.1f} | {t_np / min(times):.1f}× |")


if __name__ == "__main__":
    main()
