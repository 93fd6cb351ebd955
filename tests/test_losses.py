"""Losses (METHOD §3): masked LNCC, smoothness, masked cosine, GSS gradient routing, head losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gemini_pl.losses import (
    GeminiWeights,
    box_sum,
    gemini_loss,
    gss_terms,
    gvs_term,
    local_ncc_map,
    masked_cosine,
    masked_lncc,
    restoration_loss,
    sigmoid_seg_loss,
    smoothness,
    soft_dice_loss,
    softmax_seg_loss,
)
from gemini_pl.nets import GeminiNet
from gemini_pl.spatial import validity_mask, warp

SMALL = (8, 16, 32, 64, 128, 64, 32, 16, 8)
SMALL_DEF = (8, 16, 16, 16, 8)


def textured(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    # add smooth structure on top of the noise
    k = 3
    pool = (F.avg_pool2d, F.avg_pool3d)[len(shape) - 4]
    return x + 2.0 * pool(torch.randn(shape, generator=g), k, stride=1, padding=k // 2)


# ----------------------------------------------------------------------------- naive LNCC reference


def naive_ncc_map(i: np.ndarray, j: np.ndarray, window: int = 9) -> np.ndarray:
    """cc per voxel for 2D (C, H, W) arrays by explicit windows with zero padding (METHOD §3), float64."""
    c, h, w = i.shape
    r = window // 2
    n = float(window * window)
    ip = np.pad(i.astype(np.float64), ((0, 0), (r, r), (r, r)))
    jp = np.pad(j.astype(np.float64), ((0, 0), (r, r), (r, r)))
    cc = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            wi = ip[:, y : y + window, x : x + window].reshape(c, -1)
            wj = jp[:, y : y + window, x : x + window].reshape(c, -1)
            s_i, s_j = wi.sum(1).mean(), wj.sum(1).mean()
            s_ii, s_jj, s_ij = (wi * wi).sum(1).mean(), (wj * wj).sum(1).mean(), (wi * wj).sum(1).mean()
            u_i, u_j = s_i / n, s_j / n
            cross = s_ij - u_j * s_i - u_i * s_j + u_i * u_j * n
            var_i = s_ii - 2 * u_i * s_i + u_i * u_i * n
            var_j = s_jj - 2 * u_j * s_j + u_j * u_j * n
            cc[y, x] = cross * cross / (var_i * var_j + 1e-5)
    return cc


def naive_masked_lncc(i, j, m, eps=1e-6, eps_per_voxel=True):
    total, denom = 0.0, 0.0
    for b in range(i.shape[0]):
        cc = naive_ncc_map(i[b], j[b])
        total += (m[b, 0] * cc).sum()
        denom += (m[b, 0] + eps).sum() if eps_per_voxel else m[b, 0].sum()
    if not eps_per_voxel:
        denom += eps
    return 1.0 - total / denom


def naive_box_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the window^ndim box around every voxel of each (N, C) slice, zero outside (loops)."""
    r = window // 2
    out = np.zeros_like(x, dtype=np.float64)
    spatial = x.shape[2:]
    for idx in np.ndindex(*spatial):
        box = tuple(slice(max(0, p - r), min(s, p + r + 1)) for p, s in zip(idx, spatial))
        out[(slice(None), slice(None)) + idx] = x[(slice(None), slice(None)) + box].sum(axis=tuple(range(2, x.ndim)))
    return out


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 5, 6, 7, 8), (2, 2, 9, 5, 6)])
def test_box_sum_values_and_gradient_match_loops(shape):
    """Values and gradient (which the module computes as the box sum of the incoming gradient,
    the operator being self-adjoint) against loops in float64; 3D sums its first axis through a
    transposed view, so every axis of an anisotropic volume is checked."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(*shape, generator=g, dtype=torch.float64)
    y = box_sum(x, 5)
    np.testing.assert_allclose(y.detach().numpy(), naive_box_sum(x.detach().numpy(), 5), rtol=1e-12)
    (y * weights).sum().backward()
    # d/dx_q Σ_p w_p Σ_{|k|≤r} x_{p+k} = Σ_{p: |q−p|≤r} w_p: the box sum of the weights
    np.testing.assert_allclose(x.grad.numpy(), naive_box_sum(weights.numpy(), 5), rtol=1e-12)
    small = x.detach()[(slice(0, 1), slice(0, 1)) + (slice(0, 2),) * (x.dim() - 2)].clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: box_sum(t, 3) ** 2, (small,))


def test_box_sum_backward_inside_autocast_stays_in_float32():
    """Lightning's manual_backward under 16-mixed runs the backward inside the autocast region; a
    gradient above float16's range (65504, as a GradScaler's scaled one) must come back finite."""
    x = torch.rand(1, 2, 6, 7, requires_grad=True)
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        y = box_sum(x, 3)
        assert y.dtype == torch.float32
        (y * 1e5).sum().backward()
    expected = naive_box_sum(np.full(x.shape, 1e5), 3)  # up to 9e5 per voxel
    assert expected.max() > 65504
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("window", [0, 4, 2.5])
def test_box_sum_needs_an_odd_window(window):
    with pytest.raises(ValueError, match="odd integer"):
        box_sum(torch.zeros(1, 1, 8, 8), window)


@pytest.mark.parametrize("channels", [1, 2])
def test_masked_lncc_matches_naive_reference(channels):
    g = torch.Generator().manual_seed(1)
    i = torch.randn(2, channels, 12, 13, generator=g)
    j = 0.6 * i + 0.8 * torch.randn(2, channels, 12, 13, generator=g)  # correlated but not identical
    m = (torch.rand(2, 1, 12, 13, generator=g) > 0.4).float()
    ref = naive_masked_lncc(i.numpy(), j.numpy(), m.numpy())
    got = masked_lncc(i, j, m)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    cc_ref = np.stack([naive_ncc_map(i[b].numpy(), j[b].numpy()) for b in range(2)])
    cc = local_ncc_map(i, j)
    assert cc.shape == (2, 1, 12, 13)
    np.testing.assert_allclose(cc[:, 0].numpy(), cc_ref, rtol=1e-4, atol=1e-6)
    # the reference is far from trivial values
    assert 0.2 < ref < 0.9


def test_local_ncc_low_contrast_sees_the_1e5_guard():
    """At low contrast var_I·var_J is comparable to the 1e-5 guard: the reference must still match."""
    g = torch.Generator().manual_seed(4)
    i = 0.01 * torch.randn(1, 1, 12, 13, generator=g)
    j = 0.01 * torch.randn(1, 1, 12, 13, generator=g) + i
    m = torch.ones(1, 1, 12, 13)
    cc_ref = naive_ncc_map(i[0].numpy(), j[0].numpy())
    np.testing.assert_allclose(local_ncc_map(i, j)[0, 0].numpy(), cc_ref, rtol=1e-4, atol=1e-7)
    ref = naive_masked_lncc(i.numpy(), j.numpy(), m.numpy())
    assert masked_lncc(i, j, m).item() == pytest.approx(ref, rel=1e-5)
    # the guard matters here: without it the loss would be clearly lower
    i64, j64 = i[0].double().numpy(), j[0].double().numpy()
    assert ref - (1 - naive_ncc_map(i64 * 100, j64 * 100).mean()) > 0.05


def test_masked_lncc_eps_variants():
    g = torch.Generator().manual_seed(2)
    i = torch.randn(1, 1, 12, 13, generator=g)
    j = torch.randn(1, 1, 12, 13, generator=g) + i
    m = (torch.rand(1, 1, 12, 13, generator=g) > 0.5).float()
    # a large eps separates Σ(M + eps) from ΣM + eps
    for eps in (1e-6, 0.5):
        per_voxel = masked_lncc(i, j, m, eps=eps, eps_per_voxel=True)
        once = masked_lncc(i, j, m, eps=eps, eps_per_voxel=False)
        assert per_voxel.item() == pytest.approx(naive_masked_lncc(i.numpy(), j.numpy(), m.numpy(), eps, True), rel=1e-5)
        assert once.item() == pytest.approx(naive_masked_lncc(i.numpy(), j.numpy(), m.numpy(), eps, False), rel=1e-5)
    # hand-computed denominator relation: 1 − L = Σ(M·cc) / denom
    cc_sum = (m * local_ncc_map(i, j)).sum()
    assert 1 - masked_lncc(i, j, m, eps=0.5, eps_per_voxel=True).item() == pytest.approx(
        (cc_sum / (m.sum() + 0.5 * m.numel())).item(), rel=1e-6
    )
    assert 1 - masked_lncc(i, j, m, eps=0.5, eps_per_voxel=False).item() == pytest.approx(
        (cc_sum / (m.sum() + 0.5)).item(), rel=1e-6
    )


@pytest.mark.parametrize("shape", [(2, 1, 20, 23), (1, 1, 12, 13, 14)])
def test_masked_lncc_identical_is_zero(shape):
    i = textured(shape)
    assert masked_lncc(i, i, torch.ones(shape[0], 1, *shape[2:])).item() == pytest.approx(0.0, abs=1e-4)
    assert masked_lncc(i, i).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("shape", [(2, 1, 20, 23), (1, 1, 12, 13, 14)])
def test_masked_lncc_affine_invariance_and_noise(shape):
    i = textured(shape, seed=3)
    ones = torch.ones(shape[0], 1, *shape[2:])
    # pure scaling keeps the zero padding consistent: exact invariance everywhere
    assert masked_lncc(i, 2.5 * i, ones).item() == pytest.approx(0.0, abs=1e-4)
    assert masked_lncc(i, 0.3 * i, ones).item() == pytest.approx(0.0, abs=1e-4)
    # an offset breaks it where windows touch the padding: mask out a border of window // 2
    interior = torch.zeros_like(ones)
    interior[(slice(None), slice(None)) + (slice(4, -4),) * (len(shape) - 2)] = 1
    assert masked_lncc(i, 1.7 * i + 5.0, interior).item() == pytest.approx(0.0, abs=1e-4)
    assert masked_lncc(i, 1.7 * i + 5.0, ones).item() > 1e-3  # the border does see the padding
    # unrelated noise: squared local correlation of independent windows is ~1/n
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(99))
    assert masked_lncc(i, noise, ones).item() > 0.9


def test_masked_lncc_bf16_inputs_float32():
    i = textured((1, 1, 16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_lncc(i, i)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- smoothness


def test_smoothness_linear_flow_2d():
    alpha, beta = 0.3, -0.7
    h, w = 6, 5
    p0, p1 = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    flow = torch.stack([alpha * p0, beta * p1])[None]
    # axis 0: channel 0 diff α, channel 1 diff 0 → mean α²/2; axis 1 likewise β²/2; S = (α²/2 + β²/2)/2
    assert smoothness(flow).item() == pytest.approx((alpha**2 + beta**2) / 4, rel=1e-6)


def test_smoothness_step_depends_on_shortened_axis():
    """A unit step in channel 0 between rows 2 and 3 of a 6×5 field: one row of differences.

    axis 0: N·C·(H−1)·W = 1·2·5·5 = 50 differences, 5 of them equal to 1 → mean 0.1; axis 1: 0.
    S = 0.1 / 2 = 0.05 (a mean over the unshortened axis would give 5/60/2).
    """
    flow = torch.zeros(1, 2, 6, 5)
    flow[:, 0, 3:] = 1.0
    assert smoothness(flow).item() == pytest.approx(0.05, rel=1e-7)


def test_smoothness_linear_flow_3d():
    a = (0.2, -0.5, 1.1)
    shape = (4, 5, 6)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    flow = torch.stack([a[i] * grids[i] for i in range(3)])[None]
    assert smoothness(flow).item() == pytest.approx(sum(v * v for v in a) / 9, rel=1e-6)
    # mixed derivative: φ_0 = γ·p_2 gives diff γ along axis 2 in channel 0 only: (γ²/3)/3
    flow = torch.zeros(2, 3, *shape)
    flow[:, 0] = 0.9 * grids[2]
    assert smoothness(flow).item() == pytest.approx(0.81 / 9, rel=1e-6)


def test_smoothness_random_numpy():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 5, 6, 7)).astype(np.float32)
    expect = np.mean([np.mean(np.diff(f.astype(np.float64), axis=ax) ** 2) for ax in (2, 3, 4)])
    assert smoothness(torch.from_numpy(f)).item() == pytest.approx(expect, rel=1e-5)


# ----------------------------------------------------------------------------- masked cosine


def test_masked_cosine_values():
    torch.manual_seed(0)
    u = torch.randn(2, 5, 4, 4)
    assert masked_cosine(u, u).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_cosine(u, -u).item() == pytest.approx(2.0, abs=1e-6)
    # scale invariance (positive factors, per voxel even)
    s = torch.rand(2, 1, 4, 4) + 0.1
    assert masked_cosine(3.0 * u, s * u).item() == pytest.approx(0.0, abs=1e-6)
    v = torch.randn(2, 5, 4, 4)
    assert masked_cosine(7.0 * u, 0.01 * v).item() == pytest.approx(masked_cosine(u, v).item(), abs=1e-6)
    # orthogonal
    a = torch.zeros(1, 3, 2, 3)
    b = torch.zeros(1, 3, 2, 3)
    a[:, 0] = 2.0
    b[:, 1] = -5.0
    assert masked_cosine(a, b).item() == pytest.approx(1.0, abs=1e-7)


def test_masked_cosine_mask_mixture_hand_computed():
    torch.manual_seed(1)
    v = torch.randn(1, 3, 4, 4)
    u = v.clone()
    u[..., 2:] = -v[..., 2:]  # left half aligned (dot 1), right half opposite (dot −1)
    assert masked_cosine(u, v, torch.ones(1, 1, 4, 4)).item() == pytest.approx(1.0, abs=1e-6)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2] = 1
    m[..., 2] = 1  # 8 aligned + 4 opposite: 1 − (8 − 4)/12
    assert masked_cosine(u, v, m).item() == pytest.approx(1 - 4 / 12, abs=1e-6)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2] = 1
    assert masked_cosine(u, v, m).item() == pytest.approx(0.0, abs=1e-6)
    # fractional weights: 0.5 on all 8 aligned and 1 on 2 opposite → 1 − (4 − 2)/6
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2] = 0.5
    m[0, 0, 0, 2:] = 1
    assert masked_cosine(u, v, m).item() == pytest.approx(1 - 2 / 6, abs=1e-6)
    # no evidence at all
    assert masked_cosine(u, v, torch.zeros(1, 1, 4, 4)).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- GSS gradient routing


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = GeminiNet(2, 1, 1, widths=SMALL, deformer_widths=SMALL_DEF)
    with torch.no_grad():  # a field clearly away from zero, so that every path carries gradient
        net.deformer.flow.weight.normal_(0, 0.05)
        net.deformer.flow.bias.fill_(0.3)
    return net


def _pair(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_a = textured((1, 1, 16, 20), seed=seed)
    x_b = torch.roll(x_a, 2, dims=2) + 0.1 * torch.randn(1, 1, 16, 20, generator=g)
    f_a, f_b = net.features(x_a), net.features(x_b)
    flow_ab, flow_ba = net.flows_both_ways(f_a, f_b)
    return x_a, x_b, f_a, f_b, flow_ab, flow_ba


def _grads(params):
    return [None if p.grad is None else p.grad.abs().sum().item() for p in params]


def test_gss_positive_term_trains_backbone_only(tiny_net):
    net = tiny_net
    net.zero_grad(set_to_none=True)
    _, _, f_a, f_b, flow_ab, flow_ba = _pair(net)
    m_ab, m_ba = validity_mask(flow_ab), validity_mask(flow_ba)
    assert 0 < m_ab.sum() < m_ab.numel()  # the field pushes some samples out
    pos, align = gss_terms(f_a, f_b, flow_ab, flow_ba, m_ab, m_ba)
    assert torch.autograd.grad(pos, [flow_ab, flow_ba], retain_graph=True, allow_unused=True) == (None, None)
    pos.backward()
    bb = _grads(net.backbone.parameters())
    df = _grads(net.deformer.parameters())
    assert all(g is not None for g in bb) and sum(bb) > 0
    assert all(g is None or g == 0 for g in df)
    assert net.backbone.inc.double_conv[0].weight.grad.abs().sum() > 0


def test_gss_alignment_term_trains_deformer_and_backbone_through_it(tiny_net):
    net = tiny_net
    net.zero_grad(set_to_none=True)
    _, _, f_a, f_b, flow_ab, flow_ba = _pair(net)
    m_ab, m_ba = validity_mask(flow_ab), validity_mask(flow_ba)
    _, align = gss_terms(f_a, f_b, flow_ab, flow_ba, m_ab, m_ba)
    align.backward()
    df = _grads(net.deformer.parameters())
    bb = _grads(net.backbone.parameters())
    assert all(g is not None and g > 0 for g in df)
    assert net.deformer.flow.weight.grad.abs().sum() > 0
    assert sum(g or 0 for g in bb) > 0
    assert net.backbone.inc.double_conv[0].weight.grad.abs().sum() > 0


def test_gss_alignment_gradient_reaches_features_only_through_flow(tiny_net):
    net = tiny_net
    _, _, f_a, f_b, flow_ab, flow_ba = _pair(net, seed=1)
    m_ab, m_ba = validity_mask(flow_ab), validity_mask(flow_ba)
    _, align = gss_terms(f_a, f_b, flow_ab, flow_ba, m_ab, m_ba)
    (g_a,) = torch.autograd.grad(align, f_a)
    assert g_a.abs().sum() > 0
    # same computation, the deformer fed detached features: the alignment term must not reach f_a
    flow_ab2, flow_ba2 = net.flows_both_ways(f_a.detach(), f_b.detach())
    _, align2 = gss_terms(f_a, f_b, flow_ab2, flow_ba2, m_ab, m_ba)
    assert torch.equal(align2.detach(), align.detach())
    assert torch.autograd.grad(align2, [f_a, f_b], allow_unused=True) == (None, None)
    assert torch.autograd.grad(align2, flow_ab2)[0].abs().sum() > 0


def test_gss_terms_values_at_zero_flow():
    torch.manual_seed(2)
    f_a, f_b = torch.randn(1, 4, 6, 7), torch.randn(1, 4, 6, 7)
    z = torch.zeros(1, 2, 6, 7)
    ones = torch.ones(1, 1, 6, 7)
    pos, align = gss_terms(f_a, f_b, z, z, ones, ones)
    expect = 2 * masked_cosine(f_a, f_b).item()
    assert pos.item() == pytest.approx(expect, rel=1e-6)
    assert align.item() == pytest.approx(expect, rel=1e-6)


# ----------------------------------------------------------------------------- total objective


def test_gemini_loss_keys_and_weights(tiny_net):
    net = tiny_net
    with torch.no_grad():
        x_a, x_b, f_a, f_b, flow_ab, flow_ba = _pair(net, seed=2)
        out = gemini_loss(x_a, x_b, f_a, f_b, flow_ab, flow_ba)
        assert set(out) == {"smooth", "gvs", "gss_pos", "gss_align", "gss", "total"}
        expect_total = 0.4 * out["smooth"] + 0.8 * (0.1 * out["gss_pos"] + out["gss_align"]) + 1.0 * out["gvs"]
        assert out["total"].item() == pytest.approx(expect_total.item(), rel=1e-6)
        assert out["gss"].item() == pytest.approx((0.1 * out["gss_pos"] + out["gss_align"]).item(), rel=1e-6)
        # wiring: each term is what its own function gives with the validity masks
        m_ab, m_ba = validity_mask(flow_ab), validity_mask(flow_ba)
        assert out["smooth"].item() == pytest.approx((smoothness(flow_ab) + smoothness(flow_ba)).item(), rel=1e-6)
        assert out["smooth"].item() > 0
        gvs = masked_lncc(warp(x_a, flow_ab), x_b, m_ab) + masked_lncc(warp(x_b, flow_ba), x_a, m_ba)
        assert out["gvs"].item() == pytest.approx(gvs.item(), rel=1e-5)
        assert out["gvs"].item() == pytest.approx(gvs_term(x_a, x_b, flow_ab, flow_ba, m_ab, m_ba).item(), rel=1e-6)
        w = GeminiWeights(smooth=2.0, gss=3.0, gvs=0.5, pos=0.7)
        out2 = gemini_loss(x_a, x_b, f_a, f_b, flow_ab, flow_ba, weights=w)
        expect2 = 2.0 * out2["smooth"] + 3.0 * (0.7 * out2["gss_pos"] + out2["gss_align"]) + 0.5 * out2["gvs"]
        assert out2["total"].item() == pytest.approx(expect2.item(), rel=1e-6)
        assert out2["gvs"].item() == pytest.approx(out["gvs"].item(), rel=1e-6)


def test_gemini_loss_zero_for_identical_pair():
    x = textured((1, 1, 16, 18), seed=5)
    f = textured((1, 8, 16, 18), seed=6)
    z = torch.zeros(1, 2, 16, 18)
    out = gemini_loss(x, x, f, f, z, z)
    for k in ("smooth", "gvs", "gss_pos", "gss_align", "total"):
        assert out[k].item() == pytest.approx(0.0, abs=2e-4), k


def test_gvs_term_eps_published_2d_variant():
    x_a, x_b = textured((1, 1, 12, 13), seed=7), textured((1, 1, 12, 13), seed=8)
    z = torch.zeros(1, 2, 12, 13)
    m = torch.zeros(1, 1, 12, 13)
    m[..., 2:9, 3:7] = 1
    got = gvs_term(x_a, x_b, z, z, m, m, eps_per_voxel=False)
    expect = naive_masked_lncc(x_a.numpy(), x_b.numpy(), m.numpy(), 1e-5, False) + naive_masked_lncc(
        x_b.numpy(), x_a.numpy(), m.numpy(), 1e-5, False
    )
    assert got.item() == pytest.approx(expect, rel=1e-5)


# ----------------------------------------------------------------------------- head losses


def test_softmax_seg_loss_hand_computed():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = math.log(3.0)  # p = [[0.75, 0.5], [0.25, 0.5]]
    y = torch.zeros(1, 2, 1, 2)
    y[0, 0, 0, 0] = 1
    y[0, 1, 0, 1] = 1
    ce = -(math.log(0.75 + 1e-6) + math.log(0.5 + 1e-6)) / 4
    dice0 = (2 * 0.75 + 1) / (1 + (0.75**2 + 0.5**2) + 1)
    dice1 = (2 * 0.5 + 1) / (1 + (0.25**2 + 0.5**2) + 1)
    expect = 100 * (ce + 1 - (dice0 + dice1) / 2)
    assert softmax_seg_loss(logits, y).item() == pytest.approx(expect, rel=1e-5)
    assert softmax_seg_loss(logits, y, weight=1.0).item() == pytest.approx(expect / 100, rel=1e-5)


def test_softmax_seg_loss_perfect_prediction():
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (2, 6, 5, 4))
    y = F.one_hot(labels, 3).movedim(-1, 1).float()
    logits = 30.0 * (2 * y - 1)
    assert abs(softmax_seg_loss(logits, y).item()) < 1e-3
    assert abs(soft_dice_loss(torch.softmax(logits, 1), y).item()) < 1e-6

def test_softmax_seg_loss_confident_wrong_hits_the_log_guard():
    """p ≈ 0 on the true class: CE = −log(1e-6)/K; Dice_c = 1/(N + 1) for K = 2 (N voxels)."""
    labels = torch.tensor([[0, 1, 1], [0, 0, 1]]).view(1, 2, 3)
    y = F.one_hot(labels, 2).movedim(-1, 1).float()
    logits = 60.0 * (1 - 2 * y)
    n = 6
    expect = 100 * (-math.log(1e-6) / 2 + 1 - 1 / (n + 1))
    assert softmax_seg_loss(logits, y).item() == pytest.approx(expect, rel=1e-5)


def test_sigmoid_seg_loss_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]).view(1, 2, 1, 2)
    # p = [[0.5, 0.75], [0.25, 0.5]]
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    bce = -(
        math.log(0.5 + 1e-6) + math.log(1 - 0.75 + 1e-6) + math.log(0.25 + 1e-6) + math.log(0.5 + 1e-6)
    ) / 4
    dice0 = (2 * 0.5 + 1) / (1 + (0.25 + 0.5625) + 1)
    dice1 = (2 * 0.75 + 1) / (2 + (0.0625 + 0.25) + 1)
    expect = 100 * (bce + 1 - (dice0 + dice1) / 2)
    assert sigmoid_seg_loss(logits, y).item() == pytest.approx(expect, rel=1e-5)
    # confidently wrong on every element: BCE = −log(1e-6); per channel Σyp ≈ 0, Σy² + Σp² = 2 → Dice 1/3
    wrong = 60.0 * (1 - 2 * y)
    expect = 100 * (-math.log(1e-6) + 1 - 1 / 3)
    assert sigmoid_seg_loss(wrong, y).item() == pytest.approx(expect, rel=1e-5)


def test_restoration_loss_hand_computed():
    restored = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    target = torch.tensor([0.0, 2.0, 5.0, 4.0]).view(1, 1, 2, 2)
    assert restoration_loss(restored, target).item() == pytest.approx(100 * (1 + 0 + 4 + 0) / 4)
    assert restoration_loss(restored.bfloat16(), target).dtype == torch.float32


@pytest.mark.parametrize("loss", ["lncc", "cosine"])
def test_batch_one_mask_is_broadcast_or_refused(loss):
    torch.manual_seed(8)
    x = torch.randn(2, 3, 12, 13)
    m1 = torch.ones(1, 1, 12, 13)
    fn = masked_lncc if loss == "lncc" else masked_cosine
    try:
        got = fn(x, x, m1)
    except ValueError:
        return
    assert got.item() == pytest.approx(fn(x, x, m1.expand(2, 1, 12, 13)).item(), abs=1e-5)


def test_masked_cosine_matches_normalised_features_and_zero_vectors_have_zero_gradient():
    import torch.nn.functional as F

    torch.manual_seed(2)
    u = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    v = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    m = (torch.rand(2, 1, 5, 7) > 0.3).double()
    ref = 1 - (m * (F.normalize(u, dim=1) * F.normalize(v, dim=1)).sum(1, keepdim=True)).sum() / m.sum()
    assert masked_cosine(u, v, m).item() == pytest.approx(ref.item(), abs=1e-6)
    # zero feature vectors (warp padding): finite gradients, the same as through F.normalize, and
    # none at all where the mask is 0 (where the padding is)
    v = torch.randn(1, 4, 3, 3)
    m = torch.ones(1, 1, 3, 3)
    m[..., 0, :] = 0.0
    grads = []
    for cos in (masked_cosine, lambda a, b, w: 1 - (w * (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1, keepdim=True)).sum() / w.sum()):
        for mask in (None, m):
            u = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(3))
            u[..., 0, :] = 0.0
            u.requires_grad_(True)
            (cos(u, v, mask) if mask is not None else cos(u, v, torch.ones(1, 1, 3, 3))).backward()
            assert torch.isfinite(u.grad).all()
            grads.append(u.grad)
    assert torch.allclose(grads[0], grads[2], rtol=1e-5) and torch.allclose(grads[1], grads[3], rtol=1e-5)
    assert torch.equal(grads[1][..., 0, :], torch.zeros(1, 4, 3))
