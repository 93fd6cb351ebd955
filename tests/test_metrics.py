"""Metrics (METHOD §6): Jacobian determinant, folding %, SDlogJ, Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gemini_pl.metrics import dice_per_class, folding_percent, jacobian_determinant, mean_dice, one_hot_labels, sdlogj


def coords(shape):
    return torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))


def linear_field(A: np.ndarray, shape) -> torch.Tensor:
    """φ(p) = A·p, channel i = Σ_j A_ij p_j, shape (1, ndim, *shape)."""
    p = coords(shape)
    A_t = torch.tensor(A, dtype=torch.float32)
    return torch.einsum("ij,j...->i...", A_t, p)[None]


def smooth_field(n, ndim, shape, seed, amp):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, ndim, *shape, generator=g)
    pool = (F.avg_pool2d, F.avg_pool3d)[ndim - 2]
    for _ in range(2):
        f = pool(f, 3, stride=1, padding=1, count_include_pad=False)
    return amp * f / f.std()


def numpy_det(flow: np.ndarray) -> np.ndarray:
    """Independent det(I + ∇φ) with numpy.gradient and numpy.linalg.det; (N, ndim, *S) → (N, *S)."""
    flow = flow.astype(np.float64)
    n, ndim = flow.shape[:2]
    out = []
    for b in range(n):
        J = np.zeros(flow.shape[2:] + (ndim, ndim))
        for i in range(ndim):
            grads = np.gradient(flow[b, i], axis=tuple(range(ndim)))
            for j in range(ndim):
                J[..., i, j] = grads[j] + (1.0 if i == j else 0.0)
        out.append(np.linalg.det(J))
    return np.stack(out)


# ----------------------------------------------------------------------------- Jacobian determinant


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7)])
def test_jacobian_zero_field_is_one(shape):
    flow = torch.zeros(2, len(shape), *shape)
    det = jacobian_determinant(flow)
    assert det.shape == (2, *shape) and det.dtype == torch.float32
    assert torch.equal(det, torch.ones(2, *shape))


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7)])
def test_jacobian_linear_field_is_det_I_plus_A(shape):
    rng = np.random.default_rng(len(shape))
    ndim = len(shape)
    for _ in range(3):
        A = rng.uniform(-0.4, 0.4, size=(ndim, ndim))
        det = jacobian_determinant(linear_field(A, shape))
        expect = np.linalg.det(np.eye(ndim) + A)
        assert torch.allclose(det, torch.full_like(det, float(expect)), atol=1e-5)
    # channel i displaces along axis i: a field along the last axis only, varying along it
    A = np.zeros((ndim, ndim))
    A[-1, -1] = -0.5
    assert torch.allclose(jacobian_determinant(linear_field(A, shape)), torch.tensor(0.5), atol=1e-6)


def test_jacobian_channel_axis_convention_hand_computed():
    # φ_0 = 0.5·p_1 (shear) and φ_1 = 0.5·p_0: J = [[1, .5], [.5, 1]] → det 0.75
    p = coords((6, 6))
    flow = torch.stack([0.5 * p[1], 0.5 * p[0]])[None]
    assert torch.allclose(jacobian_determinant(flow), torch.tensor(0.75), atol=1e-6)
    # φ_0 = 0.5·p_1, φ_1 = 0.5·p_1: J = [[1, .5], [0, 1.5]] → 1.5; transposed reading would give
    # [[1, 0], [.5, 1.5]] → 1.5 too, so also check a case where channel order matters:
    # φ_0 = 0.5·p_0 → det 1.5, vs φ_1 = 0.5·p_0 (shear) → det 1
    flow = torch.stack([0.5 * p[0], torch.zeros(6, 6)])[None]
    assert torch.allclose(jacobian_determinant(flow), torch.tensor(1.5), atol=1e-6)
    flow = torch.stack([torch.zeros(6, 6), 0.5 * p[0]])[None]
    assert torch.allclose(jacobian_determinant(flow), torch.tensor(1.0), atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 15), (8, 9, 10)])
def test_jacobian_matches_numpy_gradient(shape):
    flow = smooth_field(2, len(shape), shape, seed=11, amp=1.5)
    det = jacobian_determinant(flow)
    expect = numpy_det(flow.numpy())
    np.testing.assert_allclose(det.numpy(), expect, atol=1e-5, rtol=1e-5)
    assert expect.std() > 0.05  # a field that genuinely varies


def test_jacobian_shape_errors():
    with pytest.raises(ValueError):
        jacobian_determinant(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError):
        jacobian_determinant(torch.zeros(1, 1, 5))


def test_jacobian_under_bf16_autocast_is_float32():
    flow = smooth_field(1, 3, (6, 7, 8), seed=3, amp=1.0)
    ref = jacobian_determinant(flow)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = jacobian_determinant(flow)
        out_bf = jacobian_determinant(flow.bfloat16())
        fold = folding_percent(flow)
    assert out.dtype == torch.float32 and out_bf.dtype == torch.float32 and fold.dtype == torch.float32
    assert torch.equal(out, ref)
    assert torch.equal(out_bf, jacobian_determinant(flow.bfloat16().float()))


# ----------------------------------------------------------------------------- folding, SDlogJ


def test_folding_percent_identity_and_whole_field():
    assert torch.equal(folding_percent(torch.zeros(2, 2, 6, 7)), torch.zeros(2))
    p = coords((6, 7))
    flow = torch.stack([-2.0 * p[0], torch.zeros(6, 7)])[None]  # det = −1 everywhere
    assert folding_percent(flow).tolist() == [100.0]
    flow = torch.stack([-1.0 * p[0], torch.zeros(6, 7)])[None]  # det = 0 exactly: counts (≤ 0)
    assert folding_percent(flow).tolist() == [100.0]
    flow = torch.stack([-0.9 * p[0], torch.zeros(6, 7)])[None]  # det = 0.1 > 0
    assert folding_percent(flow).tolist() == [0.0]


@pytest.mark.parametrize("shape", [(10, 12), (8, 9, 10)])
def test_folding_percent_folded_block(shape):
    ndim = len(shape)
    p = coords(shape)
    flow = torch.zeros(2, ndim, *shape)
    block = (slice(2, 6),) + (slice(3, 8),) * (ndim - 1)
    flow[(1, 0) + block] = -2.0 * p[(0,) + block]  # ∂φ_0/∂p_0 = −2 inside → det −1 there
    got = folding_percent(flow)
    det_np = numpy_det(flow.numpy())
    expect = 100.0 * (det_np <= 0).reshape(2, -1).mean(1)
    assert got[0].item() == 0.0
    assert got[1].item() == pytest.approx(expect[1], abs=1e-4)
    # at least the block interior (rows 3..4 along axis 0) folds
    interior = int(np.prod([2] + [5] * (ndim - 1)))
    assert expect[1] >= 100.0 * interior / np.prod(shape)


def test_sdlogj_zero_and_linear():
    assert torch.equal(sdlogj(torch.zeros(2, 2, 7, 8)), torch.zeros(2))
    A = np.array([[0.2, -0.1, 0.05], [0.1, -0.3, 0.0], [0.02, 0.1, 0.25]])
    assert sdlogj(linear_field(A, (5, 6, 7))).item() == pytest.approx(0.0, abs=1e-5)


def test_sdlogj_against_numpy_with_clipping():
    shape = (20, 21)
    flow = smooth_field(1, 2, shape, seed=5, amp=2.0)
    flow[0, 0, 5:9, 5:12] = -2.0 * coords(shape)[0, 5:9, 5:12]  # some folding: log of the clip
    det = numpy_det(flow.numpy())
    assert (det <= 0).any()
    logs = np.log(np.clip(det, 1e-9, 1e9)).ravel()
    got = sdlogj(flow).item()
    assert math.isfinite(got)
    # torch.std is the unbiased estimator; with 420 voxels ddof 0 and 1 differ by ~0.1 %
    assert got == pytest.approx(logs.std(ddof=1), rel=2e-3)
    assert got == pytest.approx(logs.std(ddof=0), rel=2e-3)


def test_sdlogj_two_level_hand_computed():
    """φ_0 = 0 and φ_1 = (e² − 1)·p_1: det = 1 + ∂φ_1/∂p_1 = e² (log 2); the row ∂φ_1/∂p_0 never enters
    det because J[0][1] = 0. Zeroing φ_1 on half the rows gives log det 0 there and 2 elsewhere."""
    n = 8
    p = coords((n, 4))
    flow = torch.zeros(1, 2, n, 4)
    flow[0, 1] = (math.e**2 - 1) * p[1]  # det = e² everywhere → log det = 2, std 0
    assert sdlogj(flow).item() == pytest.approx(0.0, abs=1e-5)
    flow[0, 1, : n // 2] = 0.0
    logs = np.array([0.0] * (n // 2 * 4) + [2.0] * (n // 2 * 4))
    assert sdlogj(flow).item() == pytest.approx(logs.std(ddof=1), rel=1e-5)


# ----------------------------------------------------------------------------- Dice


def test_one_hot_labels():
    lab = torch.tensor([[0, 2], [1, 2]]).view(1, 1, 2, 2)
    oh = one_hot_labels(lab, 3)
    assert oh.shape == (1, 3, 2, 2) and oh.dtype == torch.float32
    assert oh[0, 2].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    with pytest.raises(ValueError):
        one_hot_labels(torch.zeros(1, 2, 2, 2, dtype=torch.long), 3)


def test_dice_hand_made_masks():
    pred = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    # class 1: two 4×4 squares overlapping on a 4×2 strip: 2·8 / (16 + 16) = 0.5
    pred[0, 0, 0:4, 0:4] = 1
    target[0, 0, 0:4, 2:6] = 1
    # class 2: identical 2×3 blocks → 1
    pred[0, 0, 6:8, 0:3] = 2
    target[0, 0, 6:8, 0:3] = 2
    # class 3: predicted only (absent from the target) → NaN, excluded from the mean
    pred[0, 0, 5, 7] = 3
    # case 1: class 1 disjoint (0), class 2 one voxel of 2 predicted vs 3 target: 2·1/(1 + 3) = 0.5
    pred[1, 0, 0, 0] = 1
    target[1, 0, 7, 7] = 1
    pred[1, 0, 4, 4] = 2
    target[1, 0, 4, 4:7] = 2
    d = dice_per_class(pred, target, 4)
    assert d.shape == (2, 3)
    assert d[0, 0].item() == pytest.approx(0.5)
    assert d[0, 1].item() == pytest.approx(1.0)
    assert math.isnan(d[0, 2].item())
    assert d[1, 0].item() == pytest.approx(0.0)
    assert d[1, 1].item() == pytest.approx(0.5)
    assert math.isnan(d[1, 2].item())
    m = mean_dice(pred, target, 4)
    assert m.shape == (2,)
    assert m[0].item() == pytest.approx(0.75)
    assert m[1].item() == pytest.approx(0.25)


def test_dice_3d_and_background_excluded():
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[0, 0, :2] = 1  # 32 voxels
    pred = torch.zeros_like(target)
    pred[0, 0, :1] = 1  # 16 voxels, all inside → 2·16/(16 + 32) = 2/3
    assert dice_per_class(pred, target, 2)[0, 0].item() == pytest.approx(2 / 3)
    # perfect background but missing foreground: background is not counted
    assert dice_per_class(torch.zeros_like(target), target, 2)[0, 0].item() == pytest.approx(0.0)
    assert mean_dice(target, target, 2).item() == pytest.approx(1.0)


def test_dice_equals_monai_compute_dice_with_ignore_empty():
    """The project's one Dice (``dice_rows``) against MONAI's: equal, NaN where the target is empty."""
    from monai.metrics import compute_dice

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 1, 9, 8, 7), generator=g)
    target = torch.randint(0, 3, (3, 1, 9, 8, 7), generator=g)  # class 3 never in the target
    ours = dice_per_class(pred, target, 4)
    theirs = compute_dice(one_hot_labels(pred, 4), one_hot_labels(target, 4), include_background=False, ignore_empty=True)
    assert torch.isnan(ours[:, 2]).all() and torch.isnan(theirs[:, 2]).all()
    assert torch.allclose(ours[:, :2], theirs[:, :2], atol=1e-6)


def test_feature_similarity_hand_computed():
    from gemini_pl.metrics import feature_similarity

    same = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # (1, C=2, 2 voxels): both along channel 0
    ortho = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]])  # e0 and e1: pairs (1 + 0 + 0 + 1) / 4
    opposite = torch.tensor([[[1.0, -4.0], [0.0, 0.0]]])  # (1 - 1 - 1 + 1) / 4
    assert feature_similarity(same).item() == pytest.approx(1.0)
    assert feature_similarity(ortho).item() == pytest.approx(0.5)
    assert feature_similarity(opposite).item() == pytest.approx(0.0, abs=1e-7)
    # batch mean, 2D maps, and equal to the explicit mean over all ordered pairs
    f = torch.randn(3, 4, 5, 6)
    u = torch.nn.functional.normalize(f.flatten(2), dim=1)
    explicit = torch.einsum("ncp,ncq->npq", u, u).mean((1, 2)).mean()
    assert feature_similarity(f).item() == pytest.approx(explicit.item(), rel=1e-5)
