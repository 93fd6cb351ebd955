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
    # cos = 0 across points, 1 on itself; PixPro's values are L2-normalised (featprop: F.normalize(feat_value))
    assert torch.allclose(pixel_propagation(x, g), F.normalize(g, dim=1))


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

    extra = {} if cls is PixPro else {"queue_size": 64}
    m = cls(spatial_dims=2, widths=SMALL_WIDTHS, proj_dim=16, grid=8, num_samples=16, lr=1e-3, **extra)
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


# ------------------------------------------------------------------ each baseline as its own paper has it
class _FakeTrainer:
    """What the modules read from a trainer: the step, the run's length, the logging cadence."""

    def __init__(self, global_step=0, total=0):
        self.global_step, self.estimated_stepping_batches = global_step, total
        self.log_every_n_steps, self.world_size = 50, 1


def _semi_batch(n=1, size=16, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, size, size, generator=g), "label": torch.randint(0, k, (n, 1, size, size), generator=g),
            "image_a": torch.rand(n, 1, size, size, generator=g), "image_b": torch.rand(n, 1, size, size, generator=g)}


def test_semi_baselines_keep_their_papers_weight_ratios():
    """Supervised and unsupervised weights as each paper has them (not GEMINI's ×100 supervised term):
    UA-MT 0.5·(CE + Dice) + 0.1·consistency, CPS 1·sup per network + 1.5·CPS (no ramp-up), DeepAtlas
    λ_sp 3 : λ_a 2 : similarity 1."""
    u = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3).hparams
    assert (u.lambda_seg, u.lambda_unsup) == (0.5, 0.1) and u.lambda_unsup / u.lambda_seg == pytest.approx(0.2)
    c = CPS(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3).hparams
    assert (c.lambda_seg, c.lambda_unsup, c.rampup_steps) == (1.0, 1.5, 0)
    d = DeepAtlas(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=3).hparams
    assert (d.lambda_seg, d.lambda_anatomy, d.lambda_unsup, d.lambda_smooth, d.rampup_steps) == (3.0, 2.0, 1.0, 0.4, 0)
    # the supervised term is λ_seg·(CE + Dice) of the shared loss, computed independently here
    from gemini_pl.losses import softmax_seg_loss
    from gemini_pl.metrics import one_hot_labels

    m = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3, uncertainty_passes=1)
    b = _semi_batch()
    with torch.no_grad():
        sup, _ = m.semi_losses(b)
        expect = softmax_seg_loss(m.net(b["image"]), one_hot_labels(b["label"], 3), 1.0) * 0.5
    assert float(sup["total"]) == pytest.approx(float(expect), rel=1e-5)


def test_uamt_rampups_span_the_whole_run_and_scale_with_the_budget():
    """UA-MT ramps the consistency weight and the uncertainty threshold over its whole run (6000 of
    6000 iterations); ``rampup_steps: null`` takes the run's length from the trainer."""
    m = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    m._trainer = _FakeTrainer(global_step=20000, total=40000)
    assert m.rampup_length() == 40000
    assert m.unsup_weight() == pytest.approx(0.1 * math.exp(-5 * 0.5 ** 2))
    m._trainer = _FakeTrainer(global_step=15, total=30)   # the phantom budget: 2 epochs × 15 iterations
    assert m.rampup_length() == 30 and m.unsup_weight() == pytest.approx(0.1 * math.exp(-5 * 0.25))


def test_uamt_noises_only_the_teachers_input():
    """UA-MT's student predicts the unlabeled images as they are (``outputs = model(volume_batch)``);
    only the teacher's passes get the clipped Gaussian noise."""
    m = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3, uncertainty_passes=2)
    seen = {"net": [], "teacher": []}
    m.net.register_forward_hook(lambda mod, inp, out: seen["net"].append((inp[0].detach().clone(), out.detach().clone())))
    m.teacher.register_forward_pre_hook(lambda mod, inp: seen["teacher"].append(inp[0].detach().clone()))
    b = _semi_batch()
    unlabeled = torch.cat([b["image_a"], b["image_b"]], 0)
    m.unsupervised_loss(unlabeled, b)
    (student_in, student_out), = seen["net"]
    assert torch.equal(student_in, unlabeled)
    with torch.no_grad():
        assert torch.equal(student_out, m.net(unlabeled))   # the student's prediction is the un-noised output
    assert len(seen["teacher"]) == 3 and all(not torch.equal(t, unlabeled) for t in seen["teacher"])
    assert all(float((t - unlabeled).abs().max()) <= 0.2 + 1e-6 for t in seen["teacher"])


