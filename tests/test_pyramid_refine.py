"""Coarse-to-fine deformation (spatial.pyramid) and test-time instance optimisation (refinement)."""

from __future__ import annotations

import math

import pytest
import torch

from gemini_pl.errors import ConfigError
from gemini_pl.losses import registration_terms
from gemini_pl.refinement import RefineObjective, refine_flow
from gemini_pl.spatial import warp
from gemini_pl.spatial.pyramid import coarse_to_fine, feature_pyramid, pyramid_shapes, resize_field, resize_image


def _textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Gaussian-smoothed uniform noise in [0, 1], (1, 1, size, size): texture everywhere."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 1, size, size, generator=g)
    k = torch.exp(-torch.arange(-6, 7).float() ** 2 / 8.0)
    k = k / k.sum()
    img = torch.nn.functional.conv2d(img, k.view(1, 1, 1, -1), padding=(0, 6))
    img = torch.nn.functional.conv2d(img, k.view(1, 1, -1, 1), padding=(6, 0))
    return (img - img.min()) / (img.max() - img.min())


def _smooth_field(size: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return torch.stack([2.5 * torch.sin(2 * math.pi * x / size), 2.0 * torch.cos(2 * math.pi * y / size)])[None]


INNER = (slice(None), slice(None), slice(8, -8), slice(8, -8))


# ------------------------------------------------------------------------------------ pyramid
def test_pyramid_shapes_halve_odd_sizes_exactly():
    assert pyramid_shapes((99, 117), 3) == [(99, 117), (50, 59), (25, 30)]
    with pytest.raises(ValueError):
        pyramid_shapes((8, 8), 0)


def test_resize_field_rescales_a_constant_shift_to_the_new_voxels():
    field = torch.zeros(1, 2, 50, 59)
    field[:, 0], field[:, 1] = 1.0, -0.5
    up = resize_field(field, (99, 117))
    # corner-aligned: 1 voxel of a 50-voxel axis is 98/49 = 2 voxels of a 99-voxel axis; 116/58 = 2
    assert torch.allclose(up[:, 0], torch.full((1, 99, 117), 2.0))
    assert torch.allclose(up[:, 1], torch.full((1, 99, 117), -1.0))


def test_resize_field_keeps_a_linear_map_the_same_map():
    """φ(p) = A·p on the coarse grid, resized, is the same physical map on the fine grid: φ'(p') = A·p'."""
    def linear(shape):
        y, x = torch.meshgrid(*(torch.arange(s).float() for s in shape), indexing="ij")
        return torch.stack([0.1 * y + 0.05 * x, -0.02 * y + 0.03 * x])[None]

    assert torch.allclose(resize_field(linear((17, 21)), (33, 41)), linear((33, 41)), atol=1e-5)


class _ConstantDeformer:
    """A stand-in deformer returning the constant ``c`` (voxels, per axis) on any grid; records the grids."""

    def __init__(self, c):
        self.c, self.grids = torch.tensor(c, dtype=torch.float32), []

    def __call__(self, pair):
        self.grids.append(tuple(pair.shape[2:]))
        return self.c.view(1, -1, 1, 1).expand(pair.shape[0], -1, *pair.shape[2:]).clone()


@pytest.mark.parametrize("velocity", [False, True])
def test_coarse_to_fine_adds_each_level_in_its_own_voxels(velocity):
    """Two levels, a deformer returning c everywhere: coarse c → 2c on the fine grid (33 → 17: ratio
    32/16 = 2), plus the fine residual c: 3c in the interior (composition of two shifts, or the sum of
    two velocities), the deformer called coarsest first."""
    d = _ConstantDeformer([1.0, -0.5])
    feats = torch.rand(2, 3, 33, 33)
    out = coarse_to_fine(d, feats, feats, levels=2, to_displacement=lambda v: v, velocity=velocity)
    assert d.grids == [(17, 17), (33, 33)]
    inner = out[:, :, 6:-6, 6:-6]
    assert torch.allclose(inner[:, 0], torch.full_like(inner[:, 0], 3.0), atol=1e-5)
    assert torch.allclose(inner[:, 1], torch.full_like(inner[:, 1], -1.5), atol=1e-5)


def test_one_level_is_the_single_deformer_call():
    d = _ConstantDeformer([0.25, 0.75])
    feats = torch.rand(1, 2, 20, 24)
    out = coarse_to_fine(d, feats, feats, levels=1, to_displacement=lambda v: v, velocity=False)
    assert d.grids == [(20, 24)] and torch.equal(out, d.c.view(1, 2, 1, 1).expand(1, 2, 20, 24))


# ------------------------------------------------------------------------------------ refinement
def test_refinement_recovers_a_known_smooth_field_from_the_identity():
    """fixed = warp(moving, φ*) with a smooth φ* of up to 2.5 voxels; 100 steps from φ = 0 recover
    φ* to within 0.1 voxel (mean end-point error in the interior; the identity's error is 2.2)."""
    moving, phi = _textured(), _smooth_field()
    fixed = warp(moving, phi)
    out = refine_flow(moving, fixed, torch.zeros_like(phi), steps=100, lr=0.1, grid=2, sigma=0.0)
    epe = (out - phi)[INNER].norm(dim=1).mean()
    assert phi[INNER].norm(dim=1).mean() > 2.0
    assert epe < 0.1, float(epe)
    assert registration_terms(moving, fixed, out)["ncc"] < 0.2 * registration_terms(moving, fixed, torch.zeros_like(phi))["ncc"]


def test_refinement_starts_from_the_network_field_and_composes_after_it():
    """From a field that already holds half of φ*, the refined map is closer to φ* than the start;
    zero steps return the field itself."""
    moving, phi = _textured(seed=1), _smooth_field()
    fixed = warp(moving, phi)
    start = 0.5 * phi
    assert refine_flow(moving, fixed, start, steps=0) is start
    out = refine_flow(moving, fixed, start, steps=60, lr=0.1, grid=2, sigma=0.0)
    assert (out - phi)[INNER].norm(dim=1).mean() < 0.25 * (start - phi)[INNER].norm(dim=1).mean()


def test_coarse_to_fine_refinement_shares_the_steps_between_levels(monkeypatch):
    """levels=3, 7 steps on a 64² pair: 2 + 2 on the 64² and 32² grids, 3 (the remainder) on 16²,
    coarsest first; and the result still recovers a known smooth field from the identity."""
    import gemini_pl.refinement as refinement

    grids = []
    real = refinement.registration_terms

    def spy(moving, fixed, phi, *args, **kwargs):
        grids.append(tuple(moving.shape[2:]))
        assert tuple(fixed.shape[2:]) == tuple(phi.shape[2:]) == grids[-1]
        return real(moving, fixed, phi, *args, **kwargs)

    monkeypatch.setattr(refinement, "registration_terms", spy)
    moving, phi = _textured(seed=4), _smooth_field()
    fixed = warp(moving, phi)
    out = refine_flow(moving, fixed, torch.zeros_like(phi), steps=7, lr=0.1, grid=2, sigma=0.0, levels=3)
    assert grids == [(16, 16)] * 3 + [(32, 32)] * 2 + [(64, 64)] * 2 and out.shape == phi.shape
    monkeypatch.undo()
    out = refine_flow(moving, fixed, torch.zeros_like(phi), steps=100, lr=0.1, grid=2, sigma=0.0, levels=2)
    assert (out - phi)[INNER].norm(dim=1).mean() < 0.15


def test_refinement_runs_under_inference_mode_and_leaves_its_inputs_alone():
    moving, phi = _textured(seed=2), _smooth_field()
    fixed = warp(moving, phi)
    with torch.inference_mode():
        m, f, start = moving.clone(), fixed.clone(), torch.zeros_like(phi)
        out = refine_flow(m, f, start, steps=20, lr=0.1, grid=2, sigma=0.0)
    assert torch.equal(start, torch.zeros_like(phi)) and not out.requires_grad
    assert (out - phi)[INNER].norm(dim=1).mean() < (start - phi)[INNER].norm(dim=1).mean()


def test_refinement_keeps_the_diffeomorphic_residual_fold_free():
    """A large learning rate (0.5 voxel per step), the training objective's smoothness weight: the
    refined map (network field ∘ exp(v)) has no folds. Without the smoothness term the same steps fold
    0.5 % of the pixels: the velocity is diffeomorphic only in the continuous limit."""
    from gemini_pl.metrics import folding_percent

    moving, phi = _textured(seed=3), _smooth_field()
    fixed = warp(moving, phi)
    out = refine_flow(moving, fixed, torch.zeros_like(phi), steps=100, lr=0.5, grid=2, sigma=0.0)
    assert float(folding_percent(out)[0]) == 0.0
    rough = refine_flow(moving, fixed, torch.zeros_like(phi), steps=100, lr=0.5, grid=2, sigma=0.0,
                        objective=RefineObjective(lambda_smooth=0.0))
    # the Gaussian preconditioner (the default, 1 coarse voxel) keeps even that run fold-free
    smoothed = refine_flow(moving, fixed, torch.zeros_like(phi), steps=100, lr=0.5, grid=2, sigma=1.0,
                           objective=RefineObjective(lambda_smooth=0.0))
    assert float(folding_percent(smoothed)[0]) == 0.0
    assert float(folding_percent(rough)[0]) > 0.1


@pytest.mark.parametrize("kwargs, key", [({"steps": -1}, "refine_steps"), ({"lr": 0.0}, "refine_lr"), ({"grid": 3}, "refine_grid"),
                                         ({"sigma": -1.0}, "refine_sigma"), ({"levels": 0}, "refine_levels")])
def test_refinement_settings_are_checked(kwargs, key):
    args = {"steps": 1, "lr": 0.1, "grid": 2, "sigma": 1.0} | kwargs
    with pytest.raises(ConfigError, match=key):
        refine_flow(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), **args)


