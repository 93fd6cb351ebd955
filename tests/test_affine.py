import math

import pytest
import torch

from gemini_pl.spatial.affine import (affine_theta, apply_affine, random_affine,
                                      sample_affine_params)


def _identity(nd, b=1):
    return torch.eye(nd, nd + 1).expand(b, -1, -1).clone()


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (2, 1, 5, 6, 7)])
def test_identity_is_exact(shape):
    x = torch.rand(shape)
    nd = len(shape) - 2
    y = apply_affine(x, _identity(nd))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - x).abs().max() <= 1e-6
    lab = torch.randint(0, 5, shape)
    assert torch.equal(apply_affine(lab, _identity(nd), mode="nearest"), lab)


def test_rotation_90_matches_rot90_counterclockwise():
    # asymmetric pattern: every pixel distinct
    x = torch.arange(36.0).view(1, 1, 6, 6) ** 1.5
    th = affine_theta(torch.tensor([[math.pi / 2]]), torch.ones(1, 2))
    y = apply_affine(x, th)
    # documented direction: out[i, j] = x[j, W-1-i] == torch.rot90(k=1, dims=(-2, -1))
    assert torch.allclose(y, torch.rot90(x, 1, (-2, -1)), atol=1e-4)
    assert not torch.allclose(y, torch.rot90(x, -1, (-2, -1)), atol=1e-4)
    # by hand for one pixel: out[0, 0] = x[0, 5]
    assert y[0, 0, 0, 0].item() == pytest.approx(x[0, 0, 0, 5].item(), abs=1e-4)
    th_neg = affine_theta(torch.tensor([[-math.pi / 2]]), torch.ones(1, 2))
    assert torch.allclose(apply_affine(x, th_neg), torch.rot90(x, -1, (-2, -1)), atol=1e-4)


