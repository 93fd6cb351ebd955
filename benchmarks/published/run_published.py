"""Time one iteration of the published GEMINI-MIP training script on synthetic images.

Usage (see README.md beside this file for where the published code comes from)::

    python benchmarks/published/run_published.py --root PATH --dims 3 --size 128 --batch 1 --steps 8
    python benchmarks/published/run_published.py --root PATH --dims 2 --size 512 --batch 5 --json out.json

``PATH`` is the root of a copy of the published repository (it holds ``GEMINI_SS_MIP/``). Nothing
of it is copied into this project or edited: this runner imports ``GEMINI_SS_MIP_{2d,3d}.py`` from
there and drives the script's own ``Trainer`` object:

- the ``Trainer`` is built as the script builds it (its network, Adam at lr 1e-4, its spatial and
  appearance augmentations, its losses), with a throw-away ``unlabeled_dir`` that is listed, never
  read; its data loader is then replaced by synthetic pairs of the requested shape (smooth random
  images in [0, 1], on the CPU as the script's loader gives them) — the data-path change;
- ``iters`` is set to the number of iterations to run — the iteration-count change;
- its network is wrapped so that the restoration call ``Network(imgA, None, gvs=False)`` of
  ``train_iterator`` reaches the network as ``res=True``: at the published commit the network's
  ``forward(A, B, res=False)`` has no ``gvs`` argument, so the scripts stop with a ``TypeError`` at
  their first restoration step without this one change;
- its ``train_epoch`` runs unchanged: per iteration the CPU appearance augmentation of each sample,
  the random spatial transform of both images, then ``train_iterator`` (the DHL/GSS step and the
  restoration step, two Adam steps) and its log line (printed to /dev/null here).

Reported (JSON on the last stdout line, and ``--json``): the median wall time of a whole iteration
(between the ends of consecutive ``train_iterator`` calls, device synchronised), the median of
``train_iterator`` alone (the two training steps, without the augmentation), peak GPU memory, and,
on CUDA, the GPU-busy share and the kernels that took longest over ``--profile`` profiled
iterations. ``--widths`` rebuilds the script's network with other widths (tiny CPU dry runs only).
On a machine without CUDA the published code's unconditional ``.cuda()`` calls are redirected to
the CPU by a shim installed in this process only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def cpu_shim() -> None:
    """Send ``tensor.cuda()``, ``module.cuda()`` and ``.to("cuda")`` to the CPU (no CUDA here)."""

    def _to_cpu(value):
        if isinstance(value, str) and value.startswith("cuda"):
            return "cpu"
        if isinstance(value, torch.device) and value.type == "cuda":
            return torch.device("cpu")
        return value

    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple(_to_cpu(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        return original_to(self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to
    nn.Module.cuda = lambda self, *a, **k: self


def import_script(root: Path, dims: int):
    """The published ``GEMINI_SS_MIP_{dims}d`` module, imported from ``root``."""
    folder = root / "GEMINI_SS_MIP"
    script = folder / f"GEMINI_SS_MIP_{dims}d.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: --root must be the published repository's root")
    sys.path.insert(0, str(folder))
    try:
        import cv2  # noqa: F401  (the 2D script's file loader needs it; this runner never reads a file)
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")
    return importlib.import_module(f"GEMINI_SS_MIP_{dims}d")


class RestorationCall(nn.Module):
    """The published network, with the scripts' restoration call ``(A, None, gvs=False)`` mapped to
    the network's own ``res=True``; every other call goes through unchanged."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, A, B, res: bool = False, gvs: bool | None = None):
        if gvs is False:
            res = True
        return self.net(A, B, res=res)


