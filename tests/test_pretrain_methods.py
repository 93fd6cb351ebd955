"""The pre-training rows of Tables III/VI (gemini_pl.modules.mip): each loss against a value computed by
hand on tiny tensors, a fast_dev_run of every method on the phantoms, and the fine-tuning start:
``Segmentation(init_from=<checkpoint>)`` holds exactly the pre-trained backbone."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, SMALL_WIDTHS
from gemini_pl.augment.corruption import CorruptionConfig
from gemini_pl.augment.painting import box_mask, genesis_corrupt, outpaint, random_boxes
from gemini_pl.data import PhantomDataModule
from gemini_pl.modules.mip import (
    BYOL, METHODS, DeepCluster, Denoising, GVSLPretrain, Inpainting, MoCoV2, Rotation, SimCLR, SimSiam,
)
from gemini_pl.modules.mip.contrastive import info_nce, nt_xent
from gemini_pl.modules.mip.deepcluster import balanced_weights
from gemini_pl.modules.mip.gvsl import affine_from_params, ncc_loss
from gemini_pl.modules.mip.kmeans import fit_whitening, kmeans
from gemini_pl.modules.mip.pooling import encode, forward_with_bottleneck, pooled_features
from gemini_pl.modules.mip.projector import mlp
from gemini_pl.modules.mip.regression import byol_loss, simsiam_loss
from gemini_pl.modules.mip.rotation import centre_square, num_rotations, rotate


# ------------------------------------------------------------------ losses, by hand
def test_nt_xent_two_images_by_hand():
    tau = 0.5
    # identical views e1, e2: every anchor has its positive at cos 1 and two negatives at cos 0
    e = torch.eye(2)
    assert float(nt_xent(e, e, tau)) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)
    # view 2 of image 0 at 45°: cos(z1_0, z2_0) = cos(z1_1, z2_0) = 1/√2, cos(z2_0, z2_1) = 1/√2
    z1, z2 = torch.eye(2), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    def term(pos, negs):
        return -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + sum(math.exp(n / tau) for n in negs)))
    expect = (term(r, [0, 0])          # anchor z1_0: positive z2_0, negatives z1_1 (0), z2_1 (0)
              + term(1, [0, r])        # anchor z1_1: positive z2_1, negatives z1_0 (0), z2_0 (r)
              + term(r, [r, r])        # anchor z2_0: positive z1_0, negatives z1_1 (r), z2_1 (r)
              + term(1, [0, r])) / 4   # anchor z2_1: positive z1_1, negatives z1_0 (0), z2_0 (r)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(expect, rel=1e-6)


def test_info_nce_with_queue_by_hand():
    q, k, queue = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expect = -math.log(math.exp(1 / 0.2) / (math.exp(1 / 0.2) + math.exp(0) + math.exp(-1 / 0.2)))
    assert float(info_nce(q, k, 0.2, queue)) == pytest.approx(expect, rel=1e-5)


def test_byol_and_simsiam_losses_by_hand():
    p, z = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True), torch.tensor([[0.0, 3.0], [2.0, 0.0]], requires_grad=True)
    # 2 − 2cos: orthogonal → 2; 45° → 2 − √2
    assert float(byol_loss(p, z).detach()) == pytest.approx((2 + 2 - math.sqrt(2)) / 2, rel=1e-6)
    assert float(simsiam_loss(p, z).detach()) == pytest.approx(-(0 + 1 / math.sqrt(2)) / 2, rel=1e-6)
    (byol_loss(p, z) + simsiam_loss(p, z)).backward()
    assert z.grad is None and p.grad is not None   # the target carries no gradient


def test_rotation_classes_and_cross_entropy():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert [torch.equal(rotate(x, r), torch.rot90(x, r, (2, 3))) for r in range(4)] == [True] * 4
    v = torch.rand(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    rotated = [rotate(v, r) for r in range(num_rotations(3))]
    assert num_rotations(3) == 10 and len({tuple(t.flatten().tolist()) for t in rotated}) == 10   # 10 distinct
    assert torch.equal(rotate(v, 2), torch.rot90(v, 2, (3, 4))) and torch.equal(rotate(v, 9), torch.rot90(v, 3, (2, 3)))
    assert centre_square(torch.zeros(1, 1, 6, 4)).shape[2:] == (4, 4)
    logits, label = torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([0])
    assert float(F.cross_entropy(logits, label)) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 3)), rel=1e-6)


def test_rotation_module_labels_match_the_rotated_images():
    m = Rotation(spatial_dims=2, widths=SMALL_WIDTHS, spatial_augment=False)
    x = torch.rand(2, 1, 16, 20)
    batch = m.prepare_batch({"image_a": x[:1], "image_b": x[1:]})
    sq = centre_square(x)
    for i, r in enumerate(batch["label"].tolist()):
        assert torch.equal(batch["image"][i:i + 1], rotate(sq[i:i + 1], r))
    (name, terms), = list(m.training_losses(batch))
    logits = m.classifier(pooled_features(m.net.backbone, batch["image"]))
    assert float(terms["total"]) == pytest.approx(float(F.cross_entropy(logits, batch["label"])), rel=1e-5)
    m4 = Rotation(spatial_dims=2, widths=SMALL_WIDTHS, spatial_augment=False, all_rotations=True)
    assert m4.prepare_batch({"image_a": x[:1], "image_b": x[1:]})["label"].tolist() == [0, 1, 2, 3] * 2


def test_kmeans_on_separable_points_and_whitening():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 2, generator=g) * 0.1 + torch.tensor([5.0, 5.0])
    b = torch.randn(20, 2, generator=g) * 0.1 - torch.tensor([5.0, 5.0])
    centroids, labels = kmeans(torch.cat([a, b]), 2, generator=g)
    assert len(set(labels[:20].tolist())) == 1 and len(set(labels[20:].tolist())) == 1 and labels[0] != labels[20]
    got = {tuple(c.round(decimals=4).tolist()) for c in centroids}
    assert got == {tuple(a.mean(0).round(decimals=4).tolist()), tuple(b.mean(0).round(decimals=4).tolist())}
    x = torch.randn(50, 4, generator=g) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 3, 0], [0, 0, 1, 0.5]])
    mean, proj = fit_whitening(x, dim=3)
    y = (x - mean) @ proj
    assert proj.shape == (4, 3)
    assert torch.allclose(y.t() @ y / 49, torch.eye(3), atol=1e-3)   # unit covariance of the top 3 components
    assert balanced_weights(torch.tensor([1, 3, 0])).tolist() == pytest.approx([1.5, 0.5, 0.0])


def test_deepcluster_pseudo_labels_are_the_kmeans_labels():
    m = DeepCluster(spatial_dims=2, widths=SMALL_WIDTHS, num_clusters=3, pca_dim=4)
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    top = m.classifier.weight.clone()
    labels = m.recluster(images)
    assert torch.equal(m.pseudo_labels(images), labels)
    assert not torch.equal(m.classifier.weight, top)   # the top layer is re-initialised
    # the same clusters on every rank: the draws depend on aug_seed and the epoch, not on the rank's stream
    other = DeepCluster(spatial_dims=2, widths=SMALL_WIDTHS, num_clusters=3, pca_dim=4)
    other.load_state_dict(m.state_dict())
    other.aug_generator.manual_seed(1234)
    assert torch.equal(other.recluster(images), labels)
    (name, terms), = list(m.training_losses({"image": images, "label": labels}))
    logits = m.classifier(m.embed(images))
    w = balanced_weights(torch.bincount(labels, minlength=3))
    assert float(terms["total"]) == pytest.approx(float(F.cross_entropy(logits, labels, weight=w)), rel=1e-5)


def test_encoder_level_costs_what_table_ix_reports():
    """Table IX: Rotation 5.99 G and BYOL 11.98 G per step against 20.15 G for the whole 2D U-Net, i.e. one
    and two encoder passes: with the published widths the encoder is 0.30 of the network's forward FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from gemini_pl.nets import GeminiNet

    net, x = GeminiNet(2, 1, 1), torch.rand(1, 1, 64, 64)

    def flops(fn):
        with FlopCounterMode(display=False) as mode, torch.no_grad():
            fn()
        return mode.get_total_flops()

    ratio = flops(lambda: encode(net.backbone, x)) / flops(lambda: net(x))
    assert ratio == pytest.approx(5.99 / 20.15, abs=0.01) and 2 * ratio == pytest.approx(11.98 / 20.15, abs=0.02)


