"""The classical anchors Greedy and ANTs SyN beside demons: their fields in this project's
convention (hand-made conversions; a known translation recovered with the right sign and axis;
warping with the returned field reproduces the tool's own resampling), the generic module scored
by the shared registration evaluation, and a clear error when the ``bench`` extra is missing.

The tools themselves are optional (``pip install "gemini-pl[bench]"``): their tests are skipped
without them; everything around them is tested with a stand-in field."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from gemini_pl import classical
from gemini_pl.classical import (
    BENCH_EXTRA, classical_displacement, greedy_command, greedy_displacement, physical_to_voxels, syn_displacement,
)
from gemini_pl.errors import ConfigError
from gemini_pl.spatial import warp


def _blob(shape, centre, widths):
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 / w for g, c, w in zip(grids, centre, widths))).astype(np.float32)


def _translated_pair(shape, shift):
    centre = [s / 2 for s in shape]
    widths = [60.0, 30.0, 40.0][: len(shape)]
    return _blob(shape, centre, widths), _blob(shape, [c + d for c, d in zip(centre, shift)], widths), centre


def _warp(x, phi, mode="bilinear"):
    return warp(torch.from_numpy(np.asarray(x, np.float32))[None, None], torch.from_numpy(phi)[None], mode=mode)[0, 0].numpy()


# ------------------------------------------------------------------ without the tools
def test_physical_field_to_voxels_by_hand():
    """A (3, 4) image whose ITK vector is (x, y) = (2 mm, 1 mm) at spacing (x, y) = (2, 0.5) mm:
    1 voxel along x, 2 voxels along y. SimpleITK arrays put x on the last axis, ANTsPy's on the first."""
    field = np.zeros((3, 4, 2), np.float32)
    field[..., 0], field[..., 1] = 2.0, 1.0
    sitk_like = physical_to_voxels(field, (2.0, 0.5), reversed_axes=True)
    assert sitk_like.shape == (2, 3, 4) and sitk_like.dtype == np.float32
    assert np.all(sitk_like[0] == 2.0) and np.all(sitk_like[1] == 1.0)  # axis 0 is y: 1 mm / 0.5; axis 1 is x: 2 mm / 2
    ants_like = physical_to_voxels(field, (2.0, 0.5), reversed_axes=False)
    assert np.all(ants_like[0] == 1.0) and np.all(ants_like[1] == 2.0)  # axis 0 is x: 2 mm / 2; axis 1 is y: 1 mm / 0.5
    # a varying field keeps its values in place: component k of pixel (i, j) lands at [., i, j]
    field = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    out = physical_to_voxels(field, reversed_axes=True)
    assert out[0, 2, 1] == field[2, 1, 1] and out[1, 2, 1] == field[2, 1, 0]
    with pytest.raises(ValueError, match=r"\(\*S, 2\)"):
        physical_to_voxels(np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="spacing"):
        physical_to_voxels(field, (1.0, 1.0, 1.0))


def test_greedy_command_is_the_issue_setting():
    """The issue's setting, with a fixed seed (Greedy's default 0 seeds from the clock) and the warp
    kept at full precision (Greedy's default rounds it to 0.1 voxel)."""
    assert greedy_command(2, threads=1) == (
        "-d 2 -V 0 -i fixed moving -o warp -m NCC 2x2 -n 100x50x20 -s 1.5vox 0.5vox -seed 1 -wp 0 -threads 1")
    assert greedy_command(3, radius=3, iterations=(10, 5), smooth_pre=2, smooth_post=1, seed=7, warp_precision=0.1) == (
        "-d 3 -V 0 -i fixed moving -o warp -m NCC 3x3x3 -n 10x5 -s 2vox 1vox -seed 7 -wp 0.1")
    assert greedy_command(2, threads=1, stage="affine") == (
        "-d 2 -V 0 -a -dof 12 -i fixed moving -o affine -m NCC 2x2 -n 100x50x20 -seed 1 -threads 1")
    assert greedy_command(2, metric="ssd").split("-m ")[1].startswith("SSD -n")
    with pytest.raises(ValueError, match="stage"):
        greedy_command(2, stage="rigid")
    with pytest.raises(ValueError, match="metric"):
        greedy_command(2, metric="cc")


