"""The augmentation against the published recipe, rebuilt here by hand from its formulas.

Spatial: the published code rotates and scales zero-centred *voxel* coordinates (rows, columns),
adds the centre back and normalises the sampling locations afterwards. ``augment_space: voxel``
(and ``physical`` without spacing) must give that grid; ``normalised`` is a shear away from it.

Intensity: the published curve is a cubic Bézier through (0, 0), two random points and (1, 1)
whose x and y samples are both sorted before interpolation, so it is never flipped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, SMALL_WIDTHS, print_config
from gemini_pl.augment.corruption import nonlinear_intensity
from gemini_pl.modules import Segmentation
from gemini_pl.spatial.affine import affine_theta

H, W = 99, 117


def published_grid(a_x: float, a_y: float, sc_x: float, sc_y: float, shape=(H, W)) -> np.ndarray:
    """``grid_sample`` grid (H, W, 2) in (x, y) order of the published 2D affine with these draws.

    Coordinates c (2, H, W) in tensor order, centred on ((H-1)/2, (W-1)/2); the matrix is
    scale · R_y · R_x with R_x = [[cos, sin], [-sin, cos]](a_x) and R_y = [[cos, -sin], [sin, cos]](a_y);
    the location is c·M plus the centre size // 2, then normalised to 2 (p / (size - 1) - 0.5).
    """
    h, w = shape
    c = np.stack(np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij"))
    r_x = np.array([[math.cos(a_x), math.sin(a_x)], [-math.sin(a_x), math.cos(a_x)]])
    r_y = np.array([[math.cos(a_y), -math.sin(a_y)], [math.sin(a_y), math.cos(a_y)]])
    m = np.diag([sc_x, sc_y]) @ r_y @ r_x
    p = np.einsum("dhw,dk->khw", c, m) + np.array([h // 2, w // 2], dtype=float)[:, None, None]
    return np.stack([2 * (p[1] / (w - 1) - 0.5), 2 * (p[0] / (h - 1) - 0.5)], axis=-1)


def project_grid(angle: float, scale_xy, spatial_shape) -> np.ndarray:
    theta = affine_theta(torch.tensor([[angle]], dtype=torch.float64),
                         torch.tensor([scale_xy], dtype=torch.float64), spatial_shape)
    return F.affine_grid(theta, [1, 1, H, W], align_corners=True)[0].numpy()


def in_voxels(grid_difference: np.ndarray) -> np.ndarray:
    return np.abs(grid_difference * np.array([(W - 1) / 2, (H - 1) / 2]))


@pytest.mark.parametrize("draw", [(0.3, -0.1, 1.1, 0.8), (-0.2, 0.25, 0.9, 1.2), (0.0, math.pi / 9, 1.0, 1.0)])
def test_voxel_space_reproduces_the_published_grid(draw):
    """The published draw (a_x, a_y, sc_x, sc_y) is the project's angle a_y − a_x with scales
    (x, y) = (sc_y, sc_x): the grids agree to float precision on 99×117; the normalised-coordinate
    affine of the same draw is off by voxels."""
    a_x, a_y, sc_x, sc_y = draw
    ref = published_grid(a_x, a_y, sc_x, sc_y)
    voxel = project_grid(a_y - a_x, (sc_y, sc_x), (H, W))
    assert in_voxels(voxel - ref).max() < 1e-9
    normalised = project_grid(a_y - a_x, (sc_y, sc_x), None)
    assert in_voxels(normalised - ref).max() > 0.5


def test_normalised_space_is_a_shear_of_about_three_voxels():
    """At 20°, scale 1, on 99×117 the normalised-coordinate rotation differs from the published
    voxel rotation by a shear: x is off by sin 20° · (58/49 − 1) · y and y by sin 20° · (1 − 49/58) · x,
    largest at the corners: 0.342 · 0.184 · 49 = 3.08 voxels."""
    a = math.pi / 9
    ref = published_grid(0.0, a, 1.0, 1.0)
    diff = in_voxels(project_grid(a, (1.0, 1.0), None) - ref)
    expected = math.sin(a) * (58 / 49 - 1) * 49
    assert diff[..., 0].max() == pytest.approx(expected, rel=1e-9)
    assert diff[..., 1].max() == pytest.approx(math.sin(a) * (1 - 49 / 58) * 58, rel=1e-9)
    assert 3.0 < diff.max() < 3.2


@pytest.mark.parametrize("space,same_as_published", [("voxel", True), ("physical", False), ("normalised", False)])
def test_module_space_with_anisotropic_spacing(space, same_as_published):
    """With a spacing in the batch, ``voxel`` still rotates voxel coordinates (the published grid);
    ``physical`` is rigid in millimetres instead and ``normalised`` is neither."""
    image = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0))
    model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=2, augment_space=space, aug_seed=3,
                         rotation=math.pi / 9, per_axis_scale=True)
    out = model.prepare_batch({"image": image, "label": (image > 0.5).long(), "spacing": torch.tensor([[1.0, 2.5]])})
    g = torch.Generator().manual_seed(3)
    u = torch.rand((1, 3), generator=g, dtype=torch.float64)  # the module's draw: one angle, two scales
    angle = float((2 * u[0, 0] - 1) * math.pi / 9)
    scales = (0.75 + 0.5 * u[0, 1:]).tolist()
    # the same draw as the published parameters: a_x = 0, a_y = angle, sc_x (rows) = scales[1]
    ref = torch.from_numpy(published_grid(0.0, angle, scales[1], scales[0])).unsqueeze(0)
    expected = F.grid_sample(image.double(), ref, align_corners=True).float()
    close = torch.allclose(out["image"], expected, atol=1e-5)
    assert close == same_as_published


def test_physical_without_spacing_is_the_published_grid():
    image = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(1))
    outs = {}
    for space in ("physical", "voxel"):
        model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=2, augment_space=space, aug_seed=4)
        outs[space] = model.prepare_batch({"image": image, "label": (image > 0.5).long()})["image"]
    assert torch.equal(outs["physical"], outs["voxel"])
    g = torch.Generator().manual_seed(4)
    u = torch.rand((1, 3), generator=g, dtype=torch.float64)
    angle, s = float((2 * u[0, 0] - 1) * math.pi / 9), float(0.75 + 0.5 * u[0, 1])  # one shared scale
    ref = torch.from_numpy(published_grid(0.0, angle, s, s)).unsqueeze(0).float()
    assert torch.allclose(outs["voxel"], F.grid_sample(image, ref, align_corners=True), atol=1e-5)


def published_curve(points, x: np.ndarray) -> np.ndarray:
    """The published intensity map: Bernstein terms C(3, i) t^(3-i) (1-t)^i of the four points,
    1e5 samples of t, both coordinates sorted, then linear interpolation."""
    pts = np.array(points, dtype=float)
    t = np.linspace(0.0, 1.0, 100000)
    poly = np.array([math.comb(3, i) * t ** (3 - i) * (1 - t) ** i for i in range(4)])
    xs, ys = pts[:, 0] @ poly, pts[:, 1] @ poly
    return np.interp(x, np.sort(xs), np.sort(ys))


def test_default_curve_is_the_published_one_never_flipped():
    """The published map of the drawn control points is increasing for every draw, and the
    project's default curve (``nonlinear_flip_prob`` 0) equals it within its lookup-table error."""
    x = torch.linspace(0, 1, 257).view(1, 1, 1, 257).expand(16, 1, 1, 257).contiguous()
    y = nonlinear_intensity(x, generator=torch.Generator().manual_seed(7))
    ctrl = torch.rand((16, 2, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    for b in range(16):
        ref = published_curve([[0, 0], ctrl[b, 0], ctrl[b, 1], [1, 1]], x[b, 0, 0].double().numpy())
        assert np.all(np.diff(ref) >= 0) and ref[0] == 0 and ref[-1] == 1
        err = np.abs(y[b, 0, 0].double().numpy() - ref)
        assert err.max() < 0.02 and np.median(err) < 1e-3, b
    flipped = nonlinear_intensity(x, generator=torch.Generator().manual_seed(7), flip_prob=1.0)
    assert torch.all(flipped[..., 0] == 1)  # a flip is not the published map


@pytest.mark.parametrize("preset,base", [("mip_2d", "gemini_pretrain.yaml"), ("mip_3d", "gemini_pretrain.yaml"),
                                         ("semi_3d", "gemini_semi.yaml")])
def test_parity_presets_use_the_published_rotation_and_no_curve_flip(capsys, preset, base):
    exp = REPO / "experiments"
    args = print_config(["--config", str(exp / base), "--config", str(exp / "parity" / f"{preset}.yaml")],
                        capsys)["model"]["init_args"]
    assert args["augment_space"] == "voxel"
    if preset.startswith("mip"):
        assert args["corruption"]["nonlinear_flip_prob"] == 0.0
        assert args["corruption"]["nonlinear_prob"] == 0.9  # the other fields keep their defaults