def test_every_method_states_what_is_simplified():
    from gemini_pl.modules.mip import simplified

    notes = {k: simplified(k) for k in METHODS}
    assert all(n.startswith("Simplified here") and len(n) > 40 for n in notes.values()), notes
    assert "GEMINI U-Net" in notes["simclr"] and "\n" not in notes["gvsl_mip"]


def test_mlp_heads_and_pooled_levels():
    head = mlp([8, 16, 4], batch_norm=True, last_bn=True)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    m = SimCLR(spatial_dims=2, widths=SMALL_WIDTHS)
    x = torch.rand(2, 1, 20, 24)
    g, f = forward_with_bottleneck(m.net.backbone, x)
    assert torch.allclose(g, encode(m.net.backbone, x)) and g.shape == (2, 128, 2, 2) and f.shape == (2, 8, 20, 24)
    assert torch.allclose(pooled_features(m.net.backbone, x), g.mean((2, 3)))
    assert torch.allclose(pooled_features(m.net.backbone, x, "decoder"), m.net.backbone(x).mean((2, 3)))


# ------------------------------------------------------------------ corruptions and restoration
def test_box_mask_and_outpainting_by_hand():
    starts, sizes, active = torch.tensor([[[1, 2], [0, 0]]]), torch.tensor([[[2, 1], [1, 1]]]), torch.tensor([[True, False]])
    mask = box_mask((4, 4), starts, sizes, active)[0, 0]
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[1:3, 2] = True
    assert torch.equal(mask, expect)
    s, z, a = random_boxes(3, (20, 30), 5, (0.25, 0.5), prob=0.0, generator=torch.Generator().manual_seed(0))
    assert a.sum(1).tolist() == [1, 1, 1] and ((z >= torch.tensor([5, 8])) & (z <= torch.tensor([10, 15]))).all()
    assert ((s >= 0) & (s + z <= torch.tensor([20, 30]))).all()
    x = torch.full((2, 1, 14, 14), 2.0)   # outside [0, 1): kept voxels are exactly the image
    out = outpaint(x, torch.Generator().manual_seed(0), size_range=(3 / 7, 4 / 7))
    kept = out == 2.0
    assert kept.any() and (out[~kept] < 1).all() and kept.float().mean() < 1
    ident = genesis_corrupt(x / 4, CorruptionConfig(shuffle_prob=0, nonlinear_prob=0), paint_prob=0.0)
    assert torch.equal(ident, x / 4)


