"""The atlas and LRLS rows of Table II (LC-VM, LT-Net, DataAug, DeepRS, PC-Reg-RT, BRBS): their loss
terms on tiny tensors against hand-computed values, and one fast_dev_run of each on the phantoms."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from gemini_pl.data import PhantomDataModule
from gemini_pl.errors import ConfigError
from gemini_pl.losses import warped_ncc
from gemini_pl.modules.baselines import BRBS, DataAug, DeepRS, LCVMAtlas, LTNet, PCRegRT
from gemini_pl.modules.baselines.brbs import inverse_loss, mix_pair, s3p
from gemini_pl.modules.baselines.dataaug import appearance_terms, synthesise
from gemini_pl.modules.baselines.deeprs import confidence_weighted_ce, perturbed_pair
from gemini_pl.modules.baselines.lrls import beta_draw
from gemini_pl.modules.baselines.ltnet import cycle_terms
from gemini_pl.modules.baselines.pcreg import perception_ncc, region_images
from gemini_pl.spatial import validity_mask


def _shift(n_h: int, n_w: int, dw: float) -> torch.Tensor:
    """A 2D field (1, 2, H, W) moving every pixel by ``dw`` along W (channel 1)."""
    f = torch.zeros(1, 2, n_h, n_w)
    f[:, 1] = dw
    return f


# ------------------------------------------------------------------ losses, by hand
def test_lcvm_label_dice_term_by_hand():
    """Moving label: a 4 × 4 square at columns 4–7; fixed: the same square at columns 5–8 (overlap 12
    of 16 pixels). Zero fields: 1 − (2·12 + 1)/(16 + 16 + 1) = 8/33 per direction; fields shifting by
    one pixel (φ = −1 along W one way, +1 back) align them: 0."""
    m = LCVMAtlas(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=2)
    assert m.hparams.lambda_dice == 1.0
    lm, lf = torch.zeros(1, 1, 16, 16, dtype=torch.long), torch.zeros(1, 1, 16, 16, dtype=torch.long)
    lm[..., 4:8, 4:8] = 1
    lf[..., 4:8, 5:9] = 1
    x = torch.rand(1, 1, 16, 16)
    zero = torch.zeros(1, 2, 16, 16)
    m.net.flows_both_ways = lambda a, b: (zero, zero)
    t = m.pair_loss(x, x, lm, lf)
    assert float(t["dice"]) == pytest.approx(2 * 8 / 33, rel=1e-5)
    assert float(t["total"]) == pytest.approx(float(t["ncc"] + 0.4 * t["smooth"] + t["dice"]), rel=1e-5)
    m.net.flows_both_ways = lambda a, b: (_shift(16, 16, -1.0), _shift(16, 16, 1.0))
    assert float(m.pair_loss(x, x, lm, lf)["dice"]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="batch_size: 2"):
        m.prepare_batch({"image_a": x, "image_b": x, "image": x, "label": lm})


def test_ltnet_cycle_terms_by_hand():
    """Rows [1, 2, 3, 4]; forward +1 along W, backward −1: x' = [2, 3, 4, 0], x'' = [0, 2, 3, 4] →
    L1 1/4; the round trip's displacement bwd + warp(fwd, bwd) = [−1, 0, 0, 0] along W → 1/8 (2
    channels); a label at column 0 (2 pixels) leaves the image: 1 − (0 + 1)/(2 + 0 + 1) = 2/3."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4).contiguous()
    y = torch.zeros(1, 2, 2, 4)
    y[:, 1, :, 0] = 1
    y[:, 0] = 1 - y[:, 1]
    zero = torch.zeros(1, 2, 2, 4)
    t0 = cycle_terms(x, y, zero, zero)
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in t0.values())
    t = cycle_terms(x, y, _shift(2, 4, 1.0), _shift(2, 4, -1.0))
    assert float(t["cyc_image"]) == pytest.approx(0.25, rel=1e-5)
    assert float(t["cyc_flow"]) == pytest.approx(1 / 8, rel=1e-5)
    assert float(t["cyc_label"]) == pytest.approx(2 / 3, rel=1e-5)


def test_ltnet_loss_is_forward_similarity_smoothness_and_cycles():
    """LT-Net's loss: forward LNCC + 0.4·(S(φ) + S(φ')) + image + label cycles + 0.1·correspondence
    cycle — no second LNCC between x'' and the atlas (it held both fields at the identity)."""
    from gemini_pl.losses import registration_terms, smoothness

    m = LTNet(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=3)
    m.label_kind = "multiclass"
    g = torch.Generator().manual_seed(1)
    fwd, bwd = torch.randn(1, 2, 16, 16, generator=g), torch.randn(1, 2, 16, 16, generator=g)
    flows = iter([fwd, bwd])
    m.net.flow = lambda f_m, f_f: next(flows)
    batch = {"image": torch.rand(1, 1, 16, 16, generator=g), "label": torch.randint(0, 3, (1, 1, 16, 16), generator=g),
             "image_a": torch.rand(1, 1, 16, 16, generator=g)}
    (name, terms), = list(m.training_losses(batch))
    y = F.one_hot(batch["label"][:, 0], 3).movedim(-1, 1).float()
    cyc = cycle_terms(batch["image"], y, fwd, bwd)
    ncc = registration_terms(batch["image"], batch["image_a"], fwd)["ncc"]
    expect = ncc + 0.4 * (smoothness(fwd) + smoothness(bwd)) + cyc["cyc_image"] + cyc["cyc_label"] + 0.1 * cyc["cyc_flow"]
    assert name == "reg" and float(terms["total"]) == pytest.approx(float(expect), rel=1e-5)


