"""Box masks, Models Genesis out-painting, and the Models Genesis corruption pipeline.

* :func:`box_mask`: the union of axis-aligned boxes per sample as a (N, 1, *S) bool mask.
* :func:`random_boxes`: integer box corners and sizes, sizes uniform in
  ``[max(1, ceil(lo·s)), min(s, floor(hi·s))]`` per axis, corners uniform with the box inside the
  image; box j of a sample is active while the leading draws ``U(0, 1) < prob`` succeed (at least
  ``min_boxes``), at most ``max_boxes``.
* :func:`outpaint` (Models Genesis ``image_out_painting``): every voxel becomes U(0, 1) noise except
  inside the kept boxes (1 box, then up to 4 more while ``U < 0.95``; sides 3/7–4/7 of each axis),
  which keep the image.
* :func:`genesis_corrupt` (Models Genesis ``generate_pair``): local pixel shuffling and the
  non-linear intensity curve of :func:`~gemini_pl.augment.corruption.corrupt` (its in-painting
  off), then with probability ``paint_prob`` per sample in-painting (probability ``inpaint_rate``:
  up to 5 noise boxes of sides 1/6–1/3, while ``U < 0.95``) or else out-painting.

Random numbers come from ``generator`` (drawn on its device, moved to the images' device).
Images (N, C, *S) in [0, 1].
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .corruption import CorruptionConfig, corrupt, inpaint

__all__ = ["box_mask", "genesis_corrupt", "outpaint", "random_boxes"]


def _draw(shape, generator, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype,
                      device=generator.device if generator is not None else "cpu")


def random_boxes(n: int, spatial: tuple[int, ...], max_boxes: int, size_range: tuple[float, float],
                 prob: float = 1.0, min_boxes: int = 1, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(starts (n, K, nd) int64, sizes (n, K, nd) int64, active (n, K) bool), K = ``max_boxes``."""
    nd, k = len(spatial), int(max_boxes)
    s = torch.tensor(spatial, dtype=torch.float64)
    lo = torch.clamp(torch.ceil(size_range[0] * s - 1e-9), min=1)
    lo = torch.minimum(lo, s)
    hi = torch.maximum(torch.minimum(torch.floor(size_range[1] * s + 1e-9), s), lo)
    sizes = torch.minimum(lo + (_draw((n, k, nd), generator).cpu() * (hi - lo + 1)).floor(), hi)
    starts = torch.minimum((_draw((n, k, nd), generator).cpu() * (s - sizes + 1)).floor(), s - sizes)
    go = _draw((n, k), generator).cpu() < prob
    go[:, :min_boxes] = True
    active = go.long().cumprod(1).bool()
    return starts.long(), sizes.long(), active


def box_mask(spatial: tuple[int, ...], starts: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 1, *S) bool: the voxel lies in at least one active box of its sample."""
    n, k, nd = starts.shape
    inside = active.to(device).view(n, k, *([1] * nd))
    for a, size in enumerate(spatial):
        ar = torch.arange(size, device=device)
        st = starts[..., a].to(device)[..., None]
        ok = (ar >= st) & (ar < st + sizes[..., a].to(device)[..., None])   # (n, k, S_a)
        shape = [n, k] + [1] * nd
        shape[2 + a] = size
        inside = inside & ok.view(shape)
    return inside.any(1, keepdim=True)


def outpaint(x: torch.Tensor, generator: torch.Generator | None = None, max_boxes: int = 5, prob: float = 0.95,
             size_range: tuple[float, float] = (3 / 7, 4 / 7)) -> torch.Tensor:
    """Models Genesis out-painting of every sample of x (N, C, *S); a new tensor."""
    spatial = tuple(x.shape[2:])
    starts, sizes, active = random_boxes(x.shape[0], spatial, max_boxes, size_range, prob, 1, generator)
    keep = box_mask(spatial, starts, sizes, active, x.device)
    noise = _draw(tuple(x.shape), generator, torch.float32).to(x.device, x.dtype)
    return torch.where(keep, x, noise)


@torch.no_grad()
def genesis_corrupt(x: torch.Tensor, config: CorruptionConfig | None = None, paint_prob: float = 0.9,
                    inpaint_rate: float = 0.2, generator: torch.Generator | None = None,
                    inpaint_boxes: int = 5, inpaint_size: tuple[float, float] = (1 / 6, 1 / 3)) -> torch.Tensor:
    """The Models Genesis corruption of x (N, C, *S) in [0, 1]; a new tensor."""
    cfg = replace(config or CorruptionConfig(), inpaint_prob=0.0)
    out = corrupt(x, cfg, generator=generator)
    n = x.shape[0]
    paint = (_draw((n,), generator) < paint_prob).cpu()
    inner = (_draw((n,), generator) < inpaint_rate).cpu()
    for sel, fn in ((paint & inner, lambda t: inpaint(t, inpaint_boxes, 0.95, inpaint_size, generator)),
                    (paint & ~inner, lambda t: outpaint(t, generator))):
        idx = sel.nonzero().flatten()
        if idx.numel():
            idx = idx.to(x.device)
            out[idx] = fn(out[idx])
    return out