def test_restoration_losses_by_hand():
    x = torch.rand(1, 1, 32, 32)
    dn = Denoising(spatial_dims=2, widths=SMALL_WIDTHS, noise_std=0.1, spatial_augment=False)
    batch = dn.prepare_batch({"image_a": x, "image_b": x.flip(-1)})
    both = torch.cat([x, x.flip(-1)])
    assert batch["image"].shape == (2, 1, 32, 32) and float((batch["corrupted"] - both).std()) == pytest.approx(0.1, rel=0.1)
    (name, terms), = list(dn.training_losses(batch))
    assert float(terms["total"]) == pytest.approx(float((dn.net(batch["corrupted"]) - both).pow(2).mean()), rel=1e-5)
    ip = Inpainting(spatial_dims=2, widths=SMALL_WIDTHS, spatial_augment=False)
    batch = ip.prepare_batch({"image_a": x, "image_b": x.flip(-1)})
    m = batch["weight"].bool().expand_as(both)
    assert m.any() and torch.equal(batch["corrupted"][~m], both[~m])
    assert torch.allclose(batch["corrupted"][:1][m[:1]], x.mean().expand(int(m[:1].sum())))
    (name, terms), = list(ip.training_losses(batch))
    err = (ip.net(batch["corrupted"]) - both).pow(2)
    assert float(terms["total"]) == pytest.approx(float(err[m].mean()), rel=1e-5)   # the boxes only