def test_dataaug_appearance_and_synthesis_by_hand():
    atlas, target = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 3.0)
    psi = torch.ones(1, 1, 4, 4)
    t = appearance_terms(atlas, psi, target)
    assert float(t["app_mse"]) == pytest.approx(4.0) and float(t["app_smooth"]) == 0.0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)   # differences 1 along W, 0 along H
    assert float(appearance_terms(atlas, ramp, target)["app_smooth"]) == pytest.approx(0.5)
    # synthesis: (atlas + ψ) warped by φ, the label by nearest neighbours
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4).contiguous()
    lab = torch.tensor([0, 1, 2, 0]).expand(1, 1, 2, 4).contiguous()
    img, lab2 = synthesise(a, lab, torch.full_like(a, 10.0), _shift(2, 4, 1.0))
    assert img[0, 0, 0].tolist() == [12.0, 13.0, 14.0, 0.0] and lab2[0, 0, 0].tolist() == [1, 2, 0, 0]
    assert lab2.dtype == torch.long


def test_deeprs_confidence_weighted_ce_and_perturbation_by_hand():
    """Voxel 1: logits (0, 0), class 0 → log 2; voxel 2: logits (2, 0), class 1 → log(1 + e²)."""
    logits = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    ce1, ce2 = math.log(2), math.log(1 + math.e**2)
    w = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert float(confidence_weighted_ce(logits, target, w)) == pytest.approx(ce1, rel=1e-6)
    w = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    assert float(confidence_weighted_ce(logits, target, w)) == pytest.approx((ce1 + 3 * ce2) / 4, rel=1e-6)
    # multilabel: channel-mean BCE per voxel
    ml = torch.tensor([0.0]).view(1, 1, 1, 1)
    one = torch.ones(1, 1, 1, 1)
    assert float(confidence_weighted_ce(ml, one, one, "multilabel")) == pytest.approx(math.log(2))
    # the perturbation scales the field: α = 0.5 of a 2-pixel shift is a 1-pixel shift; α = 0 the atlas itself
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4).contiguous()
    lab = torch.tensor([0, 1, 2, 0]).expand(1, 1, 2, 4).contiguous()
    img, lab2 = perturbed_pair(a, lab, _shift(2, 4, 2.0), 0.5)
    assert img[0, 0, 0].tolist() == [2.0, 3.0, 4.0, 0.0] and lab2[0, 0, 0].tolist() == [1, 2, 0, 0]
    img, lab2 = perturbed_pair(a, lab, _shift(2, 4, 2.0), 0.0)
    assert torch.equal(img, a) and torch.equal(lab2, lab)


def test_pcreg_region_images_and_perception_ncc():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)
    masks = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]).float().view(1, 3, 1, 4)
    r = region_images(x, masks)
    assert r.shape == (1, 2, 1, 4) and r[0, :, 0].tolist() == [[0, 2, 0, 0], [0, 0, 3, 0]]
    assert region_images(x, masks, "multilabel").shape == (1, 3, 1, 4)
    g = torch.Generator().manual_seed(0)
    rm, rf = torch.rand(1, 2, 12, 12, generator=g), torch.rand(1, 2, 12, 12, generator=g)
    flow = torch.rand(1, 2, 12, 12, generator=g) - 0.5
    mask = validity_mask(flow)
    expect = sum(float(warped_ncc(rm[:, k:k + 1], rf[:, k:k + 1], flow, mask, 5)) for k in range(2))
    assert float(perception_ncc(rm, rf, flow, window=5)) == pytest.approx(expect, rel=1e-6)
    # identical regions under a zero field: NCC 1 per channel → 0
    assert float(perception_ncc(rm, rm, torch.zeros_like(flow), window=5)) == pytest.approx(0.0, abs=1e-3)


