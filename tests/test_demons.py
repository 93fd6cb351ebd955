"""The classical demons anchor: SimpleITK's field in this project's convention, and its module
scored by the shared registration evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gemini_pl.classical import demons_displacement
from gemini_pl.spatial import warp


def _blob(shape, centre, widths):
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 / w for g, c, w in zip(grids, centre, widths))).astype(np.float32)


@pytest.mark.parametrize("shape, shift", [((48, 40), (3.0, -2.0)), ((24, 28, 20), (0.0, 2.0, -1.5))])
def test_demons_field_is_in_array_axis_order_and_voxels(shape, shift):
    """moving = fixed translated by ``shift`` voxels: the field inside the object is ≈ +shift per array
    axis (warped(p) = moving(p + φ(p))), and warping with it brings moving onto fixed."""
    centre = [s / 2 for s in shape]
    widths = [60.0, 30.0, 40.0][: len(shape)]
    fixed = _blob(shape, centre, widths)
    moving = _blob(shape, [c + d for c, d in zip(centre, shift)], widths)
    phi = demons_displacement(fixed, moving, iterations=200, smoothing_sigma=1.5, histogram_match=False, update_sigma=0)
    assert phi.shape == (len(shape), *shape) and phi.dtype == np.float32
    core = tuple(slice(int(c) - 3, int(c) + 3) for c in centre)
    for axis, d in enumerate(shift):
        assert phi[axis][core].mean() == pytest.approx(d, abs=0.5), axis
    warped = warp(torch.from_numpy(moving)[None, None], torch.from_numpy(phi)[None])[0, 0].numpy()
    assert np.abs(warped - fixed).mean() < 0.2 * np.abs(moving - fixed).mean()


def test_demons_refuses_images_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        demons_displacement(np.zeros((8, 8)), np.zeros((8, 9)))


def test_demons_module_scores_test_pairs_like_the_learned_modules(tmp_path):
    """DemonsRegistration through the registration evaluation: per-case rows with the same columns
    as Registration, and Dice of the warped labels computed from the same field by hand."""
    from gemini_pl.metrics import folding_percent, mean_dice
    from gemini_pl.modules import DemonsRegistration

    model = DemonsRegistration(spatial_dims=2, num_classes=2, iterations=50)
    fixed = _blob((32, 32), (16, 16), (40.0, 40.0))
    moving = _blob((32, 32), (18, 15), (40.0, 40.0))
    lab_f, lab_m = torch.from_numpy(fixed > 0.5)[None, None].long(), torch.from_numpy(moving > 0.5)[None, None].long()
    batch = {"image_a": torch.from_numpy(moving)[None, None], "image_b": torch.from_numpy(fixed)[None, None],
             "label_a": lab_m, "label_b": lab_f, "name_a": ["m"], "name_b": ["f"]}
    out = model.test_step(batch, 0)
    (row,) = out["cases"]
    assert row["case"] == "m->f" and set(row) >= {"dice", "dice_unwarped", "folding", "sdlogj"}
    phi = torch.from_numpy(demons_displacement(fixed, moving, iterations=50))[None]
    expect = 100 * float(mean_dice(warp(lab_m, phi, mode="nearest"), lab_f, 2)[0])
    assert row["dice"] == pytest.approx(expect, abs=1e-4)
    assert row["dice"] > row["dice_unwarped"]
    assert row["folding"] == pytest.approx(float(folding_percent(phi)[0]), abs=1e-6)
