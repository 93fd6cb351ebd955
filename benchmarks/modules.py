"""Training-step time, peak memory, FLOPs and achieved fraction of peak for every module.

Usage::

    python benchmarks/modules.py                       # CPU sizes, fp32 and bf16-mixed
    python benchmarks/modules.py --paper               # paper scale (needs a GPU): 3D 128³ full width, 2D 512² × 5
    python benchmarks/modules.py --modules pretrain --precision bf16-mixed --steps 20

Every configuration runs in its own subprocess (so that peak memory is that configuration's) as
real ``lightning.Trainer.fit`` iterations on random in-memory data with the structure of
``GeminiDataModule`` batches, and reports:

- **step ms**: median wall time of one training iteration (both published optimiser steps for
  GeminiPretrain/GeminiSemi), timed between ``on_train_batch_start`` and ``on_train_batch_end``
  (with a device synchronisation at both ends on a GPU);
- **loop wait %**: time between the end of one iteration and the start of the next (loader
  fetch + Lightning's loop) as a share of the iteration time — the data come from memory here,
  so this is the loop overhead; ``benchmarks/data_throughput.py`` measures real file loading;
- **peak memory**: on a GPU ``torch.cuda.max_memory_allocated`` over the timed steps; on CPU the
  peak resident set of the process (``ru_maxrss``) and its growth over the run;
- **GFLOP/step**: convolution and matrix-multiply FLOPs of one iteration (forward + backward)
  counted by ``torch.utils.flop_counter.FlopCounterMode`` (element-wise work is not counted);
- **% of peak**: achieved FLOP/s over the device's peak — on a GPU the datasheet dense peak of
  the precision in use (TF32 for fp32 when cuDNN allows it, as PyTorch does by default), on CPU
  the FLOP/s of a large fp32 matrix multiply measured in the same process (for every precision).

``--busy`` (GPU only) also profiles three iterations and reports the share of the wall time in
which a kernel ran (target ≥ 90 %).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

SMALL = [8, 16, 32, 64, 128, 64, 32, 16, 8]  # default widths ÷ 4
FULL = [32, 64, 128, 256, 512, 256, 128, 64, 32]  # METHOD §1

# name -> (module, dims, size, batch, widths); CPU sizes first, then paper scale
CPU_CONFIGS = {
    "pretrain-2d": ("pretrain", 2, 128, 2, SMALL),
    "pretrain-3d": ("pretrain", 3, 32, 1, SMALL),
    "semi-3d": ("semi", 3, 32, 1, SMALL),
    "seg-3d": ("seg", 3, 32, 1, SMALL),
    "reg-3d": ("reg", 3, 32, 1, SMALL),
    "semi-2d": ("semi", 2, 128, 2, SMALL),
    "seg-2d": ("seg", 2, 128, 2, SMALL),
    "reg-2d": ("reg", 2, 128, 2, SMALL),
}
PAPER_CONFIGS = {
    "pretrain-2d": ("pretrain", 2, 512, 5, FULL),
    "pretrain-3d": ("pretrain", 3, 128, 1, FULL),
    "semi-3d": ("semi", 3, 128, 1, FULL),
    "seg-3d": ("seg", 3, 128, 1, FULL),
    "reg-3d": ("reg", 3, 128, 1, FULL),
    "semi-2d": ("semi", 2, 512, 5, FULL),
    "seg-2d": ("seg", 2, 512, 5, FULL),
    "reg-2d": ("reg", 2, 512, 5, FULL),
}
#: what runs when --configs is not given
DEFAULT_CONFIGS = ["pretrain-2d", "pretrain-3d", "semi-3d", "seg-3d", "reg-3d"]
#: network variants (--options): callbacks added to the Trainer
OPTIONS = ["eager", "channels_last", "compile", "cudagraphs"]
NUM_CLASSES = 8  # MM-WHS: 7 structures + background

# datasheet dense peaks (FLOP/s) of the precisions used; SXM unless the name says PCIe
GPU_PEAKS = {
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "H200": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
}


# ------------------------------------------------------------------------------- one config


def _module(kind: str, dims: int, widths):
    from gemini_pl.modules import GeminiPretrain, GeminiSemi, Registration, Segmentation
    from gemini_pl.nets import DEFAULT_DEFORMER_WIDTHS

    deformer = DEFAULT_DEFORMER_WIDTHS if widths == FULL else [w // 4 for w in DEFAULT_DEFORMER_WIDTHS]
    if kind == "pretrain":
        return GeminiPretrain(spatial_dims=dims, widths=widths, deformer_widths=deformer)
    if kind == "semi":
        return GeminiSemi(spatial_dims=dims, widths=widths, deformer_widths=deformer, num_classes=NUM_CLASSES)
    if kind == "seg":
        return Segmentation(spatial_dims=dims, widths=widths, num_classes=NUM_CLASSES)
    if kind == "reg":
        return Registration(spatial_dims=dims, widths=widths, deformer_widths=deformer)
    raise ValueError(kind)


class _Batches:
    """Random batches with the keys each module trains on (held in memory)."""

    def __init__(self, kind: str, dims: int, size: int, batch: int):
        import torch

        g = torch.Generator().manual_seed(0)
        shape = (batch, 1) + (size,) * dims
        self.items: list[dict[str, Any]] = []
        for _ in range(4):
            item: dict[str, Any] = {}
            if kind in ("pretrain", "semi", "reg"):
                item.update(image_a=torch.rand(shape, generator=g), image_b=torch.rand(shape, generator=g))
            if kind in ("semi", "seg"):
                item.update(image=torch.rand(shape, generator=g),
                            label=torch.randint(0, NUM_CLASSES, shape, generator=g))
            self.items.append(item)

    def __len__(self) -> int:
        return 100_000

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i % len(self.items)]


def _peak_flops(precision: str) -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        key = next((k for k in GPU_PEAKS if k in name), None)
        if key is None:
            return float("nan"), f"{name} (peak unknown)"
        if precision.startswith("bf16") or precision.startswith("16"):
            math = "bf16"
        else:
            math = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
        return GPU_PEAKS[key][math], f"{name}, {math} datasheet peak"
    # CPU: fp32 GEMM as the reference for every precision (CPUs without bf16 matrix units run
    # bf16 GEMMs slower than fp32 ones, which would make a bf16 "peak" meaningless)
    a = torch.rand(2048, 2048)
    b = torch.rand(2048, 2048)
    times = []
    for i in range(6):
        t = time.perf_counter()
        a @ b
        if i:
            times.append(time.perf_counter() - t)
    return 2 * 2048**3 / statistics.median(times), "CPU fp32 2048² GEMM, measured in the same process"


def _kernel_busy_seconds(prof) -> float:
    """Seconds in which at least one GPU kernel ran: the union of the kernels' time intervals.

    (Summing ``self_device_time_total`` over ``key_averages()`` counts a kernel twice, under its
    own name and under the operator that launched it, and overlapping kernels once each.)
    """
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for a, b in spans:
        if a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    return busy / 1e6  # profiler times are in microseconds


def run_one(name: str, paper: bool, precision: str, steps: int, warmup: int, busy: bool, option: str = "eager",
            config: tuple | None = None) -> dict[str, Any]:
    """One configuration's row (see the module docstring); ``config`` (kind, dims, size, batch, widths)
    replaces the named configuration's shape."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode

    from gemini_pl.runtime import keep_freed_memory

    keep_freed_memory()
    kind, dims, size, batch, widths = config or (PAPER_CONFIGS if paper else CPU_CONFIGS)[name]
    cuda = torch.cuda.is_available()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.step: list[float] = []
            self.wait: list[float] = []
            self._start = self._end = None
            self.flops = None
            self._counter = None
            self.prof = None

        def on_train_batch_start(self, trainer, pl_module, b, batch_idx) -> None:
            sync()
            now = time.perf_counter()
            if self._end is not None and batch_idx > warmup:
                self.wait.append(now - self._end)
            if batch_idx == warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            # one extra iteration, counted, not timed (eager networks: a compiled one does the same
            # FLOPs, and counting through compiled graphs would recompile them)
            if batch_idx == warmup + steps and option in ("eager", "channels_last"):
                self._counter = FlopCounterMode(display=False)
                self._counter.__enter__()
            if busy and batch_idx == warmup + steps + 1:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()
                self._busy_t0 = now
            self._start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx) -> None:
            sync()
            now = time.perf_counter()
            if warmup <= batch_idx < warmup + steps:
                self.step.append(now - self._start)
            if self._counter is not None:
                self._counter.__exit__(None, None, None)
                self.flops = self._counter.get_total_flops()
                self._counter = None
            if self.prof is not None and batch_idx == warmup + steps + 3:
                self.prof.__exit__(None, None, None)
                wall = now - self._busy_t0
                self.busy = _kernel_busy_seconds(self.prof) / wall
                self.top = self.prof.key_averages().table(sort_by="self_device_time_total", row_limit=12)
                self.prof = None
            self._end = now

    torch.manual_seed(0)
    module = _module(kind, dims, widths)
    timer = Timer()
    from gemini_pl.callbacks import ChannelsLast, CompileNetwork

    # cudagraphs: torch.compile's "reduce-overhead" mode (CUDA graphs of the compiled parts)
    extra = {"eager": [], "channels_last": [ChannelsLast()], "compile": [CompileNetwork()],
             "cudagraphs": [CompileNetwork(mode="reduce-overhead")]}[option]
    total = warmup + steps + 1 + (3 if busy else 0)
    trainer = L.Trainer(
        accelerator="auto", devices=1, precision=precision, max_epochs=1, limit_train_batches=total,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer, *extra], log_every_n_steps=50,
    )
    loader = DataLoader(_Batches(kind, dims, size, batch), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    step = statistics.median(timer.step)
    peak, peak_what = _peak_flops(precision)
    out = {
        "name": name, "module": type(module).__name__, "dims": dims, "size": size, "batch": batch,
        "widths": "full" if list(widths) == FULL else "÷4" if list(widths) == SMALL else "x".join(map(str, widths)), "precision": precision, "option": option, "step_ms": 1e3 * step,
        "wait_pct": 100 * statistics.median(timer.wait) / step if timer.wait else float("nan"),
        "gflop": timer.flops / 1e9 if timer.flops else float("nan"), "peak_what": peak_what,
        "pct_peak": 100 * timer.flops / step / peak if timer.flops else float("nan"), "device": torch.cuda.get_device_name() if cuda else "CPU",
        "threads": torch.get_num_threads(),
    }
    if cuda:
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_rss_mib"], out["rss_growth_mib"] = rss, rss - rss0
    if busy and hasattr(timer, "busy"):
        out["gpu_busy_pct"] = 100 * timer.busy
        out["top_kernels"] = timer.top
    return out


# ------------------------------------------------------------------------------------ driver


def _row(r: dict[str, Any]) -> str:
    mem = f"{r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else f"{r['peak_rss_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f})"
    busy = f" | {r['gpu_busy_pct']:.0f} %" if "gpu_busy_pct" in r else ""
    shape = f"{r['dims']}D {r['size']}{'²' if r['dims'] == 2 else '³'} ×{r['batch']}, widths {r['widths']}"
    return (f"| {r['module']} | {shape} | {r['precision']} | {r['option']} | {r['step_ms']:.1f} | {r['wait_pct']:.2f} | {mem} | "
            f"{r['gflop']:.1f} | {r['pct_peak']:.1f}{busy} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="paper scale (3D 128³ full width, 2D 512² batch 5); needs a GPU")
    ap.add_argument("--configs", nargs="+", default=None, help=f"subset of {list(CPU_CONFIGS)} (default {DEFAULT_CONFIGS})")
    ap.add_argument("--precision", nargs="+", default=["32", "bf16-mixed"])
    ap.add_argument("--options", nargs="+", default=["eager"], choices=OPTIONS,
                    help="network variants: eager, ChannelsLast callback, CompileNetwork callback, CompileNetwork(mode='reduce-overhead')")
    ap.add_argument("--steps", type=int, default=8, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--busy", action="store_true", help="GPU: profile 3 iterations for the kernel-busy share")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # child process: one configuration, JSON on the last line
        name, precision, option = args.one.split(":")
        print(json.dumps(run_one(name, args.paper, precision, args.steps, args.warmup, args.busy, option)))
        return
    if args.paper:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--paper needs a CUDA GPU (paper-scale steps take minutes each on a CPU)")
    names = args.configs or DEFAULT_CONFIGS
    rows = []
    busy_col = " GPU busy |" if args.busy else ""
    print("| module | input | precision | option | step ms (median) | loop wait % | peak memory | GFLOP/step | % of peak |" + busy_col)
    print("|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|" if args.busy else ""), flush=True)
    for name, precision, option in ((n, p, o) for n in names for p in args.precision for o in args.options):
        cmd = [sys.executable, __file__, "--one", f"{name}:{precision}:{option}", "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--paper"] if args.paper else []
        cmd += ["--busy"] if args.busy else []
        res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="disabled"))
        if res.returncode != 0:
            print(f"| {name} | — | {precision} | {option} | failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode} |", flush=True)
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(_row(r), flush=True)
    if rows:
        print(f"\ndevice: {rows[0]['device']}; peak reference: {rows[0]['peak_what']}; torch threads: {rows[0]['threads']}")
    for r in rows:
        if "top_kernels" in r:
            print(f"\nlargest GPU time, {r['module']} {r['dims']}D {r['precision']} {r['option']} (3 profiled iterations):\n{r['top_kernels']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
