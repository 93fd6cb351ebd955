"""CPU pooling of the networks and the pyramid: PyTorch's kernels against gemini-pl's replacements.

* ``max``: ``nn.MaxPool2d/3d(2)`` (``max_pool*_with_indices``) against
  :func:`gemini_pl.nets.pool.corner_max`, the path :class:`gemini_pl.nets.pool.MaxPool2d` takes
  when no gradient is needed (forward only, as in evaluation);
* ``box``: ``avg_pool(x, 3, stride=1, padding=1, count_include_pad=False)`` against
  :func:`gemini_pl.spatial.pyramid.box_mean3` (the pyramid's anti-aliasing), forward and
  forward + backward;
* ``register``: one whole registration of a 2D demo-sized pair (99 × 117, the demo's
  ``Registration`` widths, velocity field, 3 pyramid levels, random weights, no gradient) with
  PyTorch's two kernels put back against the code as it is, alternating call by call (the median of
  the paired ratios).

Prints the median microseconds of each, their ratio and the largest difference of the values
(and gradients). One thread by default (``--threads``)::

    python benchmarks/pooling.py [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from gemini_pl.nets.pool import corner_max
from gemini_pl.spatial.pyramid import box_mean3

MAX_SHAPES = [(1, 8, 100, 120), (2, 16, 100, 120), (1, 32, 50, 60), (1, 8, 48, 56, 44), (1, 16, 24, 28, 22)]
BOX_SHAPES = [(1, 8, 99, 117), (4, 8, 99, 117), (1, 1, 99, 117), (2, 8, 48, 56, 44), (1, 1, 48, 56, 44)]


def median_us(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * sorted(times)[len(times) // 2]


def avg3(x: torch.Tensor) -> torch.Tensor:
    pool = (F.avg_pool2d, F.avg_pool3d)[x.dim() - 4]
    return pool(x, 3, stride=1, padding=1, count_include_pad=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, median of {args.repeats} (us)")
    print("| max pool 2, no grad | nn.MaxPool | corner_max | ratio | values equal |")
    print("|---|---|---|---|---|")
    for shape in MAX_SHAPES:
        x = torch.randn(shape)
        native = (torch.nn.MaxPool2d, torch.nn.MaxPool3d)[len(shape) - 4](2)
        with torch.no_grad():
            a, b = median_us(lambda: native(x), args.repeats), median_us(lambda: corner_max(x), args.repeats)
            same = torch.equal(native(x), corner_max(x))
        print(f"| {tuple(shape)} | {a:.0f} | {b:.0f} | {a / b:.1f} | {same} |")
    print()
    print("| 3-voxel box mean | avg_pool fwd | box_mean3 fwd | ratio | avg_pool fwd+bwd | box_mean3 fwd+bwd | ratio | max diff value / grad |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in BOX_SHAPES:
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn(shape)
        with torch.no_grad():
            fa, fb = median_us(lambda: avg3(x), args.repeats), median_us(lambda: box_mean3(x), args.repeats)
        ba = median_us(lambda: torch.autograd.grad(avg3(x), x, g), args.repeats)
        bb = median_us(lambda: torch.autograd.grad(box_mean3(x), x, g), args.repeats)
        dv = float((avg3(x) - box_mean3(x)).detach().abs().max())
        dg = float((torch.autograd.grad(avg3(x), x, g)[0] - torch.autograd.grad(box_mean3(x), x, g)[0]).abs().max())
        print(f"| {tuple(shape)} | {fa:.0f} | {fb:.0f} | {fa / fb:.1f} | {ba:.0f} | {bb:.0f} | {ba / bb:.1f} | {dv:.1e} / {dg:.1e} |")
    register_ratio(args.repeats)


def register_ratio(repeats: int) -> None:
    import statistics

    import gemini_pl.spatial.pyramid as pyramid
    from gemini_pl.modules import Registration
    from gemini_pl.nets import pool

    module = Registration(spatial_dims=2, num_classes=3, widths=[8, 16, 32, 64, 128, 64, 32, 16, 8],
                          deformer_widths=[16, 32, 32, 32, 16], integration_steps=7, pyramid_levels=3).eval()
    moving, fixed = torch.rand(1, 1, 99, 117), torch.rand(1, 1, 99, 117)
    ours = (pyramid.box_mean3, pool._CornerMaxOnCPU.forward)
    pytorch = (avg3, lambda self, x: super(pool._CornerMaxOnCPU, self).forward(x))
    times: dict[str, list[float]] = {"pytorch": [], "ours": []}
    with torch.no_grad():
        for _ in range(repeats + 3):
            for name, (box, max_forward) in (("pytorch", pytorch), ("ours", ours)):
                pyramid.box_mean3, pool._CornerMaxOnCPU.forward = box, max_forward
                start = time.perf_counter()
                module.register(moving, fixed)
                times[name].append(time.perf_counter() - start)
    pyramid.box_mean3, pool._CornerMaxOnCPU.forward = ours
    a, b = times["pytorch"][3:], times["ours"][3:]
    ratio = statistics.median(x / y for x, y in zip(a, b))
    print(f"\none 2D registration (99 x 117, pyramid 3, velocity): PyTorch's pooling {1e3 * statistics.median(a):.1f} ms, "
          f"ours {1e3 * statistics.median(b):.1f} ms, paired ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
