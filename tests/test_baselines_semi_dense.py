"""Table II rows MASSL, DPA-DBN, SetSim, DSC-PM and GLCL: their losses on tiny tensors against
hand-computed values, and one fast_dev_run of each module on the phantoms (2D 32², 3D 16³)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_WIDTHS
from gemini_pl.data import PhantomDataModule
from gemini_pl.modules import Segmentation
from gemini_pl.modules.baselines import DPADBN, DSCPM, GLCL, MASSL, DPAPrior, SetSim
from gemini_pl.modules.baselines.dpa import PriorAutoencoder
from gemini_pl.modules.baselines.dsc import neighbour_positives, prototype_loss, semantic_contrast, sinkhorn
from gemini_pl.modules.baselines.glcl import local_region_starts, nt_xent, region_embeddings, unet_decode, unet_encode
from gemini_pl.modules.baselines.massl import attention_reconstruction_loss, attention_regions
from gemini_pl.modules.baselines.setsim import attention_set, set_loss, set_positives

SEG = dict(widths=SMALL_WIDTHS, num_classes=6, lr=1e-3)
DENSE = dict(widths=SMALL_WIDTHS, proj_dim=16, grid=8, lr=1e-3)


# ------------------------------------------------------------------ MASSL
def test_massl_attention_reconstruction_by_hand():
    x = torch.tensor([2.0, 4.0]).view(1, 1, 1, 2)
    a = torch.tensor([[1.0, 0.5], [0.0, 0.5]]).view(1, 2, 1, 2)      # background / foreground shares per pixel
    recon = torch.zeros(1, 2, 1, 2)
    # targets: background (2, 2), foreground (0, 2); MSE 4 and 2; shares 1.5 and 0.5 of 2 → 0.75·4 + 0.25·2
    assert float(attention_reconstruction_loss(recon, x, a)) == pytest.approx(3.5)
    p = torch.tensor([0.2, 0.5]).view(1, 2, 1, 1)
    assert attention_regions(p, "multilabel").flatten().tolist() == pytest.approx([0.2, 0.5, 0.4])
    assert torch.equal(attention_regions(p, "multiclass"), p)


def test_massl_reconstruction_step_keeps_the_segmentation_head_fixed():
    """The unlabeled step trains the shared network and the reconstruction head; the segmentation
    head is frozen there (MASSL's trainU_decoder_seg: False), its prediction still passes the
    encoder's gradient."""
    m = MASSL(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    assert m.rec_head[-1].out_channels == 3
    terms = m.reconstruction_terms(torch.rand(2, 1, 16, 16))
    terms["total"].backward()
    assert all(p.grad is None for p in m.net.head.parameters())
    assert all(p.grad is not None for p in m.rec_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.backbone.parameters())
    # the frozen call is the head itself
    f = torch.rand(1, SMALL_WIDTHS[-1], 8, 8)
    assert torch.allclose(m.frozen_seg_head(f), m.net.head(f))
    # multi-label: one region per label channel + the common background
    ml = MASSL(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3, label_kind="multilabel")
    assert ml.rec_head[-1].out_channels == 4
    assert math.isfinite(float(ml.reconstruction_terms(torch.rand(2, 1, 16, 16))["total"].detach()))


# ------------------------------------------------------------------ GLCL
def test_glcl_nt_xent_regions_and_unet_split_by_hand():
    e = torch.eye(2)
    # row z1[0]: others z1[1] (cos 0), z2[0] (cos 1, the positive), z2[1] (cos 0); τ = 1, all rows alike
    assert float(nt_xent(e, e, 1.0)) == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)
    starts = local_region_starts(8, 2)
    assert len(starts) == 13 and {(0, 0), (0, 2), (5, 5), (1, 3), (3, 1)} <= set(starts)
    assert len(local_region_starts(8, 3)) == 35
    fmap = torch.arange(2 * 25.0).view(1, 2, 5, 5)
    emb = region_embeddings(fmap, [(0, 0), (2, 1)], size=3)
    assert emb.shape == (1, 2, 18)
    assert emb[0, 1, :9].tolist() == fmap[0, 0, 2:5, 1:4].flatten().tolist()
    m = GLCL(spatial_dims=2, **DENSE)
    x = torch.rand(2, 1, 24, 24)
    levels, crop = unet_encode(m.net.backbone, x)
    with torch.no_grad():
        assert torch.allclose(unet_decode(m.net.backbone, levels, crop), m.net.backbone(x))


def test_glcl_stages_follow_the_run_and_local_stage_freezes_the_encoder():
    class _T:
        def __init__(self, step, total):
            self.global_step, self.estimated_stepping_batches, self.world_size = step, total, 1

    m = GLCL(spatial_dims=2, **DENSE)
    m._trainer = _T(4, 10)
    assert m.global_stage()
    m._trainer = _T(5, 10)
    assert not m.global_stage()
    batch = m.prepare_batch({"image_a": torch.rand(1, 1, 32, 32), "image_b": torch.rand(1, 1, 32, 32)})
    assert batch["stage"] == "local" and batch["version1"].shape == (2, 1, 32, 32)
    (name, terms), = list(m.training_losses(batch))
    terms["total"].backward()
    assert name == "local" and math.isfinite(float(terms["total"].detach()))
    assert all(p.grad is None for p in m.net.backbone.inc.parameters())         # encoder frozen
    assert any(p.grad is not None for p in m.net.backbone.up4.parameters())      # decoder trained


# ------------------------------------------------------------------ SetSim
def test_setsim_sets_matcher_and_loss_by_hand():
    b = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]).view(1, 2, 3)     # attention 0, 1, 4 → 0, 0.25, 1
    assert attention_set(b, 0.7).tolist() == [[0.0, 0.0, 1.0]]
    # only query cell 2 and key cell 2 are in their sets (cos 1 ≥ 0.2)
    pos = set_positives(b, b, 0.7, 0.2, nearest=False)
    assert pos[0].tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    geo = torch.zeros(1, 3, 3)
    geo[0, 0, 1] = 1
    pos = set_positives(b, b, 0.7, 0.2, geometry=geo, nearest=True)
    # nearest neighbours by cosine: cell 0 is the zero vector (cos 0 to all → index 0); cells 1 and 2 point
    # alike (cos 1 → the first, index 1). Rows with a positive (0 by geometry, 2 by its set) gain theirs.
    assert pos[0].tolist() == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    q = torch.tensor([1.0, 0.0]).view(1, 2, 1)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 2)         # key cells (1, 0), (0, 1)
    neg = torch.tensor([[-1.0, 0.0]])
    big = math.log(math.e + math.exp(-1))                                     # positive cell 0 + the queue
    assert float(set_loss(q, k, torch.tensor([[[1.0, 0.0]]]), neg, 1.0)) == pytest.approx(big - 1, rel=1e-6)
    both = math.log(math.e + 1 + math.exp(-1))
    assert float(set_loss(q, k, torch.tensor([[[1.0, 1.0]]]), neg, 1.0)) == pytest.approx(both - 0.5, rel=1e-6)
    assert float(set_loss(q, k, torch.zeros(1, 1, 2), neg, 1.0)) == 0.0     # no positive: the row does not count