def test_rotation_3d_about_z_rotates_each_slice():
    x = torch.rand(1, 2, 4, 5, 5)
    th = affine_theta(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.ones(1, 3))
    assert torch.allclose(apply_affine(x, th), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_scale_of_linear_ramp():
    # ramp along x (last axis): value = column index, W = 9, so x_norm = j / 4 - 1
    x = torch.arange(9.0).expand(1, 1, 5, 9).clone()
    th = affine_theta(torch.zeros(1, 1), torch.tensor([[2.0, 1.0]]))
    y = apply_affine(x, th)
    # output column j samples input column 4 * (2 * (j / 4 - 1) + 1) = 2j - 4
    for j, v in [(2, 0.0), (3, 2.0), (4, 4.0), (5, 6.0), (6, 8.0)]:
        assert torch.allclose(y[0, 0, :, j], torch.full((5,), v), atol=1e-5), j
    assert torch.all(y[0, 0, :, 0] == 0) and torch.all(y[0, 0, :, 8] == 0)  # outside: zeros
    # zoom in by 0.5: column j samples 4 * (0.5 * (j / 4 - 1) + 1) = j / 2 + 2 (bilinear)
    y = apply_affine(x, affine_theta(torch.zeros(1, 1), torch.tensor([[0.5, 1.0]])))
    for j, v in [(1, 2.5), (3, 3.5), (4, 4.0), (7, 5.5)]:
        assert torch.allclose(y[0, 0, :, j], torch.full((5,), v), atol=1e-5), j


def test_nearest_on_labels_keeps_values_and_dtype():
    g = torch.Generator().manual_seed(0)
    lab = torch.tensor([0, 3, 7, 12])[torch.randint(0, 4, (2, 1, 12, 14, 10), generator=g)]
    th = random_affine(1, 3, rotation=math.pi / 4, generator=g)
    y = apply_affine(lab, th, mode="nearest")
    assert y.dtype == lab.dtype and y.shape == lab.shape
    assert set(y.unique().tolist()) <= set(lab.unique().tolist())
    assert not torch.equal(y, lab)
    mask = lab > 5
    ym = apply_affine(mask, th, mode="nearest")
    assert ym.dtype == torch.bool
    with pytest.raises(ValueError):
        apply_affine(lab, th)  # integer input needs nearest


def test_params_lie_in_ranges_and_match_theta():
    g = torch.Generator().manual_seed(1)
    r = math.pi / 9
    for nd in (2, 3):
        angles, scales = sample_affine_params(500, nd, r, (0.75, 1.25), True, generator=g)
        assert angles.shape == (500, 1 if nd == 2 else 3) and scales.shape == (500, nd)
        assert angles.abs().max() <= r and angles.min() < -0.8 * r and angles.max() > 0.8 * r
        assert scales.min() >= 0.75 and scales.max() <= 1.25
        assert (scales[:, 0] != scales[:, 1]).all()
        _, s1 = sample_affine_params(50, nd, r, (0.9, 1.1), False, generator=g)
        assert torch.equal(s1, s1[:, :1].expand_as(s1))
    # random_affine uses exactly those params
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    th = random_affine(4, 3, generator=g1)
    a, s = sample_affine_params(4, 3, generator=g2, dtype=torch.float64)
    assert th.shape == (4, 3, 4) and th.dtype == torch.float32
    assert torch.allclose(th, affine_theta(a, s).float())
    m = th[:, :, :3].double()
    # m = R diag(s): columns have norm s, det = prod(s), no translation
    assert torch.allclose(m.norm(dim=1), s, atol=1e-6)
    assert torch.allclose(torch.linalg.det(m), s.prod(1), atol=1e-6)
    assert torch.all(th[:, :, 3] == 0)


def test_random_affine_determinism_and_device():
    a = random_affine(1, 2, generator=torch.Generator().manual_seed(3))
    b = random_affine(1, 2, generator=torch.Generator().manual_seed(3))
    c = random_affine(1, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 2, 3)
    d = random_affine(2, 3, device="cpu", dtype=torch.float64)
    assert d.dtype == torch.float64 and d.device.type == "cpu"


def test_spatial_shape_makes_rotation_rigid_in_voxels():
    shape = (6, 10, 20)
    g = torch.Generator().manual_seed(2)
    a, s = sample_affine_params(3, 3, generator=g, dtype=torch.float64)
    th = affine_theta(a, torch.ones_like(s), spatial_shape=shape)
    half = torch.tensor([(n - 1) / 2 for n in reversed(shape)], dtype=torch.float64)
    m_vox = half[:, None] * th[:, :, :3] / half[None, :]
    eye = torch.eye(3, dtype=torch.float64).expand(3, -1, -1)
    assert torch.allclose(m_vox @ m_vox.transpose(1, 2), eye, atol=1e-10)


def test_broadcast_batch_dtype_and_autocast():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g)
    th = random_affine(1, 2, generator=g)
    y = apply_affine(x, th)
    y_each = torch.cat([apply_affine(x[i:i + 1], th) for i in range(3)])
    assert torch.allclose(y, y_each)
    th3 = random_affine(3, 2, generator=g)
    y3 = apply_affine(x, th3)
    assert torch.allclose(y3[1:2], apply_affine(x[1:2], th3[1:2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = apply_affine(x, th)
    assert ya.dtype == torch.float32 and torch.equal(ya, y)
    yh = apply_affine(x.half(), th)
    assert yh.dtype == torch.float16
    assert torch.allclose(yh.float(), y, atol=2e-3)
    x0 = x.clone()
    apply_affine(x, th)
    assert torch.equal(x, x0)
    with pytest.raises(ValueError):
        apply_affine(x, torch.zeros(1, 3, 4))
    with pytest.raises(ValueError):
        apply_affine(x, torch.zeros(2, 2, 3))


# ------------------------------------------------------------------ rigid on any grid
def test_rigid_theta_hand_computed_on_a_non_square_grid():
    """90° on H=5, W=9 (x along W): D = diag(4, 2) in (x, y); theta = D⁻¹ R D = [[0, -1/2], [2, 0]]."""
    from gemini_pl.spatial.affine import affine_theta

    angles = torch.tensor([[math.pi / 2]], dtype=torch.float64)
    theta = affine_theta(angles, torch.ones(1, 2, dtype=torch.float64), spatial_shape=(5, 9))
    assert torch.allclose(theta[0, :, :2], torch.tensor([[0.0, -0.5], [2.0, 0.0]], dtype=torch.float64), atol=1e-12)
    # with spacing (tensor order: H 2 mm, W 1 mm): D = diag(4·1, 2·2) = 4·I, rotation unchanged
    theta = affine_theta(angles, torch.ones(1, 2, dtype=torch.float64), spatial_shape=(5, 9), spacing=(2.0, 1.0))
    assert torch.allclose(theta[0, :, :2], torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64), atol=1e-12)


def test_rotation_is_rigid_in_physical_units_on_an_anisotropic_3d_grid():
    from gemini_pl.spatial.affine import affine_theta, sample_affine_params

    shape, spacing = (12, 40, 25), (3.0, 0.8, 1.1)
    angles, _ = sample_affine_params(4, 3, rotation=math.pi / 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ones = torch.ones(4, 3, dtype=torch.float64)
    half = torch.tensor([(n - 1) / 2 * s for n, s in zip(reversed(shape), reversed(spacing))], dtype=torch.float64)
    d, d_inv = torch.diag(half), torch.diag(1 / half)
    for space, rigid in (((shape, spacing), True), ((None, None), False)):
        m = affine_theta(angles, ones, *space)[:, :, :3]
        physical = d @ m @ d_inv  # output physical coordinates -> input physical coordinates
        eye = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
        assert torch.allclose(physical @ physical.transpose(1, 2), eye, atol=1e-9) == rigid


def test_rotation_terms_two_give_the_published_triangular_spread():
    from gemini_pl.spatial.affine import sample_affine_params

    r = math.pi / 9
    one, _ = sample_affine_params(20000, 2, rotation=r, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    two, _ = sample_affine_params(20000, 2, rotation=r, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                                  rotation_terms=2)
    assert one.abs().max() <= r and two.abs().max() > r and two.abs().max() <= 2 * r
    # E|U1 + U2| = 2r/3 for U ~ U(-r, r) (triangular on [-2r, 2r]); E|U| = r/2
    assert float(two.abs().mean()) == pytest.approx(2 * r / 3, rel=0.02)
    assert float(one.abs().mean()) == pytest.approx(r / 2, rel=0.02)