def test_uamt_first_ema_update_copies_the_student():
    """UA-MT's ``update_ema_variables(model, ema_model, 0.99, iter_num)`` runs with iter_num 0 after the
    first step: α = min(1 − 1/1, 0.99) = 0, the teacher becomes the student."""
    m = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.zero_()
    m._trainer = _FakeTrainer(global_step=1, total=10)
    m.on_train_batch_end(None, None, 0)
    assert all(torch.equal(t, s) for t, s in zip(m.teacher.parameters(), m.net.parameters()))


def test_cps_loss_is_one_pixel_mean_over_labeled_and_unlabeled():
    """CPS: ``criterion(cat([pred_sup_l, pred_unsup_l]), max_r) + criterion(cat([…r]), max_l)`` —
    one mean over the pixels of the labeled and unlabeled images together."""
    m = CPS(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    b = _semi_batch()
    _, unsup = m.semi_losses(b)
    with torch.no_grad():
        unl = torch.cat([b["image_a"], b["image_b"]], 0)
        r1 = torch.cat([m.net(b["image"]), m.net(unl)], 0).movedim(1, -1).reshape(-1, 3)
        r2 = torch.cat([m.net2(b["image"]), m.net2(unl)], 0).movedim(1, -1).reshape(-1, 3)
        expect = F.cross_entropy(r1, r2.argmax(1)) + F.cross_entropy(r2, r1.argmax(1))
    assert float(unsup["total"]) == pytest.approx(float(expect), rel=1e-5)


def test_info_nce_against_a_queue_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    # row 0: logits (q·k, q·n1, q·n2)/τ = (2, 0, −2); row 1: (0, 2, 0)
    row0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    row1 = -math.log(1 / (1 + math.exp(2) + 1))
    assert float(info_nce(q, k, t, negatives=neg)) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert float(info_nce(q, k, t, negatives=neg, weight=torch.tensor([1.0, 0.0]))) == pytest.approx(row0, rel=1e-6)


def test_feature_queue_is_a_device_ring_buffer_in_the_state_dict():
    from gemini_pl.modules.baselines import FeatureQueue

    qu = FeatureQueue(3, 2)
    assert set(qu.state_dict()) == {"keys", "ptr"}
    before = qu.keys.clone()
    qu.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert int(qu.ptr) == 2 and torch.equal(qu.keys[:2], torch.eye(2)) and torch.equal(qu.keys[2], before[2])
    qu.push(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))   # wraps: slots 2, 0
    assert int(qu.ptr) == 1 and qu.keys.tolist() == [[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]
    qu.push(torch.tensor([[float("nan"), 0.0]]))         # a non-finite key leaves the queue as it was
    assert int(qu.ptr) == 2 and qu.keys.tolist() == [[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]


def test_densecl_dense_loss_by_hand():
    """Each query cell's positive is the key cell of the most similar backbone feature; negatives
    come from the queue of averaged dense keys."""
    from gemini_pl.modules.baselines.densecl import dense_nce

    q_grid = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T[None]   # (1, D, P): points (1, 0), (0, 1)
    k_grid = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).T[None]   # points (0, 1), (1, 0)
    q_b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T[None]
    k_b = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).T[None]      # swapped: q 0 ↔ k 1, q 1 ↔ k 0 → positives cos 1
    neg = torch.tensor([[-1.0, 0.0]])
    row0 = -math.log(math.e / (math.e + math.exp(-1)))       # q (1, 0)·n = −1
    row1 = -math.log(math.e / (math.e + 1))                   # q (0, 1)·n = 0
    assert float(dense_nce(q_grid, k_grid, q_b, k_b, neg, 1.0)) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_pixpro_positives_within_the_distance_threshold():
    """View 1 the whole image, view 2 its upper-right quarter (crop centre (0.5, 0.5), half size), a
    2 × 2 grid: cells whose centres in the image are closer than 0.7 × the larger cell diagonal (√2)."""
    from gemini_pl.modules.baselines.pixpro import positive_pairs

    t1 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    t2 = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]])
    pos = positive_pairs(t1, t2, [2, 2], 0.7)[0]
    # view-1 cells (x, y): 0 (−½, −½), 1 (½, −½), 2 (−½, ½), 3 (½, ½); view-2 cells ¼ / ¾ likewise
    assert pos.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]
    assert positive_pairs(t1, t1, [2, 2], 0.7)[0].tolist() == torch.eye(4).tolist()   # same crop: the cell itself
    flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])                          # mirrored x: cells swap
    assert positive_pairs(t1, flip, [2, 2], 0.7)[0].tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]