# ------------------------------------------------------------------ GVSL-MIP
def test_gvsl_affine_matrix_by_hand():
    z1 = torch.zeros(1, 1)
    eye = affine_from_params(z1, torch.ones(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.allclose(eye, torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]))
    a, sx, sy, t, sh = 0.3, 1.2, 0.9, torch.tensor([[0.1, -0.2]]), 0.2
    th = affine_from_params(torch.tensor([[a]]), torch.tensor([[sx, sy]]), t, torch.tensor([[sh, 0.0]]))
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = torch.tensor([[1.0, math.tan(sh)], [0.0, 1.0]])
    expect = torch.cat([shear @ torch.diag(torch.tensor([sx, sy])) @ rot, t.t()], 1)
    assert torch.allclose(th[0], expect, atol=1e-6)
    # 3D: R_z · R_y · R_x as published (rotation about x by b only)
    b = 0.4
    th3 = affine_from_params(torch.tensor([[b, 0.0, 0.0]]), torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 6))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    assert torch.allclose(th3[0, :, :3], rx, atol=1e-6)
    c = 0.5
    ry = affine_from_params(torch.tensor([[0.0, c, 0.0]]), torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 6))[0, :, :3]
    assert torch.allclose(ry, torch.tensor([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]]), atol=1e-6)


def test_gvsl_loss_terms_and_weights():
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) + x
    assert float(ncc_loss(x, 3 * x)) == pytest.approx(0.0, abs=1e-4)   # a scaled copy: cc = 1 everywhere
    # the published ncc_loss (utils/losses.py), written out: box sums by a 9³ ones filter, zero padding 4
    k = torch.ones(1, 1, 9, 9, 9)
    s = {name: F.conv3d(t, k, padding=4) for name, t in dict(i=x, j=y, ii=x * x, jj=y * y, ij=x * y).items()}
    ui, uj = s["i"] / 729, s["j"] / 729
    cross = s["ij"] - uj * s["i"] - ui * s["j"] + ui * uj * 729
    vi, vj = s["ii"] - 2 * ui * s["i"] + ui * ui * 729, s["jj"] - 2 * uj * s["j"] + uj * uj * 729
    assert float(ncc_loss(x, y)) == pytest.approx(float(1 - (cross * cross / (vi * vj + 1e-5)).mean()), rel=1e-4)
    m = GVSLPretrain(spatial_dims=3, widths=SMALL_WIDTHS, affine_width=32, spatial_augment=False,
                     lambda_ncc=1.0, lambda_restore=2.0, lambda_smooth=3.0)
    batch = m.prepare_batch({"image_a": x, "image_b": x.flip(-1)})
    assert not torch.equal(batch["corrupted_a"], batch["image_a"]) and torch.equal(batch["image_a"], x)
    (name, terms), = list(m.training_losses(batch))
    assert float(terms["total"].detach()) == pytest.approx(float(terms["ncc"] + 2 * terms["restore"] + 3 * terms["smooth"]), rel=1e-5)
    terms["total"].backward()
    assert m.fc_rot.weight.grad is not None and m.fc_rot.weight.grad.abs().sum() > 0   # the NCC trains the affine head
    m.zero_grad()
    m.hparams.detach_affine = True   # the published code: the affine matrix carries no gradient
    (name, terms), = list(m.training_losses(batch))
    terms["total"].backward()
    assert m.fc_rot.weight.grad is None
    _, f = forward_with_bottleneck(m.net.backbone, batch["corrupted_a"])
    assert float(terms["restore"]) == pytest.approx(float((m.net.head(f) - x).pow(2).mean()), rel=1e-4)


# ------------------------------------------------------------------ fits and the fine-tuning start
SMALL = {
    "simsiam": dict(proj_hidden=[32, 32], proj_dim=32, pred_hidden=16), "byol": dict(proj_hidden=[32], proj_dim=16, pred_hidden=32),
    "simclr": dict(proj_dim=16), "mocov2": dict(proj_dim=16, queue_size=16), "deepcluster": dict(num_clusters=3, pca_dim=8),
    "gvsl_mip": dict(affine_width=32),
}
SEG = dict(widths=SMALL_WIDTHS, num_classes=6, lr=1e-3)


