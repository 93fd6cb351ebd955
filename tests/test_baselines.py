"""Table II baselines: their losses on tiny tensors against hand-computed values, and one
fast_dev_run of every baseline module on the phantoms (2D 32², 3D 16³, small widths)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from gemini_pl.data import PhantomDataModule
from gemini_pl.modules.baselines import (
    CPS, UAMT, DeepAtlas, DenseCL, GeminiSemiPosSchedule, PixPro, VADeR, VMAtlas, anatomy_loss, cps_loss,
    ema_update, info_nce, majority_vote, sigmoid_rampup,
)
from gemini_pl.modules.baselines.densecl import match_by_similarity
from gemini_pl.modules.baselines.pixpro import pixel_propagation
from gemini_pl.modules.baselines.uamt import predictive_entropy, uncertainty_masked_mse


# ------------------------------------------------------------------ losses, by hand
def test_ema_update_exact():
    s, t = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([[1.0, 2.0]])); s.bias.fill_(3.0)
        t.weight.copy_(torch.tensor([[0.0, 0.0]])); t.bias.fill_(1.0)
    a = ema_update(t, s, 0.9)
    assert a == 0.9
    assert torch.allclose(t.weight, torch.tensor([[0.1, 0.2]]))
    assert torch.allclose(t.bias, torch.tensor([0.9 * 1 + 0.1 * 3]))
    # warm start: step 0 copies the student, step 1 averages half-half
    assert ema_update(t, s, 0.99, step=0) == 0.0
    assert torch.allclose(t.weight, s.weight)
    assert ema_update(t, s, 0.99, step=1) == 0.5


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0


def test_cps_loss_hand_computed():
    # one pixel, two classes: net 1 logits (2, 0), net 2 logits (0, 1)
    l1 = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    l2 = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    # net 1 learns net 2's label 1: −log softmax(l1)_1 ; net 2 learns label 0: −log softmax(l2)_0
    expect = -math.log(math.exp(0) / (math.exp(2) + 1)) - math.log(1 / (1 + math.exp(1)))
    assert float(cps_loss(l1, l2)) == pytest.approx(expect, rel=1e-6)
    # pseudo-labels carry no gradient into the other net
    l1r, l2r = l1.clone().requires_grad_(), l2.clone().requires_grad_()
    F.cross_entropy(l1r, l2r.detach().argmax(1)).backward()
    assert l2r.grad is None
    # multilabel: BCE against the other's > 0 mask
    m1, m2 = torch.tensor([[1.0]]).view(1, 1, 1, 1), torch.tensor([[-1.0]]).view(1, 1, 1, 1)
    expect = -math.log(1 - 1 / (1 + math.exp(-1))) - math.log(1 / (1 + math.exp(1)))
    assert float(cps_loss(m1, m2, "multilabel")) == pytest.approx(expect, rel=1e-6)


def test_uamt_entropy_and_masked_mse():
    p = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)
    assert float(predictive_entropy(p, "multiclass")) == pytest.approx(math.log(2), rel=1e-5)
    ps = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).T.reshape(1, 2, 1, 2)   # two pixels
    pt = torch.tensor([[0.0, 1.0], [0.5, 0.5]]).T.reshape(1, 2, 1, 2)
    mask = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    # pixel 1: (1+1)=2 over 2 channels, pixel 2: 0 → 2 / (2·2)
    assert float(uncertainty_masked_mse(ps, pt, mask)) == pytest.approx(0.5)
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert float(uncertainty_masked_mse(ps, pt, mask)) == pytest.approx(0.0)


def test_majority_vote_and_anatomy_loss():
    a = torch.tensor([[0, 1, 2]]).view(1, 1, 1, 3)
    b = torch.tensor([[0, 1, 1]]).view(1, 1, 1, 3)
    c = torch.tensor([[1, 1, 2]]).view(1, 1, 1, 3)
    assert majority_vote([a, b, c], 3).argmax(1).flatten().tolist() == [0, 1, 2]
    y = F.one_hot(torch.tensor([[0, 1]]), 2).movedim(-1, 1).float().view(1, 2, 1, 2)
    assert float(anatomy_loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    # foreground channel only: p = (0, 0) vs y = (0, 1): 1 − (0 + 1)/(1 + 0 + 1) = 0.5
    p = torch.zeros_like(y)
    assert float(anatomy_loss(y, p)) == pytest.approx(0.5)


def test_info_nce_and_matching_and_ppm():
    q = torch.eye(3)
    expect = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + 2))
    assert float(info_nce(q, q, 0.5)) == pytest.approx(expect, rel=1e-6)
    b1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 2)   # points (1,0), (0,1)
    b2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 2, 2)   # (0,1), (1,0)... channel-major
    assert match_by_similarity(b2, b1).tolist() == [[1, 0]]
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # two orthogonal points
    g = torch.tensor([[2.0, 3.0], [5.0, 7.0]]).view(1, 2, 1, 2)
    assert torch.allclose(pixel_propagation(x, g), g)  # cos = 0 across points, 1 on itself


def test_pos_schedule_half_way():
    m = GeminiSemiPosSchedule(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=6,
                              pos_start_fraction=0.5, lambda_pos=0.1)
    assert [m.pos_weight_at(e, 4) for e in range(4)] == [0.0, 0.0, 0.1, 0.1]
    m.hparams.pos_start_fraction = 0.0
    assert m.pos_weight_at(0, 4) == 0.1


# ------------------------------------------------------------------ fast_dev_run on phantoms
def _dm(root, dims, mode):
    return PhantomDataModule(
        root=str(root), dataset="phantom2d" if dims == 2 else "phantom3d", spatial_dims=dims, size=32 if dims == 2 else 16,
        num_unlabeled=6 if dims == 2 else 4, num_labeled=2, num_test=4 if dims == 2 else 3, batch_size=1,
        train_mode=mode, eval_mode="cases" if mode != "pairs" else "pairs", num_val_pairs=2, labeled_batch_size=1,
    )


def _fit_test(model, dm, tmp_path, test=True):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, fast_dev_run=1)
    trainer.fit(model, datamodule=dm)
    if test:
        out = trainer.test(model, datamodule=dm, verbose=False)
        assert math.isfinite(out[0]["test/seg_dice"])


SEG = dict(widths=SMALL_WIDTHS, num_classes=6, lr=1e-3)


@pytest.mark.parametrize("dims", [3])
def test_uamt_fast_dev_run(phantom_root, tmp_path, dims):
    m = UAMT(spatial_dims=dims, uncertainty_passes=2, rampup_steps=0, **SEG)
    before = [p.clone() for p in m.teacher.parameters()]
    _fit_test(m, _dm(phantom_root, dims, "pairs+labeled"), tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.teacher.parameters()))  # the EMA moved


def test_cps_fast_dev_run(phantom_root, tmp_path):
    m = CPS(spatial_dims=2, **SEG)
    w2 = [p.clone() for p in m.net2.parameters()]
    _fit_test(m, _dm(phantom_root, 2, "pairs+labeled"), tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(w2, m.net2.parameters()))


@pytest.mark.parametrize("dims", [3])
def test_deepatlas_fast_dev_run(phantom_root, tmp_path, dims):
    _fit_test(DeepAtlas(spatial_dims=dims, deformer_widths=SMALL_DEFORMER, **SEG), _dm(phantom_root, dims, "pairs+labeled"), tmp_path)


@pytest.mark.parametrize("dims", [2])
def test_vm_atlas_fast_dev_run(phantom_root, tmp_path, dims):
    m = VMAtlas(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=6, lr=1e-3)
    dm = _dm(phantom_root, dims, "pairs")
    dm.eval_mode = "cases"
    _fit_test(m, dm, tmp_path)
    assert m.atlases is not None and len(m.atlases) == 2


@pytest.mark.parametrize("cls", [DenseCL, PixPro, VADeR])
def test_dcrl_fast_dev_run_and_finetune_init(phantom_root, tmp_path, cls):
    from gemini_pl.modules import Segmentation

    m = cls(spatial_dims=2, widths=SMALL_WIDTHS, proj_dim=16, grid=8, num_samples=16, lr=1e-3)
    before = [p.clone() for p in m.net.backbone.parameters()]
    _fit_test(m, _dm(phantom_root, 2, "pairs"), tmp_path, test=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.backbone.parameters()))
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": m.state_dict()}, ckpt)
    # the Segmentation module's own init_from path (run at fit start), not a manual load
    seg = Segmentation(spatial_dims=2, init_from=str(ckpt), **SEG)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=0, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(seg, datamodule=_dm(phantom_root, 2, "labeled"))
    for a, b in zip(seg.net.backbone.parameters(), m.net.backbone.parameters()):
        assert torch.equal(a, b)
    assert sorted(seg.transfer_report.loaded) == sorted(f"backbone.{k}" for k in m.net.backbone.state_dict())


# ------------------------------------------------------------------ W&B media (no W&B needed)
def test_wandb_media_images_and_noop_without_wandb():
    from gemini_pl.callbacks import WandbMedia
    from gemini_pl.callbacks.wandb_media import jacobian_image
    from gemini_pl.modules import Registration, Segmentation

    cb = WandbMedia()
    seg = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3).eval()
    seg.setup_segmentation()
    x, y = torch.rand(1, 1, 32, 32), torch.randint(0, 3, (1, 1, 32, 32))
    media = cb.media(seg, {"image": x, "label": y})
    assert set(media) == {"media/ground_truth", "media/prediction"}
    assert media["media/prediction"][0].shape == (3, 32, 32)
    reg = Registration(spatial_dims=3, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=3).eval()
    media = cb.media(reg, {"image_a": torch.rand(1, 1, 16, 16, 16), "image_b": torch.rand(1, 1, 16, 16, 16)})
    assert {"media/warped_moving", "media/deformation_grid", "media/jacobian_determinant"} <= set(media)
    assert all(im.shape == (3, 16, 16) and 0 <= float(im.min()) and float(im.max()) <= 1 for ims in media.values() for im in ims)
    det = torch.tensor([[1.0, -0.5]])
    img = jacobian_image(det)
    assert img[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and img[:, 0, 1].tolist() == [1.0, 0.0, 0.0]  # white at 1, red where folded

    class _T:  # a trainer without a W&B logger: nothing is kept, nothing logged
        loggers, sanity_checking = [], False
    cb.on_validation_batch_end(_T(), seg, None, {"image": x, "label": y}, 0)
    assert cb._batch is None
    cb.on_validation_end(_T(), seg)