def test_pixpro_loss_and_momentum_schedule_by_hand():
    from gemini_pl.modules.baselines.pixpro import pixpro_loss

    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T[None]
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]]).T[None]
    pos = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # positives: cos(y0, t0) = 1, cos(y0, t1) = 0.6, cos(y1, t1) = 0.8 → −2 · 2.4 / 3
    assert float(pixpro_loss(y, t, pos)) == pytest.approx(-2 * 2.4 / 3, rel=1e-5)
    m = PixPro(spatial_dims=2, widths=SMALL_WIDTHS, proj_dim=16)
    m._trainer = _FakeTrainer(total=100)
    assert [m.momentum_at(s) for s in (0, 50, 100)] == pytest.approx([0.99, 0.995, 1.0])


def test_views_are_crops_with_known_correspondence():
    from gemini_pl.modules.baselines.views import crop_affines, gather_points, overlap_points, photometric
    from gemini_pl.spatial import apply_affine

    g = torch.Generator().manual_seed(0)
    th = crop_affines(64, 2, (0.2, 1.0), generator=g)
    side, centre = th[:, :, :2].diagonal(dim1=1, dim2=2).abs(), th[:, :, 2]
    assert ((centre.abs() + side) <= 1 + 1e-6).all() and (side.prod(1) >= 0.2 - 1e-5).all() and (side <= 1).all()
    # a view of a linear ramp shows the ramp at the image point θ·u
    h = w = 9
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    view = apply_affine((2 * xs + 3 * ys)[None, None].expand(64, 1, h, w).contiguous(), th)
    u = torch.stack([xs, ys], -1)
    p = torch.einsum("nij,hwj->nhwi", th[:, :, :2], u) + th[:, None, None, :, 2]
    assert torch.allclose(view[:, 0], 2 * p[..., 0] + 3 * p[..., 1], atol=1e-4)
    # points of the overlap: both views see the same image point
    t1, t2 = crop_affines(8, 3, (0.3, 1.0), generator=g), crop_affines(8, 3, (0.3, 1.0), generator=g)
    u1, u2, valid = overlap_points(t1, t2, 5, g)
    p1 = torch.einsum("nij,nmj->nmi", t1[:, :, :3], u1) + t1[:, None, :, 3]
    p2 = torch.einsum("nij,nmj->nmi", t2[:, :, :3], u2) + t2[:, None, :, 3]
    ok = valid.bool()
    assert ok.any() and torch.allclose(p1[ok], p2[ok], atol=1e-5) and (u1.abs() <= 1).all()
    apart = overlap_points(torch.tensor([[[0.2, 0, -0.8], [0, 0.2, 0.0]]]), torch.tensor([[[0.2, 0, 0.8], [0, 0.2, 0.0]]]), 2, g)
    assert float(apart[2][0]) == 0.0
    # nearest-voxel gather (x, y order): the value at (x = 1, y = −1) of a 3 × 3 map is row 0, column 2
    t = torch.arange(9.0).view(1, 1, 3, 3)
    assert gather_points(t, torch.tensor([[[1.0, -1.0], [0.0, 0.0]]])).tolist() == [[[2.0, 4.0]]]
    # photometric: off → unchanged; blur keeps a constant image; brightness alone is a gain in [0.6, 1.4]
    x = torch.rand(4, 1, 8, 8, generator=g) + 0.5
    assert torch.equal(photometric(x, g, 0.4, 0.4, 0.0, 0.0, (0.1, 2.0), 0.0), x)
    c = torch.full((2, 1, 8, 8), 0.3)
    assert torch.allclose(photometric(c, g, 0.0, 0.0, 0.0, 1.0, (0.5, 2.0), 0.0), c, atol=1e-6)
    gain = photometric(x, g, 0.4, 0.0, 1.0, 0.0, (0.1, 2.0), 0.0) / x
    assert torch.allclose(gain, gain[:, :, :1, :1].expand_as(gain), atol=1e-5) and ((gain >= 0.6) & (gain <= 1.4)).all()


