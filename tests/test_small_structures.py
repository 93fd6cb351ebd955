"""The class-balanced cross-entropy (``class_balanced_ce``): hand-computed values, the gradient a small
structure receives under the published loss and with the balanced term, and its use by the modules."""

from __future__ import annotations

import math

import pytest
import torch

from gemini_pl.losses import class_balanced_ce, softmax_seg_loss
from gemini_pl.metrics import one_hot_labels


def _logits(p: list[list[float]]) -> torch.Tensor:
    """(1, K, S) logits whose softmax is ``p`` (K lists of S probabilities)."""
    return torch.log(torch.tensor(p, dtype=torch.float64)).unsqueeze(0)


def test_class_balanced_ce_hand_computed():
    # K = 2, S = 4; class 1 at the last pixel only; p(class 1) = 0.2, 0.2, 0.2, 0.6
    logits = _logits([[0.8, 0.8, 0.8, 0.4], [0.2, 0.2, 0.2, 0.6]])
    y = torch.tensor([[[1.0, 1, 1, 0], [0, 0, 0, 1]]], dtype=torch.float64)
    ce0 = -math.log(0.8 + 1e-6)           # mean over class 0's three pixels
    ce1 = -math.log(0.6 + 1e-6)           # class 1's one pixel
    assert float(class_balanced_ce(logits, y)) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    # the published mean CE gives the small class a quarter of the big one's weight, over K·S
    plain = float(-(y * torch.log(torch.softmax(logits, 1) + 1e-6)).mean())
    assert plain == pytest.approx((3 * ce0 + ce1) / 8, rel=1e-6)


def test_class_balanced_ce_equal_classes_is_k_times_the_mean_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    lab = torch.arange(3).repeat_interleave(8).reshape(1, 1, 6, 4).repeat(2, 1, 1, 1)   # 16 pixels of each class
    y = one_hot_labels(lab, 3).double()
    plain = -(y * torch.log(torch.softmax(logits, 1) + 1e-6)).mean()
    assert float(class_balanced_ce(logits, y)) == pytest.approx(3 * float(plain), rel=1e-6)


def test_class_balanced_ce_leaves_absent_classes_out_and_pools_the_batch():
    logits = _logits([[0.5, 0.5], [0.25, 0.5], [0.25, 0.0 + 1e-30]]).repeat(2, 1, 1)
    # class 2 absent everywhere; class 1 only in the second sample
    y = torch.zeros(2, 3, 2, dtype=torch.float64)
    y[0, 0] = 1
    y[1, 0, 0], y[1, 1, 1] = 1, 1
    ce0 = -math.log(0.5 + 1e-6)            # three pixels of class 0, each p = 0.5
    ce1 = -math.log(0.5 + 1e-6)            # one pixel of class 1 (sample 1), p = 0.5
    assert float(class_balanced_ce(logits, y)) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_class_balanced_ce_pools_a_class_over_the_batch_before_averaging():
    # class 1: one pixel in sample 0 (p = 0.5), three in sample 1 (p = 0.8); class 0 everywhere else
    p1 = torch.tensor([[0.5, 0.1, 0.1, 0.1], [0.8, 0.8, 0.8, 0.1]], dtype=torch.float64)
    logits = torch.log(torch.stack([1 - p1, p1], dim=1))
    y1 = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float64)
    y = torch.stack([1 - y1, y1], dim=1)
    ce1 = (-math.log(0.5 + 1e-6) - 3 * math.log(0.8 + 1e-6)) / 4        # pooled: 4 pixels of class 1
    ce0 = -math.log(0.9 + 1e-6)                                          # 4 pixels of class 0, each p = 0.9
    assert float(class_balanced_ce(logits, y)) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    per_sample = (-math.log(0.5 + 1e-6) - math.log(0.8 + 1e-6)) / 2      # what a per-sample mean would give
    assert abs(ce1 - per_sample) > 0.05


def test_class_balanced_ce_multilabel_hand_computed():
    logits = torch.logit(torch.tensor([[[0.9, 0.3, 0.2, 0.4]]], dtype=torch.float64))
    y = torch.tensor([[[1.0, 0, 0, 0]]], dtype=torch.float64)
    pos = -math.log(0.9 + 1e-6)
    neg = -(math.log(0.7 + 1e-6) + math.log(0.8 + 1e-6) + math.log(0.6 + 1e-6)) / 3
    assert float(class_balanced_ce(logits, y, multilabel=True)) == pytest.approx(0.5 * (pos + neg), rel=1e-6)