# ------------------------------------------------------------------ DSC-PM
def test_dsc_sinkhorn_neighbours_and_prototype_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    codes = sinkhorn(torch.randn(12, 3, generator=g), epsilon=0.5, iterations=50)
    assert torch.allclose(codes.sum(1), torch.ones(12), atol=1e-4)
    assert torch.allclose(codes.sum(0), torch.full((3,), 4.0), atol=1e-3)   # equipartition: 12 rows / 3 prototypes
    bq = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 2)
    bk = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.9, 0.1]]).T.reshape(1, 2, 3)
    geo = torch.zeros(1, 2, 3)
    geo[0, 1, 2] = 1
    pos = neighbour_positives(bq, bk, geo, 1)
    assert pos[0].tolist() == [[0, 1, 0], [1, 0, 1]]
    # two prototypes = the two key cells: Sinkhorn maps key cell j to prototype j (≈ one-hot at ε = 0.05);
    # the query cell corresponds to key cell 0 → −log softmax(q·c / τ)_0 with q = c_0, τ = 1
    c = torch.eye(2)
    q = torch.tensor([1.0, 0.0]).view(1, 2, 1)
    k = torch.eye(2).view(1, 2, 2)
    loss = prototype_loss(q, k, c, torch.tensor([[[1.0, 0.0]]]), temperature=1.0)
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-4)
    assert float(prototype_loss(q, k, c, torch.zeros(1, 1, 2), temperature=1.0)) == 0.0
    # semantic contrast: query (1, 0) of class 0; key rows (1, 0), (0, 1), (−1, 0) of classes 0, 1, 0; τ = 1
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    lse = math.log(math.e + 1 + math.exp(-1))
    # positives 0 and 2: −((1 − lse) + (−1 − lse)) / 2 = lse
    got = semantic_contrast(torch.tensor([[1.0, 0.0]]), keys, torch.tensor([0]), torch.tensor([0, 1, 0]), torch.ones(1), 1.0)
    assert float(got) == pytest.approx(lse, rel=1e-6)
    assert float(semantic_contrast(torch.tensor([[1.0, 0.0]]), keys, torch.tensor([0]), torch.tensor([0, 1, 0]),
                                   torch.zeros(1), 1.0)) == 0.0   # a query cell without a correspondence does not count


