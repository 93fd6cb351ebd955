"""Cost of the deformation-model switches: time of one GEMINI step (forward + backward) per variant.

Usage: ``python benchmarks/deformation_cost.py [--dims 2] [--size 96 112] [--batch 4] [--threads 1] [--device cpu]``

Variants: ``published`` (displacement), ``velocity7`` (``integration_steps: 7``) and ``all``
(velocity + ``lambda_inverse`` + ``lambda_jacobian`` + ``smoother: bending``); the demo's widths.
The variants are timed interleaved, ``--repeats`` times each; the mean of the fastest three is printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from gemini_pl.modules import GeminiPretrain

WIDTHS = [8, 16, 32, 64, 128, 64, 32, 16, 8]
DEFORMER = [16, 32, 32, 32, 16]
VARIANTS = {
    "published": {},
    "velocity7": dict(integration_steps=7),
    "all": dict(integration_steps=7, lambda_inverse=0.1, lambda_jacobian=1.0, smoother="bending"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=2)
    ap.add_argument("--size", type=int, nargs="+", default=[96, 112])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(args.size) if len(args.size) == args.dims else (args.size[0],) * args.dims
    x_a, x_b = (torch.rand(args.batch, 1, *size, device=device) for _ in range(2))
    mods = {k: GeminiPretrain(spatial_dims=args.dims, widths=WIDTHS, deformer_widths=DEFORMER, **v).to(device)
            for k, v in VARIANTS.items()}
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, module in mods.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            module.gemini_terms(x_a, x_b)["total"].backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    base = None
    for name, t in times.items():
        best = sorted(t[1:])[:3]
        mean = sum(best) / len(best)
        base = base or mean
        print(f"{name:10s} {mean:.4f} s per GEMINI step (forward + backward), x{mean / base:.2f}")


if __name__ == "__main__":
    main()
