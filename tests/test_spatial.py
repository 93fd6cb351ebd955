"""Spatial transformer (METHOD §2): warp conventions, exactness, gradients, validity mask, legacy sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gemini_pl.spatial import validity_mask, warp

SIZES_2D = [(5, 7), (13, 17), (33, 29), (64, 47), (30, 42)]
SIZES_3D = [(5, 7, 9), (17, 13, 11), (30, 6, 57)]


def ramp(shape: tuple[int, ...], coeffs: tuple[float, ...], offset: float = 0.0) -> torch.Tensor:
    """x(p) = offset + Σ_k coeffs[k]·p_k, as (1, 1, *shape) float32."""
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    out = torch.full(shape, offset)
    for a, p in zip(coeffs, axes):
        out = out + a * p
    return out[None, None]


def shift_zero_fill(x: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """out[p] = x[p + k·e_dim] with zero outside (k > 0): torch.roll by −k, last k slices zeroed."""
    out = torch.roll(x, -k, dims=dim)
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(x.shape[dim] - k, None)
    out[tuple(idx)] = 0
    return out


# ----------------------------------------------------------------------------- zero field


@pytest.mark.parametrize("shape", SIZES_2D + SIZES_3D)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_zero_field_is_bit_exact_identity(shape, mode):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *shape) * 100.0
    flow = torch.zeros(2, len(shape), *shape)
    out = warp(x, flow, mode=mode)
    assert out.dtype == torch.float32
    assert torch.equal(out, x)


def test_zero_field_gradient_wrt_image_is_one():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 13, 17, requires_grad=True)
    warp(x, torch.zeros(1, 2, 13, 17)).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x.grad), atol=1e-4)


@pytest.mark.parametrize("still_patch", [0.0, 0.25])
def test_warp_gradients_are_grid_samples_own_and_still_voxels_exact(still_patch):
    """A field that is exactly zero on a patch (``still_patch`` 0.0) returns the input bit for bit
    there; with or without such a patch the values elsewhere and the gradients (image and field,
    still voxels included) are those of F.grid_sample called directly."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = torch.randn(1, 2, 9, 11)
    flow = torch.randn(1, 2, 9, 11) * 0.7
    flow[:, :, 3:5, 4:8] = still_patch
    xs, fs = x.clone().requires_grad_(), flow.clone().requires_grad_()
    out = warp(xs, fs)
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    xr, fr = x.clone().requires_grad_(), flow.clone().requires_grad_()
    scale = torch.tensor([2 / 10, 2 / 8])  # (x, y) order: 2 / (size - 1)
    ident = torch.stack(torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij"), -1).flip(-1)
    grid = (ident + fr.movedim(1, -1).flip(-1)) * scale - 1
    ref = F.grid_sample(xr, grid, align_corners=True)
    (ref * torch.arange(ref.numel()).view_as(ref)).sum().backward()
    if still_patch == 0.0:
        assert torch.equal(out[..., 3:5, 4:8].detach(), x[..., 3:5, 4:8])
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(xs.grad, xr.grad, atol=1e-4) and torch.allclose(fs.grad, fr.grad, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------- conventions, exact values


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 9)])
def test_constant_shift_on_ramp_and_axis_convention(shape):
    """x = a·p_k, shift t on channel c: out = a·(p_k + t) if c == k (interior), unchanged if c != k."""
    ndim = len(shape)
    t = 0.25
    for k in range(ndim):
        coeffs = tuple(1.5 if i == k else 0.0 for i in range(ndim))
        x = ramp(shape, coeffs)
        for c in range(ndim):
            flow = torch.zeros(1, ndim, *shape)
            flow[:, c] = t
            out = warp(x, flow)
            interior = [slice(None), slice(None)] + [slice(None)] * ndim
            interior[2 + c] = slice(0, shape[c] - 1)  # the last slice along c samples beyond the image
            expect = ramp(shape, coeffs, offset=1.5 * t) if c == k else x
            assert torch.allclose(out[tuple(interior)], expect[tuple(interior)], atol=1e-5), (k, c)
            last = [slice(None), slice(None)] + [slice(None)] * ndim
            last[2 + c] = slice(shape[c] - 1, None)
            # the last slice blends the last voxel (weight 0.75) with the zero padding (weight 0.25)
            assert torch.allclose(out[tuple(last)], 0.75 * x[tuple(last)], atol=1e-5), (k, c)