def test_brbs_inverse_s3p_mix_and_beta_by_hand():
    """φ = +1 along W on 4 columns: warp(φ, φ) = [1, 1, 1, 0] (the last column samples outside);
    with φ⁻ = −1: −warp − φ⁻ = [0, 0, 0, 1] on the W channel → mean over 2 channels × 2 × 4 = 2/16."""
    assert float(inverse_loss(_shift(2, 4, 1.0), _shift(2, 4, -1.0))) == pytest.approx(2 / 16, rel=1e-6)
    assert float(inverse_loss(torch.zeros(1, 2, 2, 4), torch.full((1, 2, 2, 4), 0.5))) == pytest.approx(0.25)
    x_l, u = torch.zeros(1, 1, 2, 4), torch.full((1, 1, 2, 4), 4.0)
    y = torch.zeros(1, 2, 2, 4)
    y[:, 1, :, 1] = 1
    y[:, 0] = 1 - y[:, 1]
    img, lab = s3p(x_l, y, u, _shift(2, 4, 2.0), alpha=0.5, beta=0.25)   # style +1, shift by 1
    assert img[0, 0, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert lab[0, 1, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    xm, ym = mix_pair(torch.ones(1), torch.zeros(1), torch.full((1,), 2.0), torch.full((1,), 4.0), 0.25)
    assert float(xm) == 0.25 and float(ym) == pytest.approx(0.25 * 2 + 0.75 * 4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    draws = [beta_draw(g1, 0.3, 0.3) for _ in range(200)]
    assert draws[:5] == [beta_draw(g2, 0.3, 0.3) for _ in range(5)]   # reproducible from the generator
    assert all(0.0 <= d <= 1.0 for d in draws) and 0.35 < sum(draws) / len(draws) < 0.65   # mean 1/2
    assert sum(d < 0.1 or d > 0.9 for d in draws) > 60   # Beta(0.3, 0.3) is U-shaped (P ≈ 0.47)


def test_brbs_weights_as_the_official_code():
    h = BRBS(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=3).hparams
    assert (h.lambda_sec, h.lambda_inverse, h.lambda_mix, h.beta_param, h.lambda_smooth) == (100.0, 0.1, 0.01, 0.3, 1.0)
    assert PCRegRT(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=3).hparams.lambda_rt == 0.5


def test_pcreg_region_channels_also_when_given_none():
    """The registration network takes one channel per foreground class (multi-label: per label);
    the CLI passes ``reg_in_channels: null`` explicitly, which must not leave it unset."""
    kw = dict(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    for extra, want in (({"num_classes": 6}, 5), ({"num_classes": 6, "reg_in_channels": None}, 5),
                        ({"num_classes": 3, "label_kind": "multilabel", "reg_in_channels": None}, 3)):
        m = PCRegRT(**kw, **extra)
        assert m.region_channels == want
        first = next(p for p in m.reg_net.backbone.parameters() if p.dim() == 4)
        assert first.shape[1] == want
    # LightningCLI records the parsed arguments as the hyper-parameters (reg_in_channels: null): the
    # registration step must not read its channels from there
    m = PCRegRT(**kw, num_classes=3)
    m.label_kind = "multiclass"
    m.hparams.reg_in_channels = None
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(1, 1, 16, 16, generator=g), "label": torch.randint(0, 3, (1, 1, 16, 16), generator=g),
             "image_a": torch.rand(1, 1, 16, 16, generator=g), "cache": {}}
    terms = m.reg_losses(batch)
    assert torch.isfinite(terms["total"]) and batch["cache"]["lu"].shape == (1, 2, 16, 16)


# ------------------------------------------------------------------ fast_dev_run on phantoms
def _dm(root, dims, batch_size=1):
    return PhantomDataModule(
        root=str(root), dataset="phantom2d" if dims == 2 else "phantom3d", spatial_dims=dims, size=32 if dims == 2 else 16,
        num_unlabeled=6 if dims == 2 else 4, num_labeled=2, num_test=4 if dims == 2 else 3, batch_size=batch_size,
        train_mode="pairs+labeled", eval_mode="cases", num_val_pairs=2, labeled_batch_size=1,
    )


def _fit_test(model, dm, tmp_path):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, fast_dev_run=1)
    trainer.fit(model, datamodule=dm)
    out = trainer.test(model, datamodule=dm, verbose=False)
    assert math.isfinite(out[0]["test/seg_dice"])
    return trainer


REG = dict(widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, num_classes=6, lr=1e-3)


@pytest.mark.parametrize("cls,dims,batch", [(LCVMAtlas, 2, 2), (LTNet, 2, 1)])
def test_atlas_rows_fast_dev_run(phantom_root, tmp_path, cls, dims, batch):
    m = cls(spatial_dims=dims, **REG)
    before = [p.clone() for p in m.net.parameters()]
    _fit_test(m, _dm(phantom_root, dims, batch), tmp_path)
    assert m.atlases is not None and len(m.atlases) == 2   # multi-atlas label transfer at test
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.parameters()))


@pytest.mark.parametrize("cls,dims", [(DataAug, 2), (DeepRS, 2), (PCRegRT, 2), (BRBS, 2), (BRBS, 3)])
def test_lrls_rows_fast_dev_run(phantom_root, tmp_path, cls, dims):
    m = cls(spatial_dims=dims, **REG)
    seg0 = [p.clone() for p in m.net.parameters()]
    reg0 = [p.clone() for p in m.reg_net.parameters()]
    _fit_test(m, _dm(phantom_root, dims), tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(seg0, m.net.parameters()))      # the segmenter stepped
    assert any(not torch.equal(a, b) for a, b in zip(reg0, m.reg_net.parameters()))  # and the registration
    assert m.nonfinite_steps == 0
