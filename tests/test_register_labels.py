"""Registration's label terms: a pair's label maps are one-hot encoded with one class count."""

from __future__ import annotations

import torch


def test_registration_pair_one_hot_uses_one_class_count():
    """Without num_classes, a pair whose labels reach different values (moving 0–1, fixed 0–2) is
    one-hot encoded with one class count for both (3): the loss equals the one with num_classes=3,
    where the old per-label count (2 vs 3 channels) could not compare the maps."""
    from conftest import SMALL_DEFORMER, SMALL_WIDTHS
    from gemini_pl.modules import Registration

    torch.manual_seed(0)
    img_m, img_f = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    lab_m = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    lab_m[..., 4:12, 4:12] = 1
    lab_f = lab_m.clone()
    lab_f[..., 6:10, 6:10] = 2
    losses = []
    for k in (None, 3):
        torch.manual_seed(1)
        model = Registration(spatial_dims=2, num_classes=k, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, lambda_dice=1.0)
        model.eval()
        with torch.no_grad():
            losses.append(model.pair_loss(img_m, img_f, lab_m, lab_f))
    assert torch.isfinite(losses[0]["dice"]) and torch.equal(losses[0]["dice"], losses[1]["dice"])
    assert torch.equal(losses[0]["total"], losses[1]["total"])
    assert model.label_classes(lab_m) == 3   # num_classes given: no read of the label