@pytest.mark.parametrize("module, fn", [("picsl_greedy", greedy_displacement), ("ants", syn_displacement)])
def test_a_missing_tool_is_one_line_naming_the_extra(monkeypatch, module, fn):
    monkeypatch.setitem(sys.modules, module, None)  # import of it fails, installed or not
    with pytest.raises(ConfigError, match=r'pip install "gemini-pl\[bench\]"') as err:
        fn(np.zeros((8, 8)), np.zeros((8, 8)))
    assert "\n" not in str(err.value) and BENCH_EXTRA in str(err.value)


def test_tools_refuse_images_of_different_shapes():
    for method in ("greedy", "syn", "demons"):
        with pytest.raises(ValueError, match="one shape"):
            classical_displacement(method, np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ConfigError, match="unknown classical registration method 'elastix'"):
        classical_displacement("elastix", np.zeros((8, 8)), np.zeros((8, 8)))


def test_classical_module_scores_the_tools_own_field(monkeypatch):
    """A stand-in tool returning φ = +1 voxel along axis 0: the moving square (rows 5-10) lands on
    the fixed one (rows 4-9) — Dice 100 %, against 2·30/(36+36) = 83.33 % unwarped — and the field
    of a translation folds nowhere, with SDlogJ 0. The tool gets the fixed image first and the options."""
    from gemini_pl.modules import ClassicalRegistration

    seen = {}

    def fake(fixed, moving, **options):
        seen.update(options, fixed=fixed.copy(), moving=moving.copy())
        phi = np.zeros((2, *fixed.shape), np.float32)
        phi[0] = 1.0
        return phi

    monkeypatch.setitem(classical.CLASSICAL_METHODS, "greedy", (fake, "picsl_greedy"))
    lab_m, lab_f = torch.zeros(1, 1, 16, 16, dtype=torch.long), torch.zeros(1, 1, 16, 16, dtype=torch.long)
    lab_m[..., 5:11, 4:10], lab_f[..., 4:10, 4:10] = 1, 1
    batch = {"image_a": lab_m.float(), "image_b": 2 * lab_f.float(), "label_a": lab_m, "label_b": lab_f,
             "name_a": ["m"], "name_b": ["f"]}
    model = ClassicalRegistration(spatial_dims=2, method="greedy", options={"radius": 3}, threads=1, num_classes=2)
    (row,) = model.test_step(batch, 0)["cases"]
    assert seen["radius"] == 3 and seen["threads"] == 1
    assert np.array_equal(seen["fixed"], 2 * lab_f[0, 0].numpy()) and np.array_equal(seen["moving"], lab_m[0, 0].numpy())
    assert row["case"] == "m->f"
    assert row["dice"] == pytest.approx(100.0) and row["dice_unwarped"] == pytest.approx(100 * 60 / 72)
    assert row["folding"] == 0.0 and row["sdlogj"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="nothing to train"):
        next(iter(model.training_losses(batch)))
    with pytest.raises(ConfigError, match="unknown classical registration method"):
        ClassicalRegistration(method="elastix")


def test_demons_registration_is_the_classical_module_with_demons_options():
    from gemini_pl.modules import ClassicalRegistration, DemonsRegistration

    model = DemonsRegistration(spatial_dims=2, iterations=7, threads=1)
    assert isinstance(model, ClassicalRegistration) and model.method == "demons"
    assert model.options == {"iterations": 7, "smoothing_sigma": 2.0, "update_sigma": 1.0, "histogram_match": True, "threads": 1}
    assert model.hparams.iterations == 7  # the config's init_args stay its hyper-parameters


@pytest.mark.parametrize("method", ["greedy", "syn"])
def test_demo_configs_build_the_classical_module(method):
    """experiments/demo_mni/<method>.yaml: the classical module with that method, on one thread."""
    import yaml

    from conftest import REPO
    from gemini_pl.modules import ClassicalRegistration

    cfg = yaml.safe_load((REPO / "experiments" / "demo_mni" / f"{method}.yaml").read_text())
    assert cfg["model"]["class_path"] == "gemini_pl.modules.ClassicalRegistration"
    model = ClassicalRegistration(**cfg["model"]["init_args"])
    assert model.method == method and model.options == {"threads": 1}