class SyntheticPairs:
    """Stands in for the script's DataLoader: each ``iter()`` yields one (img1, img2) CPU batch."""

    def __init__(self, dims: int, size: int, batch: int, n: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        coarse = (batch, 1) + (8,) * dims
        mode = "trilinear" if dims == 3 else "bilinear"
        self.pairs = []
        for _ in range(n):
            a, b = (F.interpolate(torch.rand(coarse, generator=g), size=(size,) * dims, mode=mode, align_corners=False)
                    for _ in range(2))
            self.pairs.append((a.clamp(0, 1).contiguous(), b.clamp(0, 1).contiguous()))
        self.i = 0

    def __iter__(self):
        pair = self.pairs[self.i % len(self.pairs)]
        self.i += 1
        return iter([pair])


def throwaway_data_dir(tmp: Path, dims: int) -> Path:
    """Folders the scripts' datasets list at construction (names only; never read)."""
    if dims == 3:
        (tmp / "unused.nii").touch()
    else:
        for sub in ("AP_M", "PA_M", "AP_F", "PA_F"):
            (tmp / sub).mkdir()
            (tmp / sub / "unused.png").touch()
    return tmp


def busy_seconds(prof) -> float:
    sys.path.insert(0, str(HERE.parent))
    from modules import _kernel_busy_seconds  # benchmarks/modules.py: union of kernel intervals

    return _kernel_busy_seconds(prof)


def run(root: Path, dims: int, size: int, batch: int, steps: int, warmup: int, profile: int,
        widths: list[int] | None) -> dict:
    cuda = torch.cuda.is_available()
    if not cuda:
        cpu_shim()
    script = import_script(root, dims)
    import numpy as np

    np.random.seed(0)
    torch.manual_seed(0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = throwaway_data_dir(Path(tmp), dims)
        trainer = script.Trainer(unlabeled_dir=str(data_dir), checkpoint_dir=tmp, result_dir=tmp, batch_size=batch)
    if widths:
        trainer.Network = script.GEMINI(n_channels=1, chan=tuple(widths), classes=1)
        if cuda:
            trainer.Network = trainer.Network.cuda()
        trainer.opt = torch.optim.Adam(trainer.Network.parameters(), lr=trainer.lr)
    trainer.Network = RestorationCall(trainer.Network)  # shares the parameters the optimiser holds
    trainer.dataloader_train = SyntheticPairs(dims, size, batch)

    step_s: list[float] = []
    ends: list[float] = []
    inner = trainer.train_iterator

    def timed_iterator(*args):
        sync()
        t = time.perf_counter()
        inner(*args)
        sync()
        now = time.perf_counter()
        step_s.append(now - t)
        ends.append(now)

    trainer.train_iterator = timed_iterator
    quiet = contextlib.redirect_stdout(io.StringIO())
    trainer.Network.train()
    sync()
    start = time.perf_counter()
    with quiet:
        trainer.iters = warmup
        if warmup:
            trainer.train_epoch(0)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.iters = steps
        sync()
        first = time.perf_counter()
        trainer.train_epoch(0)
    bounds = [first] + ends[warmup:]
    iteration = [b - a for a, b in zip(bounds, bounds[1:])]
    out = {
        "dims": dims, "size": size, "batch": batch, "widths": "full" if not widths else "x".join(map(str, widths)),
        "precision": "32", "steps": steps, "warmup": warmup,
        "iteration_ms": 1e3 * statistics.median(iteration),
        "train_step_ms": 1e3 * statistics.median(step_s[warmup:]),
        "first_iteration_s": (ends[0] - start) if ends else float("nan"),
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "torch": torch.__version__,
        "published_commit": _commit(root),
    }
    if cuda:
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if cuda and profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        trainer.iters = profile
        with quiet, torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            sync()
            t = time.perf_counter()
            trainer.train_epoch(0)
            sync()
            wall = time.perf_counter() - t
        out["gpu_busy_pct"] = 100 * busy_seconds(prof) / wall
        out["top_kernels"] = prof.key_averages().table(sort_by="self_device_time_total", row_limit=12)
    return out


def _commit(root: Path) -> str:
    """The published commit: ``COMMIT`` beside the copy (README recipe), else its git HEAD."""
    note = root / "COMMIT"
    if note.is_file():
        return note.read_text().strip()
    head = root / ".git" / "HEAD"
    if head.is_file():
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            target = root / ".git" / ref[5:]
            return target.read_text().strip() if target.is_file() else ref[5:]
        return ref
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.environ.get("GEMINI_PUBLISHED"), help="published repository root (default $GEMINI_PUBLISHED)")
    ap.add_argument("--dims", type=int, choices=[2, 3], required=True)
    ap.add_argument("--size", type=int, required=True, help="image edge (the scripts train on whole images)")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=8, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--profile", type=int, default=3, help="CUDA: iterations profiled for the busy share (0: none)")
    ap.add_argument("--widths", type=int, nargs=9, default=None, help="rebuild the network with these widths (dry runs)")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    if not args.root:
        sys.exit("no published code: pass --root or set GEMINI_PUBLISHED")
    res = run(Path(args.root).resolve(), args.dims, args.size, args.batch, args.steps, args.warmup, args.profile, args.widths)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
