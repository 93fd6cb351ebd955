import math

import pytest
import torch

from gemini_pl.augment.corruption import CorruptionConfig, corrupt, local_pixel_shuffle
from gemini_pl.errors import ConfigError

OFF = dict(shuffle_prob=0.0, nonlinear_prob=0.0, inpaint_prob=0.0)


def only(**kw):
    return CorruptionConfig(**{**OFF, **kw})


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_defaults_per_dims():
    c3, c2 = CorruptionConfig.for_dims(3), CorruptionConfig.for_dims(2)
    assert (c3.shuffle_blocks, c3.shuffle_block_divisor, c3.inpaint_max_boxes) == (5000, 20, 30)
    assert (c2.shuffle_blocks, c2.shuffle_block_divisor, c2.inpaint_max_boxes) == (1000, 30, 10)
    assert c3.inpaint_size_range == pytest.approx((0.1, 0.2))
    assert c2.inpaint_size_range == pytest.approx((0.05, 0.1))
    assert (c3.shuffle_prob, c3.nonlinear_prob, c3.inpaint_prob) == (0.8, 0.9, 0.95)
    with pytest.raises(ConfigError):
        corrupt(torch.rand(1, 1, 8, 8), CorruptionConfig(shuffle_prob=1.5))


@pytest.mark.parametrize("shape,dtype", [((2, 1, 24, 20, 16), torch.float32),
                                         ((3, 2, 40, 36), torch.float64),
                                         ((2, 1, 32, 32), torch.float16)])
def test_shape_dtype_range_determinism_input_untouched(shape, dtype):
    x = torch.rand(shape, generator=gen(1)).to(dtype)
    x0 = x.clone()
    cfg = CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0)
    y = corrupt(x, cfg, gen(7))
    assert torch.equal(x, x0)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)
    assert torch.equal(corrupt(x, cfg, gen(7)), y)
    assert not torch.equal(corrupt(x, cfg, gen(8)), y)


def test_probability_zero_returns_input_exactly():
    x = torch.rand(2, 1, 16, 16, 16)
    y = corrupt(x, only(), gen())
    assert torch.equal(y, x) and y is not x
    y = corrupt(x, CorruptionConfig(shuffle_prob=0.0, nonlinear_prob=0.0, inpaint_max_boxes=0))
    assert torch.equal(y, x)