# ------------------------------------------------------------------------------------ modules
def _registration(**kw):
    from gemini_pl.modules import Registration

    return Registration(spatial_dims=2, num_classes=3, widths=[8] * 9, deformer_widths=[8] * 5, **kw)


def _registration_3d(**kw):
    from gemini_pl.modules import Registration

    return Registration(spatial_dims=3, num_classes=3, widths=[8] * 9, deformer_widths=[8] * 5, **kw)


def test_pyramid_levels_one_is_the_published_deformer_bit_for_bit():
    torch.manual_seed(0)
    m = _registration()
    x = torch.rand(2, 1, 32, 32)
    f_m, f_f = m.net.features(x).chunk(2, 0)
    assert torch.equal(m.flow(x[:1], x[1:]), m.net.flow(f_m, f_f))


@pytest.mark.parametrize("integration_steps", [0, 7])
def test_a_pyramid_registration_trains_every_deformer_weight(integration_steps):
    torch.manual_seed(0)
    m = _registration(pyramid_levels=3, integration_steps=integration_steps)
    a, b = torch.rand(1, 1, 40, 36), torch.rand(1, 1, 40, 36)
    terms = m.pair_loss(a, b)
    terms["total"].backward()
    assert torch.isfinite(terms["total"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.net.deformer.parameters())
    assert m.flow(a, b).shape == (1, 2, 40, 36)


def test_module_refinement_follows_the_hyper_parameters_and_set_refinement():
    torch.manual_seed(0)
    m = _registration(integration_steps=7).eval()
    moving, phi = _textured(size=32, seed=4), _smooth_field(32) * 0.5
    fixed = warp(moving, phi)
    with torch.no_grad():
        plain = m.register(moving, fixed)
        m.set_refinement(40, lr=0.1)
        refined = m.register(moving, fixed)
    assert (m.hparams.refine_steps, m.hparams.refine_lr, m.hparams.refine_grid, m.hparams.refine_sigma) == (40, 0.1, 2, 1.0)
    assert registration_terms(moving, fixed, refined)["ncc"] < registration_terms(moving, fixed, plain)["ncc"]
    with pytest.raises(ConfigError, match="refine_grid"):
        m.set_refinement(10, grid=6)


@pytest.mark.parametrize("kwargs, key", [({"pyramid_levels": 0}, "pyramid_levels"), ({"refine_steps": -2}, "refine_steps"),
                                         ({"refine_grid": 5}, "refine_grid")])
def test_module_settings_are_checked(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        _registration(**kwargs)


@pytest.mark.parametrize("velocity", [False, True])
def test_both_ways_equals_the_two_directions_registered_apart(velocity):
    """``both_ways`` (each feature map resampled once per level) gives, stacked, exactly what the
    two directions give when registered one at a time."""
    from gemini_pl.nets.deformer import Deformer
    from gemini_pl.spatial import integrate_velocity

    torch.manual_seed(0)
    d = Deformer(2, 4, (8, 8, 8, 8, 8), flow_init="published")
    f_m, f_f = torch.rand(2, 4, 30, 26), torch.rand(2, 4, 30, 26)
    to_disp = (lambda v: integrate_velocity(v, 4)) if velocity else (lambda v: v)
    with torch.no_grad():
        both = coarse_to_fine(d, f_m, f_f, 3, to_disp, velocity=velocity, both_ways=True)
        apart = torch.cat([coarse_to_fine(d, f_m, f_f, 3, to_disp, velocity=velocity),
                           coarse_to_fine(d, f_f, f_m, 3, to_disp, velocity=velocity)])
    assert both.shape == (4, 2, 30, 26)
    assert torch.allclose(both, apart, atol=1e-5)


# ------------------------------------------------------------------------------------ cascade
def _blob(center: tuple[float, float], size: int = 48) -> torch.Tensor:
    """A Gaussian blob (1, 1, size, size) centred at ``center`` (voxels), zero far from it."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    return torch.exp(-((y - center[0]) ** 2 + (x - center[1]) ** 2) / (2 * 3.0 ** 2))[None, None]


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """(ndim,) first moment of a (1, 1, H, W) image, in voxels along (y, x)."""
    y, x = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in img.shape[2:]), indexing="ij")
    w = img[0, 0]
    return torch.stack([(w * y).sum(), (w * x).sum()]) / w.sum()


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_cascade_passes_register_the_warped_image_again(passes):
    """A stand-in network that moves the moving blob only half way onto the fixed one (a constant
    field of half the centroid offset; the linear warp shifts a blob's centroid exactly): after n
    passes the composed field is (1 − 2^−n) of the offset, inside the field of view."""
    m = _registration(cascade_passes=passes).eval()
    moving, fixed = _blob((20.0, 26.0)), _blob((26.0, 22.0))
    seen = []

    def half_way(mov: torch.Tensor, fix: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        seen.append(_centroid(mov))
        return (0.5 * (_centroid(mov) - _centroid(fix)))[None, :, None, None].expand(1, 2, *mov.shape[2:]).clone()

    m.flow = half_way
    with torch.no_grad():
        flow = m.register(moving, fixed)
    offset = torch.tensor([20.0 - 26.0, 26.0 - 22.0])
    assert len(seen) == passes
    for k, c in enumerate(seen):  # pass k sees the moving blob moved (1 − 2^−k) of the way
        assert torch.allclose(c, torch.tensor([20.0, 26.0]) - (1 - 0.5 ** k) * offset, atol=1e-3)
    inner = flow[0, :, 12:36, 12:36].reshape(2, -1)
    assert torch.allclose(inner, ((1 - 0.5 ** passes) * offset)[:, None].expand_as(inner), atol=1e-4)


def test_cascade_computes_the_fixed_features_once_with_the_same_map():
    """Three passes on whole images run the backbone on the fixed image once, not once per pass
    (4 single-image backbone calls instead of 3 two-image ones), and give the map composed pass by
    pass from the uncached one-pass field (velocity, pyramid, about a pixel per pass)."""
    from gemini_pl.spatial import compose

    torch.manual_seed(0)
    m = _registration(cascade_passes=3, integration_steps=7, pyramid_levels=2).eval()
    with torch.no_grad():
        m.net.deformer.flow.weight.normal_(0, 0.02)
    moving, fixed = torch.rand(1, 1, 40, 36), torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        expect = m.flow(moving, fixed)  # no cache outside register: one call on both images
        for _ in range(2):
            expect = compose(expect, m.flow(warp(moving, expect), fixed))
        batches, features = [], m.net.features
        m.net.features = lambda x: batches.append(x.shape[0]) or features(x)
        got = m.register(moving, fixed)
    assert batches == [1, 1, 1, 1]
    assert 1.5 < expect.abs().max() and torch.allclose(got, expect, atol=2e-5)
    assert m._fixed_features is None  # nothing held after the call


def test_cascade_levels_run_the_later_passes_on_fewer_pyramid_levels():
    """``cascade_levels``: the first pass with the model's 3 levels, the later ones with 1 — the map
    composed pass by pass from uncached calls with those levels, the deformer called 3 + 1 + 1
    times (3 + 3 + 3 without it), the backbone on the fixed image still once."""
    from gemini_pl.spatial import compose

    torch.manual_seed(0)
    m = _registration(cascade_passes=3, integration_steps=7, pyramid_levels=3, cascade_levels=1).eval()
    with torch.no_grad():
        m.net.deformer.flow.weight.normal_(0, 0.02)
    moving, fixed = torch.rand(1, 1, 40, 36), torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        expect = m.flow(moving, fixed)
        for _ in range(2):
            expect = compose(expect, m.flow(warp(moving, expect), fixed, levels=1))
        calls, deformer = [], m.net.deformer.forward
        m.net.deformer.forward = lambda x: calls.append(tuple(x.shape[2:])) or deformer(x)
        got = m.register(moving, fixed)
        assert calls == [(10, 9), (20, 18), (40, 36), (40, 36), (40, 36)]
        calls.clear()
        m.set_cascade(3, levels=3)  # the same passes, every one with the three levels
        full = m.register(moving, fixed)
    assert len(calls) == 9
    assert 1.0 < expect.abs().max() and torch.allclose(got, expect, atol=2e-5)
    assert (full - got).abs().max() > 1e-3  # the later passes' level count does change the map


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_cascade_levels_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="model.cascade_levels"):
        _registration(cascade_levels=bad)


def test_feature_pyramid_equals_resizing_each_level_alone():
    """One box mean shared by the shrunk levels gives the values of resizing each level on its own
    (PyTorch's clipped 3×3 average then corner-aligned bilinear, to float rounding; ``resize_image``
    bit for bit), the finest level being the input itself."""
    x = torch.rand(2, 3, 99, 117)
    shapes = pyramid_shapes(x.shape[2:], 3)
    levels = feature_pyramid(x, shapes)
    assert levels[0] is x
    smoothed = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # the clipped box mean
    for level, shape in zip(levels[1:], shapes[1:]):  # each level alone: box mean, then corner-aligned bilinear
        alone = torch.nn.functional.interpolate(smoothed, size=shape, mode="bilinear", align_corners=True)
        assert torch.allclose(level, alone, atol=1e-6)
        assert torch.equal(level, resize_image(x, shape))
    assert [tuple(v.shape[2:]) for v in levels] == [(99, 117), (50, 59), (25, 30)]


def test_coarse_to_fine_takes_the_fixed_levels_precomputed():
    """The fixed features given as their pyramid give the map of the fixed features given whole;
    a pyramid of other shapes is refused."""
    torch.manual_seed(1)
    d = torch.nn.Conv2d(8, 2, 3, padding=1)
    f_m, f_f = torch.rand(1, 4, 30, 26), torch.rand(1, 4, 30, 26)
    with torch.no_grad():
        whole = coarse_to_fine(d, f_m, f_f, 3, lambda v: v, velocity=False)
        given = coarse_to_fine(d, f_m, feature_pyramid(f_f, pyramid_shapes((30, 26), 3)), 3, lambda v: v, velocity=False)
        assert torch.equal(whole, given)
        with pytest.raises(ValueError, match="pyramid"):
            coarse_to_fine(d, f_m, feature_pyramid(f_f, pyramid_shapes((30, 26), 2)), 3, lambda v: v, velocity=False)


def test_cascade_composes_the_later_pass_first():
    """T = T_1 ∘ T_2: with a linear first map T_1(p) = A·p (about the origin) and a translation
    T_2(p) = p + t, the composed displacement is A·(p + t) − p, not A·p + t − p (checked inside the
    field of view, where the linear interpolation of a linear field is exact)."""
    a = torch.tensor([[1.05, 0.1], [-0.08, 0.95]])
    t = torch.tensor([1.5, -2.0])
    size = 32
    grid = torch.stack(torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 2, indexing="ij"))  # (2, H, W)
    fields = [(torch.einsum("ij,jhw->ihw", a, grid) - grid)[None], t[None, :, None, None].expand(1, 2, size, size).clone()]
    m = _registration(cascade_passes=2).eval()
    m.flow = lambda mov, fix, levels=None: fields.pop(0)
    with torch.no_grad():
        flow = m.register(torch.rand(1, 1, size, size), torch.rand(1, 1, size, size))
    expect = torch.einsum("ij,jhw->ihw", a, grid + t[:, None, None]) - grid
    assert torch.allclose(flow[0, :, 4:20, 6:24], expect[:, 4:20, 6:24], atol=1e-4)
    wrong = torch.einsum("ij,jhw->ihw", a, grid) + t[:, None, None] - grid
    assert not torch.allclose(flow[0, :, 4:20, 6:24], wrong[:, 4:20, 6:24], atol=1e-2)


def test_cascade_passes_go_through_sliding_windows():
    """In 3D with a window smaller than the volume every pass is blended from windows: a stand-in
    network that answers a constant shift c in every window gives 2c inside after two passes, and
    the second pass's windows see the moving image warped by the first pass's whole field, every
    window asked for its pass's pyramid levels (``pyramid_levels`` 2, then ``cascade_levels`` 1)."""
    m = _registration_3d(cascade_passes=2, pyramid_levels=2, cascade_levels=1).eval()
    m.roi_size = [8, 8, 8]
    c = torch.tensor([0.5, -1.0, 1.5])
    moving = torch.rand(1, 1, 16, 16, 16)
    seen, seen_levels = [], []

    def constant(mov: torch.Tensor, fix: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        seen.append(mov.clone())
        seen_levels.append(levels)
        return c[None, :, None, None, None].expand(mov.shape[0], 3, *mov.shape[2:]).clone()

    m.flow = constant
    with torch.no_grad():
        flow = m.register(moving, torch.rand(1, 1, 16, 16, 16))
    assert torch.allclose(flow[0, :, 4:12, 4:12, 4:12], (2 * c)[:, None, None, None].expand(3, 8, 8, 8), atol=1e-5)
    windows = len(seen) // 2  # per pass
    assert len(seen) == 2 * windows and windows > 1 and all(w.shape[2:] == (8, 8, 8) for w in seen)
    first_pass_warp = warp(moving, c[None, :, None, None, None].expand(1, 3, 16, 16, 16))
    assert torch.equal(seen[0], moving[..., :8, :8, :8])  # pass 1, the corner window: the moving image
    assert torch.allclose(seen[windows], first_pass_warp[..., :8, :8, :8], atol=1e-6)  # pass 2: its warp
    assert seen_levels == [2] * windows + [1] * windows  # each window with its pass's pyramid levels


def test_cascade_passes_are_checked_and_set():
    with pytest.raises(ConfigError, match="cascade_passes must be an integer >= 1"):
        _registration(cascade_passes=0)
    m = _registration()
    m.set_cascade(3)
    assert m.hparams.cascade_passes == 3
    with pytest.raises(ConfigError, match="cascade_passes"):
        m.set_cascade(0)


# --------------------------------------------------------------------- cascade in training
def _moving_registration(**kw):
    """A Registration whose flow conv is scaled up, so that its fields move by about a voxel (the
    default init starts at the identity)."""
    torch.manual_seed(3)
    m = _registration(pyramid_levels=2, **kw)
    with torch.no_grad():
        m.net.deformer.flow.weight.normal_(0.0, 0.05)
    return m


def test_training_cascade_is_the_evaluation_cascade_with_each_pass_smoothed():
    """train_cascade_passes = 2, both directions: each training map is compose(φ₁, φ₂) with
    φ₂ = net(warp(source, φ₁), target) computed pass by pass here, the map ``register`` gives with
    cascade_passes = 2; the loss is the NCC of that map plus λ·(S(φ₁) + S(φ₂)) per direction, and its
    gradient reaches the network through both passes (the same gradient as the expression by hand)."""
    from gemini_pl.losses import regulariser
    from gemini_pl.spatial import compose

    m = _moving_registration(train_cascade_passes=2, cascade_passes=2, lambda_smooth=2.0)
    x, y = _textured(32, seed=1), _textured(32, seed=2)
    flows, fields = m.training_flows(x, y)
    loss = m.pair_loss(x, y)

    hand_total = x.new_zeros(())
    hand_ncc, hand_smooth = x.new_zeros(()), x.new_zeros(())
    for d, (src, tgt) in enumerate([(x, y), (y, x)]):
        p1 = m.flow(src, tgt)
        p2 = m.flow(warp(src, p1), tgt)
        expect = compose(p1, p2)
        assert p1.abs().max() > 0.3 and p2.abs().max() > 0.1  # the passes move
        assert torch.allclose(flows[d], expect, atol=1e-5)
        assert len(fields[d]) == 2 and torch.allclose(fields[d][0], p1, atol=1e-5) and torch.allclose(fields[d][1], p2, atol=1e-5)
        ncc = registration_terms(src, tgt, expect)["ncc"]
        smooth = regulariser(p1) + regulariser(p2)
        hand_ncc, hand_smooth = hand_ncc + ncc, hand_smooth + smooth
        assert not torch.allclose(smooth, registration_terms(src, tgt, expect)["smooth"], rtol=1e-3)  # not S(composed)
    hand_total = hand_ncc + 2.0 * hand_smooth
    assert torch.allclose(loss["ncc"], hand_ncc, atol=1e-5) and torch.allclose(loss["smooth"], hand_smooth, atol=1e-6)
    assert torch.allclose(loss["total"], hand_total, atol=1e-5)

    params = [p for p in m.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss["total"], params, allow_unused=True)
    want = torch.autograd.grad(hand_total, params, allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)

    m.eval()
    with torch.no_grad():
        assert torch.allclose(m.register(x, y), flows[0], atol=1e-5)


def test_training_cascade_of_one_pass_is_the_single_pass_loss():
    m = _moving_registration()
    x, y = _textured(32, seed=1), _textured(32, seed=2)
    flows, fields = m.training_flows(x, y)
    assert [len(f) for f in fields] == [1, 1] and all(f[0] is phi for f, phi in zip(fields, flows))
    one = registration_terms(x, y, m.flow(x, y))
    other = registration_terms(y, x, m.flow(y, x))
    loss = m.pair_loss(x, y)
    assert torch.allclose(loss["ncc"], one["ncc"] + other["ncc"], atol=1e-6)
    assert torch.allclose(loss["smooth"], one["smooth"] + other["smooth"], atol=1e-7)


def test_training_cascade_passes_are_checked():
    with pytest.raises(ConfigError, match="model.train_cascade_passes must be an integer >= 1"):
        _registration(train_cascade_passes=0)


@pytest.mark.parametrize("shape", [(2, 3, 9, 12), (1, 2, 2, 5), (1, 1, 5, 4, 6), (1, 2, 1, 7)])
def test_box_mean3_is_avg_pools_clipped_box_mean_with_its_gradient(shape):
    """The pyramid's anti-aliasing equals avg_pool(3, stride 1, pad 1, count_include_pad=False), values
    and gradient, sizes 1 and 2 included; and a hand-computed corner: the mean of its 2^ndim box."""
    import torch.nn.functional as F

    from gemini_pl.spatial.pyramid import box_mean3

    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    pool = (F.avg_pool2d, F.avg_pool3d)[len(shape) - 4]
    want = pool(x, 3, stride=1, padding=1, count_include_pad=False)
    got = box_mean3(x)
    assert torch.allclose(got, want, atol=1e-12)
    g = torch.randn(shape, dtype=torch.float64)
    assert torch.allclose(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], atol=1e-12)
    corner = x[(0, 0) + (slice(0, 2),) * (len(shape) - 2)]
    assert torch.allclose(got[(0, 0) + (0,) * (len(shape) - 2)], corner.mean())