def test_hand_computed_2d_shift():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[None, None]
    flow = torch.zeros(1, 2, 2, 3)
    flow[:, 1] = 0.5  # half a voxel along W (dim 3)
    out = warp(x, flow)
    expect = torch.tensor([[1.5, 2.5, 1.5], [4.5, 5.5, 3.0]])
    assert torch.allclose(out[0, 0], expect, atol=1e-6)
    flow = torch.zeros(1, 2, 2, 3)
    flow[:, 0] = -1.0  # one voxel up along H (dim 2): out[i] = x[i - 1]
    out = warp(x, flow)
    expect = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    assert torch.allclose(out[0, 0], expect, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 9), (5, 7, 8)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_integer_translation_equals_roll_with_zero_fill(shape, mode):
    torch.manual_seed(1)
    ndim = len(shape)
    x = torch.randn(2, 2, *shape)
    for axis in range(ndim):
        flow = torch.zeros(2, ndim, *shape)
        flow[:, axis] = 1.0
        out = warp(x, flow, mode=mode)
        expect = shift_zero_fill(x, 2 + axis, 1)
        if mode == "nearest":
            assert torch.equal(out, expect)
        else:
            assert torch.allclose(out, expect, atol=1e-5)
    # all axes at once
    flow = torch.ones(2, ndim, *shape)
    expect = x
    for axis in range(ndim):
        expect = shift_zero_fill(expect, 2 + axis, 1)
    assert torch.allclose(warp(x, flow, mode=mode), expect, atol=1e-5)


def test_nearest_int64_labels_exact_gather():
    torch.manual_seed(2)
    shape = (11, 13, 7)
    labels = torch.randint(0, 5, (2, 1, *shape)) * 1000 + 7  # values 7, 1007, ..., 4007 (no zero)
    flow = torch.randn(2, 3, *shape) * 3.0
    out = warp(labels, flow, mode="nearest")
    assert out.dtype == torch.int64
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0}
    # independent nearest-neighbour gather
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"))[None].float()
    q = torch.round(grid + flow).long()
    size = torch.tensor(shape).view(1, 3, 1, 1, 1)
    inside = ((q >= 0) & (q < size)).all(1)
    qc = torch.minimum(q.clamp_min(0), size - 1)
    expect = torch.zeros_like(out)
    for n in range(2):
        g = labels[n, 0][qc[n, 0], qc[n, 1], qc[n, 2]]
        expect[n, 0] = torch.where(inside[n], g, torch.zeros_like(g))
    assert torch.equal(out, expect)
    assert (out == 0).any() and (out != 0).any()


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", [(9, 10), (6, 7, 8)])
def test_flow_gradient_at_zero_field_is_image_gradient(shape):
    """d Σ warp(x, φ) / dφ_i = ∂x/∂p_i = a_i for x = Σ a_i·p_i (interior voxels), non-zero at φ = 0."""
    ndim = len(shape)
    coeffs = (0.7, -1.3, 2.1)[:ndim]
    x = ramp(shape, coeffs, offset=3.0)
    flow = torch.zeros(1, ndim, *shape, requires_grad=True)
    warp(x, flow).sum().backward()
    interior = (slice(1, -1),) * ndim
    for i in range(ndim):
        g = flow.grad[0, i][interior]
        assert torch.allclose(g, torch.full_like(g, coeffs[i]), atol=1e-4), i


def test_flow_gradient_matches_finite_differences():
    """Away from integer positions bilinear sampling is linear in φ: central differences are exact."""
    torch.manual_seed(3)
    shape = (8, 9)
    x = torch.randn(1, 2, *shape)
    w = torch.randn(1, 2, *shape)
    base = torch.full((1, 2, *shape), 0.3)
    base[:, 1] = -0.4
    flow = base.clone().requires_grad_(True)
    (w * warp(x, flow)).sum().backward()
    h = 0.1
    for p in [(0, 3, 4), (1, 2, 7), (0, 6, 0), (1, 0, 2)]:
        plus, minus = base.clone(), base.clone()
        plus[(0, *p)] += h
        minus[(0, *p)] -= h
        fd = ((w * warp(x, plus)).sum() - (w * warp(x, minus)).sum()) / (2 * h)
        assert flow.grad[(0, *p)].item() == pytest.approx(fd.item(), abs=2e-3)
        assert abs(fd.item()) > 1e-3


# ----------------------------------------------------------------------------- legacy sampling


@pytest.mark.parametrize("shape", [(7, 10), (5, 6, 9)])
def test_legacy_sampling_is_published_grid_sample(shape):
    torch.manual_seed(4)
    ndim = len(shape)
    x = torch.randn(1, 2, *shape)
    flow = torch.zeros(1, ndim, *shape)
    out = warp(x, flow, sampling="legacy")
    lin = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")  # 2q/(s-1) − 1
    grid = torch.stack(lin[::-1], dim=-1)[None]  # (x, y[, z]) order
    expect = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(out, expect, atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-2)  # not the identity


def test_legacy_is_scaling_about_centre_hand_computed():
    s = 5
    x = ramp((s, 3), (1.0, 0.0))
    out = warp(x, torch.zeros(1, 2, s, 3), sampling="legacy")
    # along H: u = c + (q − c)·s/(s−1), c = 2: q=1 → 0.75, q=2 → 2, q=3 → 3.25; along W (3 voxels):
    # u = 1 + (q − 1)·3/2 → 1 at the centre column only, −0.5 and 2.5 at the edges (half zero padding)
    col = out[0, 0, :, 1]
    assert torch.allclose(col[1:4], torch.tensor([0.75, 2.0, 3.25]), atol=1e-5)
    assert torch.allclose(out[0, 0, 1:4, 0], 0.5 * torch.tensor([0.75, 2.0, 3.25]), atol=1e-5)
    assert torch.allclose(out[0, 0, 1:4, 2], 0.5 * torch.tensor([0.75, 2.0, 3.25]), atol=1e-5)


