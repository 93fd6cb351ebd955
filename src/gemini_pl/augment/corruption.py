"""Models-Genesis-style appearance corruption (docs/METHOD.md §5), in torch and vectorised over the batch.

``corrupt(x)`` takes a batch ``(B, C, *S)`` (2D or 3D) with intensities in [0, 1] and returns a
corrupted copy, the input of the MIP restoration head. Three transforms, in this order, each
drawn independently for every sample of the batch:

1. **Local pixel shuffling** (probability ``shuffle_prob`` per sample): ``N`` blocks of size
   ``dim // divisor`` per axis (at least 1) at uniform random positions (fully inside the image);
   the voxels inside each block are randomly permuted. All channels of a voxel move together.

   *Overlapping blocks.* The reference applies the blocks one after another. Here every voxel is
   owned by the *last* block that covers it, and each block permutes the voxels it owns among
   themselves (with a uniform random permutation). Consequences, all tested:
   the result is a permutation of the whole sample (the multiset of values is kept exactly);
   every voxel stays inside a block that covers it; a block that no later block overlaps
   (e.g. the last one, or any block when they do not overlap) holds a permutation of its
   original contents. Done with one winner map (``scatter_reduce`` amax), one integer sort of
   packed ``(block, random bits)`` keys of the owned slots (radix sorts on CPU) and one
   gather/scatter — no loop over blocks or voxels. Which voxel goes where depends only on the
   random draws, so this plan is computed on the generator's device (no device
   synchronisation for a GPU batch with a CPU generator) and applied on the batch's device.

2. **Non-linear intensity** (probability ``nonlinear_prob`` per sample): a cubic Bézier curve
   through (0, 0), two control points drawn from U([0, 1]²), and (1, 1). With control
   x-coordinates in [0, 1] both x(t) and y(t) are non-decreasing, so the mapping x → y is a
   monotone (non-decreasing) function with 0 → 0 and 1 → 1. It is sampled at
   ``nonlinear_curve_points`` t values and resampled (piecewise linearly, with
   ``torch.searchsorted``) onto a uniform lookup table of ``nonlinear_lut_size`` = 65536 entries
   on [0, 1]; every voxel takes the entry nearest to its value (one gather per voxel: the curve
   is applied to the input quantised to 16 bits, |error| <= slope / 131070). The table is
   non-decreasing, so the map stays monotone with 0 → 0 and 1 → 1 exactly. Inputs are clamped
   to [0, 1] first (as ``np.interp`` does at the ends). The published GEMINI code never flips
   the curve (it sorts both coordinates, an increasing map). The Models Genesis reference code
   *flips* it with probability 0.5 (pairing x(t) with y(1 - t): a decreasing map 0 → 1, 1 → 0);
   that is available as ``nonlinear_flip_prob`` and is **off by default** (the published GEMINI
   behaviour, docs/METHOD.md §5).

3. **In-painting** (per sample): boxes are added while ``count < inpaint_max_boxes`` and
   ``U(0, 1) < inpaint_prob``; a box has integer size uniform in
   ``[max(1, ceil(lo·dim)), min(dim, floor(hi·dim))]`` per axis at a uniform position fully
   inside the image, and is filled with U(0, 1) noise (independent per voxel and channel).
   Since the noise is i.i.d., "later boxes overwrite earlier ones" and "every covered voxel gets
   fresh noise" are the same distribution; the noise of all boxes is drawn at once and copied
   box by box (slice copies: the cost scales with the box volume, not the image).

Shuffling and in-painting never change the value range (in-painting adds values in [0, 1));
only the intensity curve clamps its input to [0, 1]. Non-float inputs are rejected.

Random numbers. Every random number comes from ``generator`` when one is given; they are drawn
on the generator's device and moved to ``x.device``. So a CPU ``torch.Generator`` gives the same
corruption for CPU and CUDA inputs (bit-identical up to float rounding of the intensity curve),
and a CUDA generator keeps the draws on the GPU. Without a generator, the default generator of
``x.device`` is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["CorruptionConfig", "corrupt", "local_pixel_shuffle", "nonlinear_intensity", "inpaint"]


# Published defaults per spatial dimensionality (docs/METHOD.md §5, Models Genesis).
_DEFAULTS = {
    3: dict(shuffle_blocks=5000, shuffle_block_divisor=20, inpaint_max_boxes=30,
            inpaint_size_range=(1 / 10, 1 / 5)),
    2: dict(shuffle_blocks=1000, shuffle_block_divisor=30, inpaint_max_boxes=10,
            inpaint_size_range=(1 / 20, 1 / 10)),
}


@dataclass
class CorruptionConfig:
    """Settings of :func:`corrupt`. ``None`` fields take the 2D/3D default of docs/METHOD.md §5.

    Attributes:
        shuffle_prob: probability per sample of local pixel shuffling.
        shuffle_blocks: number of shuffled blocks (None: 5000 in 3D, 1000 in 2D).
        shuffle_block_divisor: block size is ``dim // divisor`` per axis, at least 1
            (None: 20 in 3D, 30 in 2D).
        nonlinear_prob: probability per sample of the Bézier intensity transform.
        nonlinear_flip_prob: probability that an applied curve is flipped (decreasing map,
            the Models Genesis reference uses 0.5). Default 0: always monotone increasing, as
            in the published GEMINI code.
        nonlinear_curve_points: number of t samples of the Bézier curve.
        nonlinear_lut_size: entries of the uniform lookup table applied to the voxels
            (nearest entry; 65536 = 16-bit resolution of the input).
        inpaint_prob: probability of adding one more box (while fewer than the maximum).
        inpaint_max_boxes: maximum number of boxes (None: 30 in 3D, 10 in 2D).
        inpaint_size_range: box size range as fractions of each axis' length
            (None: (1/10, 1/5) in 3D, (1/20, 1/10) in 2D).
    """

    shuffle_prob: float = 0.8
    shuffle_blocks: Optional[int] = None
    shuffle_block_divisor: Optional[int] = None
    nonlinear_prob: float = 0.9
    nonlinear_flip_prob: float = 0.0
    nonlinear_curve_points: int = 1000
    nonlinear_lut_size: int = 65536
    inpaint_prob: float = 0.95
    inpaint_max_boxes: Optional[int] = None
    inpaint_size_range: Optional[Tuple[float, float]] = None

    @classmethod
    def for_dims(cls, spatial_dims: int, **overrides) -> "CorruptionConfig":
        """The config with every ``None`` default filled in for ``spatial_dims`` (2 or 3)."""
        return cls(**overrides).resolved(spatial_dims)

    def resolved(self, spatial_dims: int) -> "CorruptionConfig":
        """A copy with the ``None`` fields filled for ``spatial_dims``; validates all fields."""
        if spatial_dims not in _DEFAULTS:
            raise ConfigError(
                f"corruption supports 2D and 3D images, got {spatial_dims} spatial dimensions")
        d = _DEFAULTS[spatial_dims]
        cfg = replace(self, **{k: v for k, v in d.items() if getattr(self, k) is None})
        for name in ("shuffle_prob", "nonlinear_prob", "nonlinear_flip_prob", "inpaint_prob"):
            p = getattr(cfg, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"corruption.{name} must be in [0, 1], got {p}")
        for name in ("shuffle_blocks", "inpaint_max_boxes"):
            if int(getattr(cfg, name)) < 0:
                raise ConfigError(f"corruption.{name} must be >= 0, got {getattr(cfg, name)}")
        if int(cfg.shuffle_block_divisor) < 1:
            raise ConfigError(
                f"corruption.shuffle_block_divisor must be >= 1, got {cfg.shuffle_block_divisor}")
        if int(cfg.nonlinear_curve_points) < 2 or int(cfg.nonlinear_lut_size) < 2:
            raise ConfigError("corruption.nonlinear_curve_points and nonlinear_lut_size must be >= 2")
        lo, hi = cfg.inpaint_size_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(
                f"corruption.inpaint_size_range must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        cfg.inpaint_size_range = (float(lo), float(hi))
        return cfg


# ----------------------------------------------------------------------------- random helpers


def _draw_device(generator: Optional[torch.Generator], device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _rand(shape, generator, device, dtype=torch.float32) -> Tensor:
    """U[0, 1) drawn on the generator's device (or ``device`` without one)."""
    return torch.rand(shape, generator=generator, device=_draw_device(generator, device),
                      dtype=dtype)