@pytest.mark.parametrize("shape", [(2, 2, 24, 22, 20), (3, 1, 72, 60)])
def test_shuffle_only_is_local_permutation(shape):
    B, C = shape[:2]
    S = shape[2:]
    n = math.prod(S)
    # distinct values so that every output voxel can be traced to its source voxel
    x = torch.stack([torch.randperm(n, generator=gen(b)) for b in range(B)]).float() / n
    x = x[:, None].expand(B, C, n).reshape(shape).clone()
    # channels are identical: all channels of a voxel must move together
    cfg = only(shuffle_prob=1.0, shuffle_blocks=150, shuffle_block_divisor=5)
    y = corrupt(x, cfg, gen(3))
    bs = [s // 5 for s in S]
    for b in range(B):
        assert torch.equal(y[b].flatten().sort().values, x[b].flatten().sort().values)
        assert torch.equal(y[b], y[b, :1].expand_as(y[b]))
        # source position of every output voxel: within one block size on every axis
        src = torch.empty(n, dtype=torch.long)
        src[(x[b, 0].flatten() * n).round().long()] = torch.arange(n)
        src_of_out = src[(y[b, 0].flatten() * n).round().long()]
        src_coords = torch.stack(torch.unravel_index(src_of_out, S))
        dst_coords = torch.stack(torch.unravel_index(torch.arange(n), S))
        d = (src_coords - dst_coords).abs()
        for a in range(len(S)):
            assert d[a].max() <= bs[a] - 1
        moved = (y[b] != x[b]).float().mean()
        assert moved > 0.2
    assert not torch.equal(y[0] != x[0], y[1] != x[1])  # samples get their own blocks


@pytest.mark.parametrize("S,bs", [((20, 18, 16), (4, 3, 5)), ((40, 30), (7, 6))])
def test_single_block_contents_are_a_permutation(S, bs):
    x = torch.rand(2, 1, *S, generator=gen(0))
    for seed in range(5):
        y = local_pixel_shuffle(x, 1, bs, gen(seed))
        for b in range(2):
            diff = (y[b, 0] != x[b, 0]).nonzero()
            assert len(diff) > 0
            lo, hi = diff.min(0).values, diff.max(0).values
            assert torch.all(hi - lo + 1 <= torch.tensor(bs))
            # a block-sized window containing the changed voxels holds a permutation
            start = [min(int(l), s - k) for l, s, k in zip(lo, S, bs)]
            win = tuple(slice(s0, s0 + k) for s0, k in zip(start, bs))
            assert torch.equal(y[b, 0][win].flatten().sort().values,
                               x[b, 0][win].flatten().sort().values)
            outside = torch.ones(S, dtype=torch.bool)
            outside[win] = False
            assert torch.equal(y[b, 0][outside], x[b, 0][outside])


def test_shuffle_with_default_3d_blocks_preserves_values():
    x = torch.rand(1, 1, 64, 64, 64, generator=gen(2))
    y = corrupt(x, only(shuffle_prob=1.0), gen(1))
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
    # 5000 blocks of 3^3 in 64^3: about 1 - exp(-5000*27/64^3) ~ 40% of the voxels move
    assert 0.3 < (y != x).float().mean() < 0.5


def test_shuffle_probability_selects_samples():
    x = torch.rand(1, 1, 90, 90).expand(16, 1, 90, 90).clone()  # blocks of 3x3
    y = corrupt(x, only(shuffle_prob=0.5), gen(4))
    changed = [(not torch.equal(y[b], x[b])) for b in range(16)]
    assert 0 < sum(changed) < 16
    for b in range(16):
        assert torch.equal(y[b].flatten().sort().values, x[b].flatten().sort().values)


def test_nonlinear_only_is_monotone_with_fixed_ends():
    x = torch.rand(6, 1, 20, 20, 20, generator=gen(5))
    x[:, :, 0, 0, 0], x[:, :, 0, 0, 1] = 0.0, 1.0
    y = corrupt(x, only(nonlinear_prob=1.0), gen(6))
    assert torch.all(y[:, :, 0, 0, 0] == 0) and torch.all(y[:, :, 0, 0, 1] == 1)
    for b in range(6):
        order = x[b].flatten().argsort()
        ys = y[b].flatten()[order]
        assert torch.all(ys[1:] >= ys[:-1])
        assert (y[b] - x[b]).abs().max() > 1e-3
    # different samples get different curves
    assert not torch.allclose(y[0], y[1])
    # values of the same input map to the same output in every sample: a function of x
    xs = torch.linspace(0, 1, 101).view(1, 1, 1, 101).expand(3, 1, 1, 101).clone()
    ys = corrupt(xs, only(nonlinear_prob=1.0), gen(9))
    assert torch.all(ys[:, :, 1:] >= ys[:, :, :-1])


def test_nonlinear_flip_gives_decreasing_map():
    xs = torch.linspace(0, 1, 101).view(1, 1, 1, 101).expand(4, 1, 1, 101).clone()
    ys = corrupt(xs, only(nonlinear_prob=1.0, nonlinear_flip_prob=1.0), gen(1))
    assert torch.all(ys[:, :, 1:] <= ys[:, :, :-1])
    assert torch.all(ys[..., 0] == 1) and torch.all(ys[..., -1] == 0)


@pytest.mark.parametrize("S,rng", [((40, 30, 20), (0.1, 0.2)), ((64, 48), (0.05, 0.1))])
def test_inpaint_single_box(S, rng):
    x = torch.full((3, 2, *S), 0.5)
    lo = [max(1, math.ceil(rng[0] * s - 1e-9)) for s in S]
    hi = [math.floor(rng[1] * s + 1e-9) for s in S]
    sizes = set()
    for seed in range(4):
        y = corrupt(x, only(inpaint_prob=1.0, inpaint_max_boxes=1, inpaint_size_range=rng),
                    gen(seed))
        assert y.min() >= 0 and y.max() <= 1
        for b in range(3):
            diff = (y[b] != x[b]).any(0)
            idx = diff.nonzero()
            l, h = idx.min(0).values, idx.max(0).values
            size = (h - l + 1).tolist()
            box = tuple(slice(int(a), int(c) + 1) for a, c in zip(l, h))
            assert diff[box].all()  # one solid axis-aligned box ...
            assert int(diff.sum()) == math.prod(size)  # ... and nothing else
            for a in range(len(S)):
                assert lo[a] <= size[a] <= hi[a]
            sizes.add(tuple(size))
            assert not torch.equal(y[b, 0][box], y[b, 1][box])  # noise per channel
    assert len(sizes) > 3


def test_inpaint_box_count_and_batch_independence():
    x = torch.full((8, 1, 32, 32), 0.5)
    y = corrupt(x, only(inpaint_prob=0.95), gen(2))
    changed = (y != x).flatten(1)
    assert torch.all(changed.any(1))
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(changed[i], changed[j])
    y0 = corrupt(x, only(inpaint_prob=0.95, inpaint_max_boxes=0), gen(2))
    assert torch.equal(y0, x)


def test_batch_samples_get_different_corruption():
    x = torch.rand(1, 1, 32, 32, 32, generator=gen(0)).expand(4, 1, 32, 32, 32).clone()
    y = corrupt(x, CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0), gen(1))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(y[i], y[j])