def _dm(root, dims, mode):
    return PhantomDataModule(
        root=str(root), dataset="phantom2d" if dims == 2 else "phantom3d", spatial_dims=dims, size=32 if dims == 2 else 16,
        num_unlabeled=6 if dims == 2 else 4, num_labeled=2, num_test=4 if dims == 2 else 3, batch_size=1,
        train_mode=mode, eval_mode="cases" if mode != "pairs" else "pairs", num_val_pairs=2, labeled_batch_size=1,
    )


def _trainer(tmp_path, **kw):
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kw)


def _check_init_from(phantom_root, tmp_path, ckpt, pretrained, dims):
    from gemini_pl.modules import Segmentation

    seg = Segmentation(spatial_dims=dims, init_from=str(ckpt), **SEG)
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(seg, datamodule=_dm(phantom_root, dims, "labeled"))
    for (name, a), b in zip(seg.net.backbone.state_dict().items(), pretrained.values()):
        assert torch.equal(a, b), name
    assert sorted(seg.transfer_report.loaded) == sorted(f"backbone.{k}" for k in pretrained)


@pytest.mark.parametrize("key,dims", [(k, 2) for k in METHODS] + [("rotation", 3), ("gvsl_mip", 3), ("models_genesis", 3)])
def test_fit_two_steps_and_segmentation_init_from(phantom_root, tmp_path, key, dims):
    m = METHODS[key](spatial_dims=dims, widths=SMALL_WIDTHS, lr=1e-3, **SMALL.get(key, {}))
    before = [p.clone() for p in m.net.backbone.parameters()]
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(m, datamodule=_dm(phantom_root, dims, "pairs"))
    assert trainer.global_step == 2 and m.nonfinite_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.backbone.parameters()))
    ckpt = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    pretrained = {k: v.clone() for k, v in m.net.backbone.state_dict().items()}
    _check_init_from(phantom_root, tmp_path, ckpt, pretrained, dims)


def test_momentum_encoders_and_queue_move(phantom_root, tmp_path):
    m = MoCoV2(spatial_dims=2, widths=SMALL_WIDTHS, proj_dim=16, queue_size=16)
    key0 = [p.clone() for p in m.key_encoder["backbone"].parameters()]
    _trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(m, datamodule=_dm(phantom_root, 2, "pairs"))
    assert int(m.queue.ptr) == 4   # 2 images per step, 2 steps
    assert any(not torch.equal(a, b) for a, b in zip(key0, m.key_encoder["backbone"].parameters()))
    b = BYOL(spatial_dims=2, widths=SMALL_WIDTHS, proj_hidden=[32], proj_dim=16, pred_hidden=32)
    assert set(b.key_encoder) == {"backbone", "projector"} and not any(p.requires_grad for p in b.key_encoder.parameters())
    assert not hasattr(SimSiam(spatial_dims=2, widths=SMALL_WIDTHS, proj_hidden=[16], proj_dim=16, pred_hidden=8), "key_encoder")


# ------------------------------------------------------------------ the experiment configs
@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(METHODS))
def test_configs_fit_and_leave_a_backbone(phantom_root, tmp_path, key):
    """methods/<key>.yaml + phantom/methods/<key>.yaml after a data config of unlabeled phantoms:
    ``gemini-pl fit`` leaves checkpoints/last.ckpt, whose backbone Segmentation(init_from=...) loads."""
    import yaml

    from gemini_pl.cli import cli_main

    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"data": {"class_path": "gemini_pl.data.GeminiDataModule", "init_args": {
        "root": str(phantom_root), "dataset": "phantom2d", "spatial_dims": 2, "batch_size": 1, "num_workers": 0}}}))
    out = tmp_path / "run"
    exp = REPO / "experiments"
    cli_main(["fit", "--config", str(data), "--config", str(exp / "mip/methods" / f"{key}.yaml"),
              "--config", str(exp / "trainer/cpu.yaml"), "--config", str(exp / "callbacks/default.yaml"),
              "--config", str(exp / "mip/phantom/methods" / f"{key}.yaml"),
              "--model.init_args.widths", str(SMALL_WIDTHS), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out)])
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    pretrained = {k[len("net.backbone."):]: v for k, v in state.items() if k.startswith("net.backbone.")}
    _check_init_from(phantom_root, tmp_path, ckpt, pretrained, 2)