# ------------------------------------------------------------------ with the tools (the bench extra)
@pytest.mark.parametrize("shape, shift", [((48, 40), (3.0, -2.0)), ((24, 28, 20), (0.0, 2.0, -1.5))])
def test_greedy_recovers_a_translation_and_matches_its_own_reslicing(shape, shift):
    """moving = fixed translated by ``shift`` voxels: Greedy's field inside the blob is ≈ +shift per
    array axis, and warping with it gives Greedy's own resliced image (linear) and label (nearest)."""
    pytest.importorskip("picsl_greedy")
    sitk = pytest.importorskip("SimpleITK")
    fixed, moving, centre = _translated_pair(shape, shift)
    phi, tool = greedy_displacement(fixed, moving, threads=1, return_tool=True)
    assert phi.shape == (len(shape), *shape) and phi.dtype == np.float32
    core = tuple(slice(int(c) - 2, int(c) + 2) for c in centre)
    for axis, d in enumerate(shift):
        assert phi[axis][core].mean() == pytest.approx(d, abs=0.5), axis
    label = (moving > 0.5).astype(np.float32)
    tool.execute(f"-d {len(shape)} -V 0 -rf fixed -rm moving resliced -ri NN -rm label resliced_label -r warp",
                 label=sitk.GetImageFromArray(label), resliced=None, resliced_label=None)
    own = sitk.GetArrayFromImage(tool["resliced"])
    assert np.abs(_warp(moving, phi) - own).max() < 0.01  # the same sampling points, two linear interpolators
    own_label = sitk.GetArrayFromImage(tool["resliced_label"])
    assert (np.rint(_warp(label, phi, "nearest")) != own_label).mean() < 0.005  # ties of nearest only


def test_greedy_affine_then_deformable_is_one_composed_field():
    """With the affine stage, the field returned is the whole map: warping with it gives Greedy's
    own reslicing through the warp and then the affine map, and it recovers the translation."""
    pytest.importorskip("picsl_greedy")
    sitk = pytest.importorskip("SimpleITK")
    fixed, moving, centre = _translated_pair((48, 40), (3.0, -2.0))
    phi, tool = greedy_displacement(fixed, moving, threads=1, affine=True, return_tool=True)
    core = tuple(slice(int(c) - 2, int(c) + 2) for c in centre)
    assert phi[0][core].mean() == pytest.approx(3.0, abs=0.5) and phi[1][core].mean() == pytest.approx(-2.0, abs=0.5)
    tool.execute("-d 2 -V 0 -rf fixed -rm moving resliced -r warp affine", resliced=None)
    assert np.abs(_warp(moving, phi) - sitk.GetArrayFromImage(tool["resliced"])).max() < 0.01


def test_greedy_is_deterministic_and_not_rounded():
    """Greedy's NCC adds noise from a generator seeded by the clock unless given a seed, and rounds
    its warp to 0.1 voxel unless told otherwise: with the defaults here, the same pair gives the
    same field, and the field is not on a 0.1-voxel grid."""
    pytest.importorskip("picsl_greedy")
    rng = np.random.default_rng(0)
    fixed, moving, _ = _translated_pair((40, 36), (2.0, 1.0))
    fixed = fixed + 0.05 * rng.random(fixed.shape, dtype=np.float32)
    phi = greedy_displacement(fixed, moving, threads=1)
    assert np.array_equal(greedy_displacement(fixed, moving, threads=1), phi)
    assert np.abs(phi * 10 - np.rint(phi * 10)).max() > 0.01


def test_syn_recovers_a_translation_and_matches_its_own_warped_image():
    """ANTs' whole transform (rigid, affine, SyN) as one field: ≈ +shift per array axis inside the
    blob, warping with it gives ANTs' own warped image, and the same seed gives the same field."""
    pytest.importorskip("ants")
    fixed, moving, centre = _translated_pair((48, 40), (3.0, -2.0))
    phi, own = syn_displacement(fixed, moving, threads=1, return_transforms=True)
    assert phi.shape == (2, 48, 40) and phi.dtype == np.float32
    core = tuple(slice(int(c) - 2, int(c) + 2) for c in centre)
    assert phi[0][core].mean() == pytest.approx(3.0, abs=0.5) and phi[1][core].mean() == pytest.approx(-2.0, abs=0.5)
    assert np.abs(_warp(moving, phi) - own).max() < 1e-4
    assert np.abs(own - fixed).mean() < 0.2 * np.abs(moving - fixed).mean()
    assert np.array_equal(syn_displacement(fixed, moving, threads=1), phi)


@pytest.mark.slow
def test_syn_field_is_in_array_axis_order_in_3d():
    """In 3D too (about a minute): warping with the field gives ANTs' own warped image."""
    pytest.importorskip("ants")
    fixed, moving, _ = _translated_pair((24, 28, 20), (0.0, 2.0, -1.5))
    phi, own = syn_displacement(fixed, moving, threads=1, return_transforms=True)
    assert phi.shape == (3, 24, 28, 20)
    assert np.abs(_warp(moving, phi) - own).max() < 1e-4