def test_class_balanced_ce_soft_targets_weigh_the_pixels():
    logits = _logits([[0.5, 0.9], [0.5, 0.1]])
    y = torch.tensor([[[0.5, 1.0], [0.5, 0.0]]], dtype=torch.float64)   # a bilinearly warped one-hot
    ce0 = (0.5 * -math.log(0.5 + 1e-6) + 1.0 * -math.log(0.9 + 1e-6)) / 1.5
    ce1 = -math.log(0.5 + 1e-6)
    assert float(class_balanced_ce(logits, y)) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def _small_structure_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A 64² label map: background, a 40×40 square (class 1) and a 3×3 structure (class 2); logits of a
    network that has "lost" the structure: it predicts class 1 there with p(class 2) ≈ e^-8."""
    lab = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    lab[..., 10:50, 10:50] = 1
    lab[..., 55:58, 55:58] = 2
    logits = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    logits[:, 0] = 4.0 * (lab[:, 0] == 0)
    logits[:, 1] = 4.0 * (lab[:, 0] >= 1)       # the structure is predicted as class 1
    logits[:, 2] = -4.0
    return logits, lab


def test_lost_small_structure_gets_a_gradient_only_from_the_balanced_term():
    logits, lab = _small_structure_scene()
    y = one_hot_labels(lab, 3).double()
    small = lab[0, 0] == 2

    def push(balanced: float) -> tuple[float, float]:
        x = logits.clone().requires_grad_(True)
        softmax_seg_loss(x, y, 100.0, balanced).backward()
        g = x.grad[0, 2]                                     # d loss / d logit of class 2
        return float(-g[small].mean()), float(g.abs().max())

    up_published, _ = push(0.0)
    up_balanced, _ = push(1.0)
    # published: CE gives each structure pixel (1 − p)/(N·K·S) with K·S = 3·4096; the Dice term
    # (2Σyp + 1)/(Σy² + Σp² + 1) ≈ (1 + 2Σyp)/10 gives (2/10)/(N·K) through the softmax's p(1 − p):
    # both scale with how little is left, and the Dice part vanishes with p
    p = float(torch.softmax(torch.tensor([0.0, 4.0, -4.0], dtype=torch.float64), 0)[2])
    assert up_published == pytest.approx(100 * ((1 - p) / (3 * 4096) + 0.2 / 3 * p * (1 - p)), rel=0.02)
    # balanced: + λ·(1 − p)/|structure| / (classes present) = 100·1/9/3 on each structure pixel
    assert up_balanced - up_published == pytest.approx(100 / 9 / 3, rel=0.01)
    assert up_balanced > 300 * up_published


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_segmentation_module_adds_the_balanced_term(weight):
    from gemini_pl.modules import Segmentation

    logits, lab = _small_structure_scene()
    m = Segmentation(spatial_dims=2, num_classes=3, label_kind="multiclass", class_balanced_ce=weight)
    got = float(m.seg_loss(logits.float(), lab))
    y = one_hot_labels(lab, 3).float()
    want = float(softmax_seg_loss(logits.float(), y, 100.0)) + 100.0 * weight * float(class_balanced_ce(logits.float(), y))
    assert got == pytest.approx(want, rel=1e-5)


def test_brbs_supervised_step_adds_the_balanced_term(monkeypatch):
    from gemini_pl.modules.baselines import brbs as brbs_mod

    calls = []
    real = brbs_mod.class_balanced_ce

    calls_value = []

    def spy(logits, target, multilabel=False):
        calls.append(tuple(logits.shape))
        out = real(logits, target, multilabel)
        calls_value.append(float(out.detach()))
        return out

    monkeypatch.setattr(brbs_mod, "class_balanced_ce", spy)
    torch.manual_seed(0)
    batch = {"image": torch.rand(1, 1, 32, 32), "label": torch.randint(0, 3, (1, 1, 32, 32)),
             "image_a": torch.rand(1, 1, 32, 32), "image_b": torch.rand(1, 1, 32, 32)}
    widths = [8] * 9
    totals = {}
    for weight, n_calls in ((0.0, 0), (2.0, 1)):
        calls.clear()
        torch.manual_seed(1)                   # the same weights and augmentation draws for both
        m = brbs_mod.BRBS(spatial_dims=2, num_classes=3, label_kind="multiclass", class_balanced_ce=weight,
                          widths=widths, deformer_widths=[8, 8, 8, 8, 8], aug_seed=0)
        m.label_kind = "multiclass"
        totals[weight] = m.seg_losses(batch)["total"]
        assert len(calls) == n_calls
    # the supervised term gains λ_seg·w·CE_bal of the same logits and soft label, nothing else changes
    assert float(totals[2.0] - totals[0.0]) == pytest.approx(1.0 * 2.0 * calls_value[0], rel=1e-4)


def test_negative_or_infinite_weight_is_a_one_line_error():
    from gemini_pl.errors import ConfigError
    from gemini_pl.modules import Segmentation

    for bad in (-0.1, math.inf):
        m = Segmentation(spatial_dims=2, num_classes=3, label_kind="multiclass", class_balanced_ce=bad)
        with pytest.raises(ConfigError, match=rf"model.class_balanced_ce must be a finite number >= 0 \(0 = the published loss\), got {bad}"):
            m.seg_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))