# ----------------------------------------------------------------------------- validity mask


@pytest.mark.parametrize("shape", [(13, 17), (7, 9, 11)])
@pytest.mark.parametrize("sampling", ["exact", "legacy"])
def test_validity_mask_equals_warped_ones_random_flows(shape, sampling):
    torch.manual_seed(5)
    ndim = len(shape)
    for _ in range(5):
        flow = torch.randn(2, ndim, *shape) * 4.0
        m = validity_mask(flow, sampling)
        ref = warp(torch.ones(2, 1, *shape), flow, mode="nearest", sampling=sampling)
        assert m.shape == (2, 1, *shape) and m.dtype == torch.float32
        assert torch.equal(m, ref)
        assert 0 < m.sum() < m.numel()


@pytest.mark.parametrize("sampling, shift", [("legacy", 0.0), ("exact", 0.5), ("exact", -0.5)])
def test_validity_mask_equals_warped_ones_at_ties(sampling, shift):
    bad = []
    for s in range(2, 70):
        flow = torch.zeros(1, 2, s, 5)
        flow[:, 0] = shift
        m = validity_mask(flow, sampling)
        ref = warp(torch.ones(1, 1, s, 5), flow, mode="nearest", sampling=sampling)
        if not torch.equal(m, ref):
            bad.append(s)
    assert bad == []


def test_validity_mask_constant_shift_hand_checked():
    flow = torch.zeros(1, 2, 8, 6)
    flow[:, 0] = 3.0
    m = validity_mask(flow)[0, 0]
    expect = torch.ones(8, 6)
    expect[-3:] = 0
    assert torch.equal(m, expect)
    flow = torch.zeros(1, 3, 4, 5, 6)
    flow[:, 2] = -2.0
    m = validity_mask(flow)[0, 0]
    expect = torch.ones(4, 5, 6)
    expect[..., :2] = 0
    assert torch.equal(m, expect)
    # a shift just under half a voxel still samples inside (nearest rounds back), just over does not
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 1] = 0.49
    assert validity_mask(flow).sum() == 16
    flow[:, 1] = 0.51
    assert torch.equal(validity_mask(flow)[0, 0, :, -1], torch.zeros(4))


def test_validity_mask_no_gradient():
    flow = (torch.randn(1, 2, 6, 7) * 3).requires_grad_(True)
    m = validity_mask(flow)
    assert not m.requires_grad


# ----------------------------------------------------------------------------- mixed precision, errors


@pytest.mark.parametrize("shape", [(9, 12), (5, 6, 7)])
def test_warp_under_bf16_autocast_is_float32(shape):
    torch.manual_seed(6)
    ndim = len(shape)
    x = torch.randn(1, 4, *shape)
    flow = torch.randn(1, ndim, *shape) * 2
    ref = warp(x, flow)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(x, flow)
        out_bf = warp(x.bfloat16(), flow.bfloat16())
        m = validity_mask(flow)
    assert out.dtype == torch.float32 and out_bf.dtype == torch.float32 and m.dtype == torch.float32
    assert torch.equal(out, ref)
    assert torch.equal(out_bf, warp(x.bfloat16().float(), flow.bfloat16().float()))


@pytest.mark.parametrize(
    "x_shape, flow_shape",
    [
        ((1, 1, 5, 6), (1, 3, 5, 6)),  # 3 channels for a 2D image
        ((1, 1, 5, 6), (1, 2, 5, 7)),  # spatial size differs
        ((1, 1, 5, 6, 7), (1, 2, 5, 6, 7)),  # 2D field for a 3D image
        ((1, 1, 5, 6), (1, 2, 5, 6, 1)),
    ],
)
def test_warp_shape_errors(x_shape, flow_shape):
    with pytest.raises(ValueError):
        warp(torch.zeros(x_shape), torch.zeros(flow_shape))


def test_warp_batch_mismatch_is_value_error():
    with pytest.raises(ValueError):
        warp(torch.zeros(2, 1, 5, 6), torch.zeros(3, 2, 5, 6))


def test_warp_bad_sampling_value_error():
    with pytest.raises(ValueError):
        warp(torch.zeros(1, 1, 5, 6), torch.zeros(1, 2, 5, 6), sampling="align")
    with pytest.raises(ValueError):
        validity_mask(torch.zeros(1, 2, 5, 6), sampling="align")


def test_batch_one_image_broadcasts_over_flows():
    torch.manual_seed(7)
    x = torch.randn(1, 1, 6, 7)
    flow = torch.randn(3, 2, 6, 7)
    out = warp(x, flow)
    assert out.shape == (3, 1, 6, 7)
    assert torch.equal(out[1:2], warp(x, flow[1:2]))