def _randint(high: Tensor | int, shape, generator, device) -> Tensor:
    """Integers uniform in [0, high) (``high`` may be a tensor broadcastable to ``shape``),
    returned on the draw device as int64."""
    u = _rand(shape, generator, device, dtype=torch.float64)
    if isinstance(high, Tensor):
        high = high.to(u.device, torch.float64)
    r = (u * high).floor().to(torch.int64)
    # guard against u*high rounding up to high
    if isinstance(high, Tensor):
        return torch.minimum(r, high.to(torch.int64) - 1).clamp_min(0)
    return r.clamp(0, max(int(high) - 1, 0))


def _select(mask: Tensor) -> Optional[Tensor]:
    """Indices of the True entries, or None when all are True (fast path)."""
    if bool(mask.all()):
        return None
    return mask.nonzero().flatten()


# ------------------------------------------------------------------------- pixel shuffling


def local_pixel_shuffle(x: Tensor, num_blocks: int, block_size: Sequence[int],
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """Shuffle ``num_blocks`` random blocks of ``block_size`` in every sample of ``x``.

    ``x`` is ``(B, C, *S)``; returns a new tensor. See the module docstring for the semantics
    of overlapping blocks (each voxel is permuted within the last block covering it). The
    permutation (which voxel goes where) depends only on the random draws, so it is planned on
    the generator's device and applied on ``x.device`` with one gather/scatter.
    """
    B, C = x.shape[:2]
    S = tuple(x.shape[2:])
    bs = [max(1, min(int(b), s)) for b, s in zip(block_size, S)]
    if B == 0 or int(num_blocks) == 0 or math.prod(bs) <= 1 or x.numel() == 0:
        return x.clone()
    dest, src = _shuffle_plan(B, S, int(num_blocks), bs, generator, x.device)
    dev = x.device
    dest, src = dest.to(dev, non_blocking=True), src.to(dev, non_blocking=True)
    V = math.prod(S)
    if C > 1:  # all channels of a voxel move together; x is laid out (B, C, V)
        b = dest.div(V, rounding_mode="floor")
        chan = (b * ((C - 1) * V)).view(1, -1) + torch.arange(C, device=dev).view(C, 1) * V
        src = (src.view(1, -1) + chan).view(-1)
        dest = (dest.view(1, -1) + chan).view(-1)
    xf = x.reshape(-1)
    out = xf.clone()
    out.index_copy_(0, dest, xf.index_select(0, src))
    return out.view(x.shape)


def _shuffle_plan(B: int, S: Sequence[int], N: int, bs: Sequence[int],
                  generator: Optional[torch.Generator], device: torch.device) -> Tuple[Tensor, Tensor]:
    """Destination and source voxels ``(M,)`` int64 (flat over ``B × prod(S)``) of the shuffle.

    Computed on the generator's device (``device`` without a generator): the block corners,
    the winner map (the last block covering a voxel owns it), the owned slots of every block in
    index order (the destinations) and the same slots in a uniformly random order within each
    block (the sources).
    """
    nd = len(S)
    V = math.prod(S)
    K = math.prod(bs)
    G = B * N  # blocks over the whole batch
    dev = _draw_device(generator, device)
    strides = [math.prod(S[a + 1:]) for a in range(nd)]
    # block corners: uniform in [0, S_a - bs_a] per axis -> flat index of the corner, with the
    # sample offset b * V folded in (one winner map over all samples): (B, N)
    highs = torch.tensor([s_ - b_ + 1 for s_, b_ in zip(S, bs)], dtype=torch.float64,
                         device=dev).view(nd, 1, 1)
    starts = (_rand((nd, B, N), generator, device, dtype=torch.float64) * highs).floor_()
    starts = torch.minimum(starts, highs - 1).to(torch.int64)  # guard u * high rounding up
    st = torch.tensor(strides, dtype=torch.int64, device=dev).view(nd, 1, 1)
    base = (starts * st).sum(0) + torch.arange(B, device=dev, dtype=torch.int64).view(B, 1) * V
    # flat offsets of the voxels inside one block (K,)
    off = torch.zeros((1,), dtype=torch.int64, device=dev)
    for a in range(nd):
        off = (off[:, None] + torch.arange(bs[a], device=dev, dtype=torch.int64) * strides[a]).reshape(-1)
    # Blocks are laid out in memory order of their corners (block ids keep the draw order that
    # decides ownership), so that the passes below sweep the image instead of jumping around.
    base, rank = base.view(-1).sort()
    slots = (base.view(G, 1) + off).view(-1)  # (G*K,) voxel of every slot; slot s is in block s // K

    # winner map: the last drawn block covering each voxel owns it (block ids in the narrowest
    # integer type that holds them: on CPU the scatter and gather are memory-bound)
    if G < 2**15 and dev.type == "cpu":
        wdt = torch.int16
    else:
        wdt = torch.int32 if G < 2**31 else torch.int64
    gid = rank.to(wdt).view(G, 1).expand(G, K).reshape(-1)
    winner = torch.full((B * V,), -1, dtype=wdt, device=dev)
    winner.scatter_reduce_(0, slots, gid, reduce="amax", include_self=True)
    sel = winner.index_select(0, slots).eq_(gid).nonzero().view(-1)  # owned slots, by block
    del winner, gid
    dest = slots.index_select(0, sel)
    del slots
    src = dest.index_select(0, _random_order_within_blocks(sel.div_(K, rounding_mode="floor"), generator))
    return dest, src


_KEY_BITS = 21  # random bits per sort key (three keys from one 63-bit draw)
_CPU_SORT_BLOCKS = 1 << 10  # blocks per CPU sort call: 10 + 21 bits fit an int32 key


def _random_order_within_blocks(block: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Indices ``(M,)`` that keep the entries grouped by ``block`` (a non-decreasing ``(M,)``
    int64 tensor) and order them uniformly at random within each block.

    Sort keys are ``(block, 21 random bits)``; ties (probability 2^-21 per pair) keep their
    index order. On CPU the sort runs on int32 keys in chunks of 1024 blocks (radix passes on
    cache-sized arrays); elsewhere in one call on int64 keys.
    """
    M = block.numel()
    dev = block.device
    # three independent 21-bit fields from each 63-bit draw (random_ fills int64 with [0, 2^63))
    words = torch.empty(((M + 2) // 3,), dtype=torch.int64, device=dev).random_(generator=generator)
    mask = (1 << _KEY_BITS) - 1
    bits = torch.empty((words.numel(), 3), dtype=torch.int64, device=dev)
    for i in range(3):
        torch.bitwise_and(words >> (_KEY_BITS * i), mask, out=bits[:, i])
    bits = bits.view(-1)[:M]
    if dev.type != "cpu":
        return torch.sort((block << _KEY_BITS) | bits, stable=True).indices
    order = torch.empty((M,), dtype=torch.int64)
    n_blocks = int(block[-1]) + 1 if M else 0
    edges = torch.arange(0, n_blocks + _CPU_SORT_BLOCKS, _CPU_SORT_BLOCKS)
    bounds = torch.searchsorted(block, edges).tolist()
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b > a:
            key = ((block[a:b] - i * _CPU_SORT_BLOCKS) << _KEY_BITS).add_(bits[a:b]).to(torch.int32)
            torch.add(torch.sort(key, stable=True).indices, a, out=order[a:b])
    return order


# ---------------------------------------------------------------------- non-linear intensity


def _bezier_lut(ctrl: Tensor, flip: Tensor, n_t: int, n_lut: int) -> Tensor:
    """Uniform lookup tables (B, n_lut) on [0, 1] of the Bézier maps through
    (0,0), ctrl[:, 0], ctrl[:, 1], (1,1); ``flip`` pairs x(t) with y(1 - t)."""
    dev = ctrl.device
    t = torch.linspace(0.0, 1.0, n_t, device=dev, dtype=torch.float64)
    s = 1.0 - t
    w1, w2, w3 = 3 * s * s * t, 3 * s * t * t, t * t * t  # Bernstein weights (P0 = 0)
    c = ctrl.to(torch.float64)
    bx = w1 * c[:, 0, 0:1] + w2 * c[:, 1, 0:1] + w3
    by = w1 * c[:, 0, 1:2] + w2 * c[:, 1, 1:2] + w3
    bx = bx.cummax(dim=1).values  # exact monotonicity despite rounding
    by = by.cummax(dim=1).values
    bx[:, 0], bx[:, -1] = 0.0, 1.0
    by[:, 0], by[:, -1] = 0.0, 1.0
    by = torch.where(flip[:, None], by.flip(1), by)
    # Resample x -> y on the uniform grid u_i = i / (n_lut - 1): u lies in the curve segment k
    # with bx[k] <= u < bx[k + 1] (zero-width segments are skipped), y = y0 + (u - x0) * slope.
    B = ctrl.shape[0]
    slope = (by[:, 1:] - by[:, :-1]) / (bx[:, 1:] - bx[:, :-1]).clamp_min(1e-300)
    x0, y0, slope = (a.to(torch.float32) for a in (bx[:, :-1], by[:, :-1], slope))
    u = torch.linspace(0.0, 1.0, n_lut, device=dev, dtype=torch.float32).repeat(B, 1)
    k = torch.searchsorted(bx.to(torch.float32), u, right=True).sub_(1).clamp_(0, n_t - 2)
    lut = (u - x0.gather(1, k)).mul_(slope.gather(1, k)).add_(y0.gather(1, k))
    # exact monotonicity despite rounding (increasing curve, or decreasing when flipped)
    sign = torch.where(flip, -1.0, 1.0).to(torch.float32).view(B, 1)
    lut = lut.mul_(sign).cummax(dim=1).values.mul_(sign).clamp_(0.0, 1.0)
    lut[:, 0], lut[:, -1] = by[:, 0].float(), by[:, -1].float()
    return lut


def nonlinear_intensity(x: Tensor, generator: Optional[torch.Generator] = None,
                        flip_prob: float = 0.0, curve_points: int = 1000,
                        lut_size: int = 65536, _inplace: bool = False) -> Tensor:
    """Apply one random Bézier intensity curve per sample of ``x`` (B, C, *S); new tensor
    (``_inplace``: may write the result into ``x``, for internal buffers)."""
    B = x.shape[0]
    dev = x.device
    ctrl = _rand((B, 2, 2), generator, dev, dtype=torch.float64)
    flip = _rand((B,), generator, dev) < flip_prob
    lut = _bezier_lut(ctrl.to(dev), flip.to(dev), curve_points, lut_size)
    return _apply_lut(x, lut, inplace=_inplace)


def _apply_lut(x: Tensor, lut: Tensor, inplace: bool = False) -> Tensor:
    """Nearest-entry lookup in the uniform tables ``lut`` (B, n) on [0, 1].

    Written for few large temporaries (on CPU, fresh multi-MB buffers cost page faults that
    dominate this pass): with ``inplace`` the only new buffer is the int32 index.
    """
    B = x.shape[0]
    n = lut.shape[1]
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    lut = lut.to(cdt).reshape(-1)
    own = inplace and x.dtype == cdt and x.is_contiguous()
    v = x.view(B, -1) if own else x.reshape(B, -1).to(cdt, copy=True)
    # nearest entry: floor(clamp(x, 0, 1) * (n - 1) + 0.5)
    i = v.clamp_(0.0, 1.0).mul_(n - 1).add_(0.5).to(torch.int32)
    if B > 1:
        i += torch.arange(B, device=x.device, dtype=torch.int32).view(B, 1) * n
    i = i.view(-1)
    if own:
        return torch.index_select(lut, 0, i, out=x.view(-1)).view(x.shape)
    return lut.index_select(0, i).to(x.dtype).view(x.shape)


# ------------------------------------------------------------------------------- in-painting


def _box_sizes_bounds(S: Sequence[int], size_range: Tuple[float, float]):
    lo_f, hi_f = size_range
    lo = [min(s, max(1, math.ceil(lo_f * s - 1e-9))) for s in S]
    hi = [max(l, min(s, math.floor(hi_f * s + 1e-9))) for l, s in zip(lo, S)]
    return lo, hi


def inpaint(x: Tensor, max_boxes: int, prob: float, size_range: Tuple[float, float],
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Fill a random number of random boxes of every sample with U(0, 1) noise; new tensor."""
    return _inpaint_(x.clone(), max_boxes, prob, size_range, generator)


def _inpaint_(out: Tensor, max_boxes: int, prob: float, size_range: Tuple[float, float],
              generator: Optional[torch.Generator] = None) -> Tensor:
    """In-place version of :func:`inpaint`.

    The box geometry is drawn on the generator's device and read on the host (no device
    synchronisation with a CPU generator); the noise of all boxes is drawn in one call and
    copied into the boxes one box at a time (at most ``B × max_boxes`` slice copies, no pass
    over the whole image).
    """
    B, C = out.shape[:2]
    S = tuple(out.shape[2:])
    nd = len(S)
    K = int(max_boxes)
    if B == 0 or K == 0 or prob <= 0.0 or out.numel() == 0:
        return out
    dev = out.device
    # number of boxes: leading run of successes, capped at K
    go = _rand((B, K), generator, dev) < prob
    count = go.to(torch.int32).cumprod(dim=1).sum(1)  # (B,)
    lo, hi = _box_sizes_bounds(S, size_range)
    sizes, starts = [], []
    for a in range(nd):
        size = lo[a] + _randint(hi[a] - lo[a] + 1, (B, K), generator, dev)
        starts.append(_randint(S[a] - size + 1, (B, K), generator, dev))
        sizes.append(size)
    count = count.tolist()
    if not any(count):
        return out
    size_l = torch.stack(sizes, -1).tolist()  # [B][K][nd]
    start_l = torch.stack(starts, -1).tolist()
    boxes = [(b, start_l[b][k], size_l[b][k]) for b in range(B) for k in range(count[b])]
    # one noise draw for all boxes, in box order (later boxes overwrite earlier ones: with
    # i.i.d. noise that equals fresh noise on every covered voxel)
    n = C * sum(math.prod(sz) for _, _, sz in boxes)
    noise = _rand((n,), generator, dev).to(dev, out.dtype, non_blocking=True)
    pos = 0
    for b, st, sz in boxes:
        vol = C * math.prod(sz)
        region = (b, slice(None)) + tuple(slice(s0, s0 + k) for s0, k in zip(st, sz))
        out[region] = noise[pos:pos + vol].view(C, *sz)
        pos += vol
    return out


# --------------------------------------------------------------------------------- pipeline


@torch.no_grad()
def corrupt(x: Tensor, config: Optional[CorruptionConfig] = None,
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Models-Genesis appearance corruption of a batch (docs/METHOD.md §5).

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating tensor with values in [0, 1].
        config: :class:`CorruptionConfig` (default: the published settings).
        generator: optional ``torch.Generator`` (CPU or on ``x.device``); all random numbers
            are drawn from it on its device, then moved to ``x.device``.

    Returns:
        A new tensor of the same shape, dtype and device (``x`` is not modified). Each sample
        gets its own draws: shuffling (p ``shuffle_prob``), then the Bézier intensity curve
        (p ``nonlinear_prob``), then in-painting. Runs under ``torch.no_grad()`` (an input
        augmentation: the result carries no gradient).
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"corrupt expects a floating-point tensor, got {x.dtype}")
    if x.ndim < 3:
        raise ValueError(f"corrupt expects (B, C, *spatial), got shape {tuple(x.shape)}")
    nd = x.ndim - 2
    cfg = (config or CorruptionConfig()).resolved(nd)
    S = tuple(x.shape[2:])
    B = x.shape[0]
    dev = x.device
    out = x  # replaced by a new tensor by the first transform that runs
    if B == 0:
        return x.clone()

    # 1. local pixel shuffling
    if cfg.shuffle_prob > 0 and cfg.shuffle_blocks > 0:
        apply = _rand((B,), generator, dev) < cfg.shuffle_prob
        if bool(apply.any()):
            sel = _select(apply)
            bsize = [max(1, s // cfg.shuffle_block_divisor) for s in S]
            if sel is None:
                out = local_pixel_shuffle(out, cfg.shuffle_blocks, bsize, generator)
            else:
                sel = sel.to(dev)
                out = out.clone() if out is x else out
                out[sel] = local_pixel_shuffle(out[sel], cfg.shuffle_blocks, bsize, generator)

    # 2. non-linear intensity
    if cfg.nonlinear_prob > 0:
        apply = _rand((B,), generator, dev) < cfg.nonlinear_prob
        if bool(apply.any()):
            sel = _select(apply)
            kw = dict(flip_prob=cfg.nonlinear_flip_prob, curve_points=cfg.nonlinear_curve_points,
                      lut_size=cfg.nonlinear_lut_size)
            if sel is None:
                out = nonlinear_intensity(out, generator, _inplace=out is not x, **kw)
            else:
                sel = sel.to(dev)
                out = out.clone() if out is x else out
                out[sel] = nonlinear_intensity(out[sel], generator, **kw)

    # 3. in-painting
    if cfg.inpaint_prob > 0 and cfg.inpaint_max_boxes > 0:
        out = x.clone(memory_format=torch.contiguous_format) if out is x else out
        out = _inpaint_(out, cfg.inpaint_max_boxes, cfg.inpaint_prob, cfg.inpaint_size_range,
                        generator)
    return out.clone() if out is x else out