@pytest.mark.parametrize("cls", [DenseCL, VADeR])
def test_dcrl_queues_and_momentum_encoder_change_after_a_step(phantom_root, tmp_path, cls):
    """The queues are registered buffers saved in ``state_dict`` that the step fills (2 images per
    iteration); the key encoder is an EMA of the online parts (moved, not equal to them)."""
    m = cls(spatial_dims=2, widths=SMALL_WIDTHS, proj_dim=16, grid=8, num_samples=16, queue_size=64, lr=1e-3)
    queues = [name for name in ("queue", "queue_dense") if hasattr(m, name)]
    assert all(f"{q}.keys" in m.state_dict() and f"{q}.ptr" in m.state_dict() for q in queues)
    before = {q: getattr(m, q).keys.clone() for q in queues}
    key_before = [p.clone() for p in m.key_encoder["backbone"].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(key_before, m.net.backbone.parameters()))   # starts as a copy
    _fit_test(m, _dm(phantom_root, 2, "pairs"), tmp_path, test=False)
    per_step = 2 * (16 if cls is VADeR else 1)
    for q in queues:
        assert int(getattr(m, q).ptr) == per_step and not torch.equal(getattr(m, q).keys, before[q])
        assert torch.equal(m.state_dict()[f"{q}.keys"], getattr(m, q).keys)
    key_after = list(m.key_encoder["backbone"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(key_before, key_after))
    assert any(not torch.equal(a, b) for a, b in zip(key_after, m.net.backbone.parameters()))
    assert not any(p.requires_grad for p in m.key_encoder.parameters())


def test_table2_footnotes_name_what_each_row_keeps_simplified():
    from gemini_pl.reproduce.paper import NOTES
    from gemini_pl.reproduce.table import render_csv, render_markdown

    rows = [{"row": "U-Net Five", "method": "unet_five"}, {"row": "UA-MT", "method": "uamt"}, {"row": "MASSL", "method": None},
            {"row": "DenseCL", "method": "finetune_five", "pretrain": "densecl_pre"}]
    md = render_markdown(rows, [], {})
    line = {name: next(ln for ln in md.splitlines() if f"| {name} |" in ln) for name in ("U-Net Five", "UA-MT", "DenseCL")}
    assert line["UA-MT"].rstrip().endswith("| [1] |") and line["DenseCL"].rstrip().endswith("| [2] |")
    assert line["U-Net Five"].rstrip().endswith("|  |")
    notes = md.split("Notes (")[1]
    assert f"- [1] UA-MT: {NOTES['UA-MT']}" in notes and f"- [2] DenseCL: {NOTES['DenseCL']}" in notes
    assert "65,536" in NOTES["DenseCL"] and "V-Net" in NOTES["UA-MT"]
    assert set(NOTES) >= {"UA-MT", "CPS", "VoxelMorph (VM)", "DeepAtlas", "VADeR", "DenseCL", "PixPro"}
    assert NOTES["DenseCL"] in render_csv(rows, [])
