"""AVD (SimpleITK), HD95 (MONAI), Dice and Jacobian metric objects against hand-made masks and
independent computations; scaling-and-squaring integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from gemini_pl.metrics import (
    AverageHausdorffDistance,
    DiceScore,
    FoldingPercent,
    HausdorffDistance95,
    SDLogJ,
    average_hausdorff_distance,
    avd_per_class,
    folding_percent,
    foreground_masks,
    hd95_per_class,
    normalise_spacing,
    sdlogj,
    unable_cases,
)
from gemini_pl.spatial import integrate_velocity, warp


def _brute_avd(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """(mean over A of the distance to B + mean over B of the distance to A) / 2, brute force."""
    pa, pb = np.argwhere(a) * np.asarray(spacing), np.argwhere(b) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1))
    return (d.min(1).mean() + d.min(0).mean()) / 2


# ------------------------------------------------------------------------------------- AVD
def test_avd_single_voxels_uses_spacing_in_tensor_axis_order():
    a = np.zeros((9, 12), bool)
    b = np.zeros((9, 12), bool)
    a[4, 2] = True
    b[4, 5] = True  # 3 voxels along axis 1
    assert average_hausdorff_distance(a, b, spacing=(0.5, 2.0)) == pytest.approx(6.0)
    assert average_hausdorff_distance(a, b, spacing=(2.0, 0.5)) == pytest.approx(1.5)
    assert average_hausdorff_distance(a, a, spacing=(2.0, 0.5)) == 0.0


def test_avd_hand_made_boxes():
    # A: a 1×3 bar; B: the same bar shifted by one voxel along axis 0 → every voxel is 1 voxel away
    a = np.zeros((6, 6), bool)
    a[2, 1:4] = True
    b = np.roll(a, 1, axis=0)
    assert average_hausdorff_distance(a, b, spacing=(1.5, 1.0)) == pytest.approx(1.5)
    # B ⊂ A: B→A is 0; A→B: two of the three voxels are 0, one is 1 voxel (spacing 1) away → (1/3 + 0)/2
    c = a.copy()
    c[2, 3] = False
    assert average_hausdorff_distance(a, c) == pytest.approx(1 / 6)


@pytest.mark.parametrize("shape,spacing", [((20, 24), (0.7, 1.3)), ((10, 12, 9), (2.0, 0.8, 1.1))])
def test_avd_matches_brute_force_on_random_masks(shape, spacing):
    rng = np.random.default_rng(0)
    a = rng.random(shape) < 0.1
    b = rng.random(shape) < 0.15
    assert average_hausdorff_distance(a, b, spacing) == pytest.approx(_brute_avd(a, b, spacing), rel=1e-6)


def test_avd_empty_is_unable():
    a = np.zeros((5, 5), bool)
    b = a.copy()
    b[1, 1] = True
    assert math.isnan(average_hausdorff_distance(a, b))
    assert math.isnan(average_hausdorff_distance(b, a))


def test_avd_per_class_matches_sitk_directly():
    rng = np.random.default_rng(1)
    pred = torch.from_numpy(rng.random((2, 3, 8, 9, 10)) < 0.2)
    target = torch.from_numpy(rng.random((2, 3, 8, 9, 10)) < 0.2)
    spacing = torch.tensor([[1.0, 2.0, 0.5], [0.9, 0.9, 3.0]])
    out = avd_per_class(pred, target, spacing)
    assert out.shape == (2, 3)
    for i in range(2):
        for k in range(3):
            ia = sitk.GetImageFromArray(pred[i, k].numpy().astype(np.uint8))
            ib = sitk.GetImageFromArray(target[i, k].numpy().astype(np.uint8))
            for img in (ia, ib):
                img.SetSpacing([float(s) for s in reversed(spacing[i].tolist())])
            f = sitk.HausdorffDistanceImageFilter()
            f.Execute(ia, ib)
            assert float(out[i, k]) == pytest.approx(f.GetAverageHausdorffDistance(), rel=1e-9)


# ------------------------------------------------------------------------------------- HD95
def test_hd95_hand_made_and_against_monai():
    a = torch.zeros(1, 1, 9, 12, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, 0, 4, 2] = True
    b[0, 0, 4, 5] = True
    assert float(hd95_per_class(a, b, spacing=(0.5, 2.0))[0, 0]) == pytest.approx(6.0)

    rng = np.random.default_rng(2)
    p = torch.from_numpy(rng.random((2, 2, 12, 10, 8)) < 0.3)
    t = torch.from_numpy(rng.random((2, 2, 12, 10, 8)) < 0.3)
    sp = [(1.0, 2.0, 0.5), (0.5, 0.5, 1.5)]
    ours = hd95_per_class(p, t, sp)
    for i in range(2):
        ref = compute_hausdorff_distance(p[i : i + 1].float(), t[i : i + 1].float(), include_background=True, percentile=95, spacing=list(sp[i]))
        assert torch.allclose(ours[i].float(), ref[0].float())


def test_hd95_empty_is_nan():
    a = torch.zeros(1, 2, 6, 6, dtype=torch.bool)
    b = a.clone()
    a[0, 0, 1, 1] = b[0, 0, 2, 2] = True
    b[0, 1, 3, 3] = True  # class 2: empty prediction
    out = hd95_per_class(a, b)
    assert out[0, 0] == pytest.approx(math.sqrt(2))
    assert math.isnan(float(out[0, 1]))


# ------------------------------------------------------------------------------------- spacing
def test_normalise_spacing_forms():
    assert normalise_spacing(None, 2, 3) == [(1.0, 1.0, 1.0)] * 2
    assert normalise_spacing((1, 2), 3, 2) == [(1.0, 2.0)] * 3
    assert normalise_spacing(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 2, 2) == [(1.0, 2.0), (3.0, 4.0)]
    # what default_collate makes of a per-case tuple of floats: one (B,) tensor per axis
    collated = [torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]), torch.tensor([5.0, 6.0])]
    assert normalise_spacing(collated, 2, 3) == [(1.0, 2.0, 5.0), (3.0, 4.0, 6.0)]
    with pytest.raises(ValueError):
        normalise_spacing(torch.ones(3, 4), 2, 2)


# ------------------------------------------------------------------------------------- Dice object
def test_dice_score_hand_made_and_monai():
    pred = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target = torch.zeros_like(pred)
    pred[0, 0, 0, :] = 1  # 4 voxels of class 1
    target[0, 0, 0, :2] = 1  # 2 of them in the target
    pred[0, 0, 3, 3] = 2  # class 2 predicted, absent from the target: ignored
    m = DiceScore(num_classes=4)
    m.update(pred, target)
    assert m.last.shape == (1, 3)
    assert float(m.last[0, 0]) == pytest.approx(2 * 2 / (4 + 2))
    assert math.isnan(float(m.last[0, 1])) and math.isnan(float(m.last[0, 2]))
    assert float(m.compute()) == pytest.approx(2 / 3)

    rng = torch.Generator().manual_seed(0)
    p = torch.randint(0, 4, (3, 1, 10, 10), generator=rng)
    t = torch.randint(0, 4, (3, 1, 10, 10), generator=rng)
    m = DiceScore(num_classes=4)
    m.update(p[:2], t[:2])
    m.update(p[2:], t[2:])
    oh = lambda x: torch.nn.functional.one_hot(x[:, 0], 4).movedim(-1, 1)  # noqa: E731
    ref = compute_dice(oh(p), oh(t), include_background=False)
    assert torch.allclose(m._all_rows(), ref.float(), atol=1e-6)
    assert float(m.compute()) == pytest.approx(float(ref.mean(1).mean()), abs=1e-6)


def test_dice_score_multilabel():
    t = torch.zeros(1, 2, 4, 4)
    p = torch.zeros(1, 2, 4, 4)
    t[0, 0, :2] = 1
    p[0, 0, :1] = 1  # 4 of 8
    t[0, 1, :, :2] = 1
    p[0, 1, :, :2] = 1  # overlapping masks are fine in multilabel
    m = DiceScore(label_kind="multilabel")
    m.update(p, t)
    assert m.last[0].tolist() == pytest.approx([2 * 4 / 12, 1.0])


def test_foreground_masks():
    lab = torch.tensor([[[[0, 1], [2, 2]]]])
    m = foreground_masks(lab, 3)
    assert m.shape == (1, 2, 2, 2) and m.dtype == torch.bool
    assert m[0, 1].tolist() == [[False, False], [True, True]]
    assert foreground_masks(torch.tensor([[[[0.2, 0.7]]]]), label_kind="multilabel").tolist() == [[[[False, True]]]]


def test_distance_objects_skip_unable_cases():
    p = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    t = torch.zeros_like(p)
    p[0, 0, 2, 2] = 1
    t[0, 0, 2, 4] = 1
    t[1, 0, 1, 1] = 1  # case 1: empty prediction → unable
    for cls, expected in ((AverageHausdorffDistance, 2 * 0.5), (HausdorffDistance95, 2 * 0.5)):
        m = cls(num_classes=2)
        m.update(p, t, spacing=(3.0, 0.5))
        assert float(m.compute()) == pytest.approx(expected)
        assert m.num_unable() == 1


def _two_cases_one_empty_class():
    """Multiclass 8×8 maps, classes 1 and 2, single pixels (distances by hand).

    case 0: class 1 target (1, 1), pred (1, 3) → 2 px along axis 1; class 2 target = pred (5, 5) → 0.
    case 1: class 1 target (1, 1), pred (4, 1) → 3 px along axis 0; class 2 target (5, 5), pred empty.
    case 2: class 1 as case 0; class 2 absent from target and pred (nothing to find, nothing missed).
    """
    p = torch.zeros(3, 1, 8, 8, dtype=torch.long)
    t = torch.zeros_like(p)
    t[:, 0, 1, 1] = 1
    t[:2, 0, 5, 5] = 2
    p[0, 0, 1, 3] = 1
    p[0, 0, 5, 5] = 2
    p[1, 0, 4, 1] = 1
    p[2, 0, 1, 3] = 1
    return p, t


def test_avd_empty_policy_per_case_values_and_unable_counts():
    p, t = _two_cases_one_empty_class()
    spacing = (2.0, 0.5)  # axis 0: 2 mm, axis 1: 0.5 mm
    # skip_class (default): case 1 is scored on class 1 alone
    skip = AverageHausdorffDistance(num_classes=3)
    assert skip.empty_policy == "skip_class"
    skip.update(p, t, spacing=spacing)
    rows = skip.last.double()
    assert rows[0].tolist() == pytest.approx([2 * 0.5, 0.0])
    assert rows[1, 0].item() == pytest.approx(3 * 2.0) and math.isnan(rows[1, 1])
    assert rows[2, 0].item() == pytest.approx(1.0) and math.isnan(rows[2, 1])
    assert skip.per_case().tolist() == pytest.approx([0.5, 6.0, 1.0])
    assert skip.num_unable() == 0
    assert float(skip.compute()) == pytest.approx((0.5 + 6.0 + 1.0) / 3)
    # unable_case (the paper): case 1 is unable as a whole; case 2 is not (class 2 absent from both)
    paper = AverageHausdorffDistance(num_classes=3, empty_policy="unable_case")
    paper.update(p, t, spacing=spacing)
    rows = paper.last.double()
    assert rows[0].tolist() == pytest.approx([1.0, 0.0])
    assert torch.isnan(rows[1]).all()
    assert rows[2, 0].item() == pytest.approx(1.0) and math.isnan(rows[2, 1])
    per_case = paper.per_case()
    assert per_case[0].item() == pytest.approx(0.5) and math.isnan(per_case[1]) and per_case[2].item() == pytest.approx(1.0)
    assert paper.num_unable() == 1
    assert float(paper.compute()) == pytest.approx((0.5 + 1.0) / 2)
    # a case with every class empty is unable under both policies
    both = [AverageHausdorffDistance(num_classes=3, empty_policy=e) for e in ("skip_class", "unable_case")]
    for m in both:
        m.update(torch.zeros_like(p[:1]), t[:1], spacing=spacing)
        assert m.num_unable() == 1 and math.isnan(m.compute())


def test_avd_empty_policy_functional_and_multilabel():
    p, t = _two_cases_one_empty_class()
    pm, tm = foreground_masks(p, 3), foreground_masks(t, 3)
    assert unable_cases(pm, tm).tolist() == [False, True, False]
    skip = avd_per_class(pm, tm)
    paper = avd_per_class(pm, tm, empty_policy="unable_case")
    assert torch.equal(torch.isnan(paper), torch.tensor([[False, False], [True, True], [False, True]]))
    assert torch.equal(paper[0], skip[0]) and paper[2, 0] == skip[2, 0]
    # the same as multilabel channels (SCR's kind)
    m = AverageHausdorffDistance(label_kind="multilabel", empty_policy="unable_case")
    m.update(pm.float(), tm.float())
    assert m.num_unable() == 1 and m.per_case()[0].item() == pytest.approx((2 + 0) / 2)
    with pytest.raises(ValueError, match="empty_policy"):
        AverageHausdorffDistance(num_classes=3, empty_policy="unable")
    with pytest.raises(ValueError, match="empty_policy"):
        avd_per_class(pm, tm, empty_policy="paper")


def test_metric_rows_are_concatenated_across_processes():
    """compute() gathers the list state with ``cat`` (what it does under DDP), covering every rank."""
    other = torch.tensor([[0.0]])  # Dice 0 on the "other rank"

    def fake_gather(x, group=None):
        return [x, other.to(x)]

    m = DiceScore(num_classes=2, dist_sync_fn=fake_gather, distributed_available_fn=lambda: True)
    p = torch.ones(1, 1, 2, 2, dtype=torch.long)
    m.update(p, p)  # Dice 1 on "this rank"
    assert float(m.compute()) == pytest.approx(0.5)
    local = DiceScore(num_classes=2)
    local.update(p, p)
    assert float(local.compute()) == pytest.approx(1.0)


def test_flow_objects():
    flow = torch.randn(2, 2, 12, 12) * 1.5
    f = FoldingPercent()
    s = SDLogJ()
    f.update(flow)
    s.update(flow)
    assert torch.allclose(f.last[:, 0], folding_percent(flow))
    assert torch.allclose(s.last[:, 0], sdlogj(flow))
    assert float(f.compute()) == pytest.approx(float(folding_percent(flow).mean()))


# ------------------------------------------------------------------------------------- integration
def test_integrate_velocity_zero_steps_and_translation():
    v = torch.randn(1, 2, 8, 8)
    assert integrate_velocity(v, 0) is v
    # a constant velocity integrates to the same translation (away from the border)
    t = torch.zeros(1, 3, 16, 16, 16)
    t[:, 0] = 1.0
    t[:, 2] = -0.5
    phi = integrate_velocity(t, steps=5)
    assert torch.allclose(phi[..., 4:-4, 4:-4, 4:-4], t[..., 4:-4, 4:-4, 4:-4], atol=1e-5)


def test_integrated_field_folds_less_and_inverts():
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 2, 5, 5, generator=g) * 6
    v = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bicubic", align_corners=True)
    phi = integrate_velocity(v, steps=7)
    assert float(folding_percent(v)) > 1.0  # the field used as a displacement folds
    assert float(folding_percent(phi)) < 0.1 * float(folding_percent(v))
    # exp(-v) is the inverse of exp(v): composing them is close to the identity inside
    inv = integrate_velocity(-v, steps=7)
    composed = inv + warp(phi, inv)
    assert composed[..., 8:-8, 8:-8].abs().mean() < 0.1 * phi[..., 8:-8, 8:-8].abs().mean()