def test_rejects_bad_input():
    with pytest.raises(TypeError):
        corrupt(torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ConfigError):
        corrupt(torch.zeros(1, 1, 8))


def test_nonlinear_probability_selects_samples_and_noncontiguous_input():
    x = torch.rand(16, 1, 12, 12, generator=gen(0)).transpose(-1, -2)  # non-contiguous
    y = corrupt(x, only(nonlinear_prob=0.5), gen(3))
    changed = [not torch.equal(y[b], x[b]) for b in range(16)]
    assert 0 < sum(changed) < 16
    assert y.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_cpu_generator():
    x = torch.rand(2, 1, 32, 32, 32, generator=gen(0))
    cfg = CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0)
    y_cpu = corrupt(x, cfg, gen(1))
    y_gpu = corrupt(x.cuda(), cfg, gen(1))
    assert y_gpu.device.type == "cuda"
    assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-6)
    g = torch.Generator(device="cuda").manual_seed(1)
    assert corrupt(x.cuda(), cfg, g).device.type == "cuda"


def test_intensity_curve_is_the_bezier_through_the_control_points():
    from gemini_pl.augment.corruption import _apply_lut, _bezier_lut

    ctrl = torch.tensor([[[0.2, 0.8], [0.6, 0.1]], [[0.9, 0.3], [0.1, 0.7]]], dtype=torch.float64)
    lut = _bezier_lut(ctrl, torch.tensor([False, True]), 1000, 65536)
    t = torch.linspace(0.02, 0.98, 50, dtype=torch.float64)
    s = 1 - t

    def bez(p1, p2):
        return 3 * s * s * t * p1 + 3 * s * t * t * p2 + t ** 3

    xs = torch.stack([bez(c[0, 0], c[1, 0]) for c in ctrl])
    ys = torch.stack([bez(c[0, 1], c[1, 1]) for c in ctrl])
    ys[1] = bez(ctrl[1, 0, 1], ctrl[1, 1, 1]).flip(0)  # flipped: x(t) paired with y(1 - t)
    out = _apply_lut(xs.float().view(2, 1, 1, 50), lut).view(2, 50).double()
    assert torch.allclose(out, ys, atol=2e-3)


def test_random_order_within_blocks_is_grouped_and_uniform():
    from itertools import permutations

    from gemini_pl.augment.corruption import _random_order_within_blocks

    n_blocks, k = 30000, 3  # more than one CPU sort chunk (1024 blocks)
    block = torch.arange(n_blocks).repeat_interleave(k)
    order = _random_order_within_blocks(block, gen(0))
    assert torch.equal(order.sort().values, torch.arange(n_blocks * k))  # a permutation ...
    assert torch.equal(block[order], block)  # ... that keeps every entry in its block
    # every within-block order equally likely: 6 patterns, 5000 expected each (sd ~65)
    local = (order - block * k).view(n_blocks, k)
    codes = local[:, 0] * 9 + local[:, 1] * 3 + local[:, 2]
    counts = torch.bincount(codes, minlength=27)
    expected = [p[0] * 9 + p[1] * 3 + p[2] for p in permutations(range(3))]
    assert int(counts.sum()) == int(counts[expected].sum()) == n_blocks
    assert all(abs(int(counts[c]) - n_blocks / 6) < 5 * (n_blocks * (1 / 6) * (5 / 6)) ** 0.5 for c in expected)
    # uneven block sizes (as when later blocks take voxels away)
    block = torch.tensor([0, 0, 2, 2, 2, 2, 5, 7, 7])
    order = _random_order_within_blocks(block, gen(1))
    assert torch.equal(block[order], block)
