"""Cost of several network passes per pair (``cascade_passes``): the fixed image's features once per pair.

:meth:`~gemini_pl.modules.reg_eval.RegistrationEvaluation.register` with n passes on whole images
runs the backbone on the fixed image once and on each warped moving image once (n + 1 single-image
calls); the plain composition of n one-pass calls (``flow(warp(moving, φ), fixed)`` each time) runs
it on both images every pass (n two-image calls). Both are timed alternately, call by call, on a 2D
demo-sized pair (99 × 117, the demo's ``Registration`` widths, velocity field, 3 pyramid levels; random
weights, or ``--checkpoint``'s), no gradient. Prints the median milliseconds of each, the median of
the paired ratios and the largest difference of the two maps. One thread by default::

    python benchmarks/cascade_cost.py [--passes 2 3 4] [--repeats 30] [--threads 1] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gemini_pl.modules import Registration
from gemini_pl.spatial import compose, warp


def composed_passes(module: Registration, moving: torch.Tensor, fixed: torch.Tensor, passes: int) -> torch.Tensor:
    """T₁ ∘ … ∘ Tₙ from n plain one-pass calls (the backbone on both images each time)."""
    sampling = module.hparams.sampling
    flow = module.flow(moving, fixed)
    for _ in range(passes - 1):
        flow = compose(flow, module.flow(warp(moving, flow, sampling=sampling), fixed), sampling=sampling)
    return flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", default=None, help="a 2D Registration checkpoint (default: random demo weights)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        module = Registration.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    else:
        torch.manual_seed(0)
        module = Registration(spatial_dims=2, num_classes=3, widths=[8, 16, 32, 64, 128, 64, 32, 16, 8],
                              deformer_widths=[16, 32, 32, 32, 16], integration_steps=7, pyramid_levels=3).eval()
    moving, fixed = torch.rand(1, 1, 99, 117), torch.rand(1, 1, 99, 117)
    print("| passes | plain composition (ms) | register, fixed features once (ms) | paired ratio | max |Δφ| (voxels) |")
    print("|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for passes in args.passes:
            module.set_cascade(passes)
            plain, cached = [], []
            for _ in range(args.repeats + 3):
                start = time.perf_counter()
                a = composed_passes(module, moving, fixed, passes)
                plain.append(time.perf_counter() - start)
                start = time.perf_counter()
                b = module.register(moving, fixed)
                cached.append(time.perf_counter() - start)
            plain, cached = plain[3:], cached[3:]
            ratio = statistics.median(x / y for x, y in zip(plain, cached))
            print(f"| {passes} | {1e3 * statistics.median(plain):.1f} | {1e3 * statistics.median(cached):.1f} | "
                  f"{ratio:.2f} | {(a - b).abs().max().item():.1e} |")


if __name__ == "__main__":
    main()
