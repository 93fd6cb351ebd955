"""The LNCC's box sum, forward + backward, against the convolutions' own autograd, on CPU.

Usage: ``python benchmarks/box_sum.py [--threads 1] [--repeats 15]``

The LNCC (GVS term, ``Registration``, the test-time refinement) box-sums five maps per call.
``gemini_pl.losses.box_sum`` differs from a plain separable grouped convolution in two ways: its
backward is one more box sum of the gradient (the operator is self-adjoint) instead of the
convolutions' backward, and in 3D the first axis is summed through a transposed view. This script
prints the median milliseconds of forward + backward of both on the sizes the project uses, the
largest difference of their values and gradients, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gemini_pl.losses import box_sum

SIZES = [
    ("2D demo 96×112, 5 maps", (1, 5, 96, 112)),
    ("2D 128², batch 2", (2, 5, 128, 128)),
    ("3D 32³ (step_time.py)", (1, 5, 32, 32, 32)),
    ("3D synthseg 4 mm 48×56×44", (1, 5, 48, 56, 44)),
    ("3D 64³, batch 2", (2, 5, 64, 64, 64)),
]


def convolution_box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """The plain separable grouped convolution (autograd through the convolutions)."""
    ndim = x.dim() - 2
    conv = (F.conv2d, F.conv3d)[ndim - 2]
    channels = x.shape[1]
    for axis in range(ndim):
        shape = [channels, 1] + [1] * ndim
        shape[2 + axis] = window
        padding = [0] * ndim
        padding[axis] = window // 2
        x = conv(x, x.new_ones(shape), padding=tuple(padding), groups=channels)
    return x


def median_ms(fn, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 2):
        x.grad = None
        t = time.perf_counter()
        fn(x, 9).backward(grad)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), window 9, forward + backward\n")
    print("| size | convolution autograd (ms) | `box_sum` (ms) | ratio | max |Δ| value / gradient |")
    print("|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name, shape in SIZES:
        x = torch.rand(*shape, generator=g).requires_grad_()
        grad = torch.rand(*shape, generator=g)
        a, b = convolution_box_sum(x, 9), box_sum(x, 9)
        ga = torch.autograd.grad(a, x, grad)[0]
        gb = torch.autograd.grad(b, x, grad)[0]
        old = median_ms(convolution_box_sum, x, grad, args.repeats)
        new = median_ms(box_sum, x, grad, args.repeats)
        print(f"| {name} | {old:.2f} | {new:.2f} | {old / new:.2f} | "
              f"{(a - b).abs().max().item():.1e} / {(ga - gb).abs().max().item():.1e} |", flush=True)


if __name__ == "__main__":
    main()