# ------------------------------------------------------------------ DPA-DBN
def test_dpa_prior_autoencoder_and_fused_network():
    ae = PriorAutoencoder(2, 1, (8, 16, 32))
    x = torch.rand(2, 1, 20, 20)
    assert ae(x).shape == x.shape and ae.prior_features(x).shape == (2, 56, 20, 20)
    m = DPADBN(spatial_dims=2, prior_widths=(8, 16, 32), **SEG)
    assert m.net.backbone.inc.double_conv[0].in_channels == 1 + 56
    out = m.net(torch.rand(1, 1, 16, 16))
    out.sum().backward()
    assert out.shape == (1, 6, 16, 16)
    assert all(not p.requires_grad and p.grad is None for p in m.net.prior.parameters())


# ------------------------------------------------------------------ fast_dev_run on phantoms
def _dm(root, dims, mode):
    return PhantomDataModule(
        root=str(root), dataset="phantom2d" if dims == 2 else "phantom3d", spatial_dims=dims, size=32 if dims == 2 else 16,
        num_unlabeled=6 if dims == 2 else 4, num_labeled=2, num_test=4 if dims == 2 else 3, batch_size=1,
        train_mode=mode, eval_mode="cases" if mode != "pairs" else "pairs", num_val_pairs=2, labeled_batch_size=1,
    )


def _trainer(tmp_path, **kw):
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kw)


def test_massl_fast_dev_run(phantom_root, tmp_path):
    m = MASSL(spatial_dims=2, **SEG)
    rec = [p.clone() for p in m.rec_head.parameters()]
    t = _trainer(tmp_path, fast_dev_run=1)
    t.fit(m, datamodule=_dm(phantom_root, 2, "pairs+labeled"))
    assert any(not torch.equal(a, b) for a, b in zip(rec, m.rec_head.parameters()))
    out = t.test(m, datamodule=_dm(phantom_root, 2, "pairs+labeled"), verbose=False)
    assert math.isfinite(out[0]["test/seg_dice"])


@pytest.mark.parametrize("cls,dims", [(SetSim, 2), (DSCPM, 2), (GLCL, 2), (GLCL, 3)])
def test_dense_fast_dev_run_and_finetune_init(phantom_root, tmp_path, cls, dims):
    extra = {} if cls is GLCL else {"queue_size": 64}
    m = cls(spatial_dims=dims, **DENSE, **extra)
    before = [p.clone() for p in m.net.backbone.parameters()]
    _trainer(tmp_path, fast_dev_run=1).fit(m, datamodule=_dm(phantom_root, dims, "pairs"))
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.backbone.parameters()))
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": m.state_dict()}, ckpt)
    seg = Segmentation(spatial_dims=dims, init_from=str(ckpt), **SEG)
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(seg, datamodule=_dm(phantom_root, dims, "labeled"))
    assert all(torch.equal(a, b) for a, b in zip(seg.net.backbone.parameters(), m.net.backbone.parameters()))


def test_dpa_two_stages_fast_dev_run(phantom_root, tmp_path):
    pre = DPAPrior(spatial_dims=2, prior_widths=(8, 16), lr=1e-3)
    before = [p.clone() for p in pre.prior.parameters()]
    _trainer(tmp_path, fast_dev_run=1).fit(pre, datamodule=_dm(phantom_root, 2, "pairs"))
    assert any(not torch.equal(a, b) for a, b in zip(before, pre.prior.parameters()))
    ckpt = tmp_path / "prior.ckpt"
    torch.save({"state_dict": pre.state_dict()}, ckpt)
    m = DPADBN(spatial_dims=2, prior_widths=(8, 16), init_from=str(ckpt), **SEG)
    t = _trainer(tmp_path, fast_dev_run=1)
    t.fit(m, datamodule=_dm(phantom_root, 2, "labeled"))
    assert all(torch.equal(a, b) for a, b in zip(m.net.prior.parameters(), pre.prior.parameters()))   # loaded, frozen
    assert m.transfer_report is not None and len(m.transfer_report.loaded) == len(pre.prior.state_dict())
    out = t.test(m, datamodule=_dm(phantom_root, 2, "labeled"), verbose=False)
    assert math.isfinite(out[0]["test/seg_dice"])
    wrong = DPADBN(spatial_dims=2, prior_widths=(8, 16, 32), init_from=str(ckpt), **SEG)
    with pytest.raises(Exception, match="prior_widths"):
        _trainer(tmp_path, fast_dev_run=1).fit(wrong, datamodule=_dm(phantom_root, 2, "labeled"))
    with pytest.raises(Exception, match="init_from"):
        _trainer(tmp_path, fast_dev_run=1).fit(DPADBN(spatial_dims=2, prior_widths=(8, 16), **SEG),
                                               datamodule=_dm(phantom_root, 2, "labeled"))
