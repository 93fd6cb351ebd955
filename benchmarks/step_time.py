"""Median time of a ``GeminiPretrain`` training step against a plain-PyTorch floor, on CPU.

Usage: ``python benchmarks/step_time.py [--steps 30] [--warmup 5] [--threads N]``

For each configuration the script measures, in one process:

- **GeminiPretrain**: real training iterations through ``lightning.Trainer.fit`` (manual
  optimisation, both published optimiser steps, augmentation, appearance corruption, warps,
  masks, LNCC, GSS, logging, progress bar off), timed per batch by a callback; the data come
  from memory so that file I/O is not counted.
- **floor**: a plain PyTorch loop that runs the same network passes on the same inputs — the
  backbone on both images, the deformer in both directions, then the backbone and head on a
  copy of A — with a trivial loss (the mean of the outputs) and the same two Adam steps.

The two alternate step by step (``--interleave``, the default): after each module iteration a
callback runs and times one floor iteration, so that both see the machine in the same second and a
slow spell of a shared machine hits them alike. ``--no-interleave`` times them in blocks instead
(module, floor, module, …, one block per round).

It prints a Markdown table of medians and the ratio GeminiPretrain / floor (target ≤ 1.1), and the
ratio of each round: their spread shows how far one run of the machine can move it. Interleaved, a
ratio is the median over steps of each module step's time over the floor step's that follows it (a
paired ratio, untouched by the machine's speed drifting between rounds); in blocks, the ratio of the
two medians.

``--clock process`` times each step with the process's CPU time (``time.process_time``) instead of
the wall clock. With ``--threads 1`` that is the work the step does, and it is far less disturbed by
other jobs on a shared machine than the wall time (which waits whenever the core is lent elsewhere).
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gemini_pl.modules import GeminiPretrain
from gemini_pl.nets import GeminiNet
from gemini_pl.runtime import keep_freed_memory

SMALL = [8, 16, 32, 64, 128, 64, 32, 16, 8]  # default widths ÷ 4
CONFIGS = [
    # name, spatial dims, size, batch, widths
    ("2D 128², widths ÷ 4, batch 2", 2, 128, 2, SMALL),
    ("3D 32³, widths ÷ 4, batch 1", 3, 32, 1, SMALL),
]


class RandomPairs(Dataset):
    """Fixed random image pairs held in memory."""

    def __init__(self, dims: int, size: int, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, *([size] * dims), generator=g)

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, i: int) -> dict:
        n = len(self.images)
        return {"image_a": self.images[i % n], "image_b": self.images[(i + 1) % n]}


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = CLOCKS["wall"]


class StepTimer(L.Callback):
    """Times each module iteration; with ``floor``, then runs and times one floor iteration (after
    the module's time is taken, so the two never overlap)."""

    def __init__(self, floor: Floor | None = None) -> None:
        self.times: list[float] = []
        self.floor_times: list[float] = []
        self.floor = floor
        self._t = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._t = clock()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(clock() - self._t)
        if self.floor is not None:
            self.floor_times.append(self.floor.step())


class Floor:
    """The plain-PyTorch floor: the same network passes with a trivial loss and two Adam steps."""

    def __init__(self, dims: int, size: int, batch: int, widths) -> None:
        self.net = GeminiNet(dims, 1, 1, widths)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.data, self.batch, self.i = RandomPairs(dims, size), batch, 0

    def step(self) -> float:
        """One floor iteration on the next batch; returns its time on ``clock``."""
        net, opt, data, batch, i = self.net, self.opt, self.data, self.batch, self.i
        self.i += 1
        x_a = torch.stack([data[i * batch + k]["image_a"] for k in range(batch)])
        x_b = torch.stack([data[i * batch + k]["image_b"] for k in range(batch)])
        t = clock()
        f_a, f_b = net.features(torch.cat([x_a, x_b], 0)).chunk(2, 0)
        flow_ab, flow_ba = net.flows_both_ways(f_a, f_b)
        (flow_ab.mean() + flow_ba.mean() + f_a.mean() + f_b.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        net(x_a.clone()).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return clock() - t


def time_module(dims: int, size: int, batch: int, widths, steps: int, warmup: int,
                floor: Floor | None = None) -> tuple[list[float], list[float]]:
    """Module iteration times after ``warmup``; with ``floor``, also a floor iteration after each."""
    model = GeminiPretrain(spatial_dims=dims, widths=widths)
    timer = StepTimer(floor)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=2 * (steps + warmup), limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    loader = DataLoader(RandomPairs(dims, size), batch_size=batch)
    trainer.fit(model, train_dataloaders=loader)
    return timer.times[warmup:], timer.floor_times[warmup:]


def time_floor(dims: int, size: int, batch: int, widths, steps: int, warmup: int) -> list[float]:
    floor = Floor(dims, size, batch, widths)
    return [floor.step() for _ in range(steps + warmup)][warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (module, floor, module, floor, …)")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=True,
                        help="alternate module and floor step by step (default), else in blocks of --steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (use with --threads 1 on a shared machine)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    keep_freed_memory()  # as the gemini-pl command does (both columns run with it)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    order = "interleaved step by step" if args.interleave else "in blocks"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.clock} clock, {order}\n")
    print("| configuration | GeminiPretrain step (median ms) | plain-PyTorch floor (median ms) | ratio | ratio per round |")
    print("|---|---|---|---|---|")
    for name, dims, size, batch, widths in CONFIGS:
        mod, flo, per_round = [], [], []
        for _ in range(args.rounds):  # alternate so that machine noise hits both alike
            if args.interleave:
                m_r, f_r = time_module(dims, size, batch, widths, args.steps, args.warmup, Floor(dims, size, batch, widths))
            else:
                m_r = time_module(dims, size, batch, widths, args.steps, args.warmup)[0]
                f_r = time_floor(dims, size, batch, widths, args.steps, args.warmup)
            mod += m_r
            flo += f_r
            per_round.append(ratio(m_r, f_r, args.interleave))
        m, f = statistics.median(mod), statistics.median(flo)
        rounds = ", ".join(f"{r:.2f}" for r in per_round)
        print(f"| {name} | {1e3 * m:.1f} | {1e3 * f:.1f} | {ratio(mod, flo, args.interleave):.2f} | {rounds} |", flush=True)


def ratio(module: list[float], floor: list[float], paired: bool) -> float:
    """Module / floor: the median of the step-by-step ratios (``paired``: the two lists alternate
    step by step), else the ratio of the two medians."""
    if paired:
        return statistics.median(m / f for m, f in zip(module, floor, strict=True))
    return statistics.median(module) / statistics.median(floor)


if __name__ == "__main__":
    main()
