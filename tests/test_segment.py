"""Segmentation: fit/validate/test in 2D and 3D (multiclass and multilabel), results files,
initialisation from a GeminiPretrain or official checkpoint (exactly the backbone), frozen backbone."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.callbacks import ResultsWriter
from gemini_pl.errors import CheckpointError, ConfigError
from gemini_pl.modules import GeminiPretrain, Segmentation


def _trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def _seg(dims: int, **kw) -> Segmentation:
    kw.setdefault("num_classes", 6)
    return Segmentation(spatial_dims=dims, widths=SMALL_WIDTHS, lr=1e-3, **kw)


@pytest.fixture(scope="module")
def pretrain_ckpt(tmp_path_factory):
    """A real Lightning checkpoint of a (briefly trained) 2D GeminiPretrain, and the module."""
    tmp = tmp_path_factory.mktemp("pretrain")
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    trainer = _trainer(tmp, limit_val_batches=0)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    path = tmp / "pretrain.ckpt"
    trainer.save_checkpoint(path)
    return path, model


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_fit_validate_test_multiclass(tmp_path, dims, size):
    model = _seg(dims)
    dm = MemoryDataModule(dims, size, train_mode="labeled", eval_mode="cases")
    writer = ResultsWriter(results_dir=str(tmp_path / "results"), print_summary=False)
    trainer = _trainer(tmp_path, limit_val_batches=1, callbacks=[writer])
    before = model.net.backbone.inc.double_conv[0].weight.detach().clone()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    assert not torch.equal(before, model.net.backbone.inc.double_conv[0].weight)
    assert math.isfinite(float(trainer.callback_metrics["val/seg_dice"]))
    assert 0.0 <= float(trainer.callback_metrics["val/seg_dice"]) <= 1.0
    assert model.net.deformer is None and not any(k.startswith("net.deformer") for k in model.state_dict())

    trainer.test(model, datamodule=dm)
    m = trainer.callback_metrics
    for key in ("test/seg_dice", "test/avd", "test/hd95"):
        assert key in m, key
    rows = list(csv.DictReader(open(writer.csv_path)))
    assert len(rows) == 3 and rows[0]["case"] == "case0"
    assert {"dice", "avd", "hd95", "dice_1", "dice_5"} <= set(rows[0])
    mean = sum(float(r["dice"]) for r in rows) / 3
    assert mean == pytest.approx(100 * float(m["test/seg_dice"]), abs=1e-3)
    summary = writer.summary_path.read_text()
    assert "dice (%)" in summary and "avd (mm)" in summary and "commit:" in summary and "seed:" in summary


def test_multilabel_uses_sigmoid_and_masks(tmp_path):
    model = _seg(2, num_classes=3)
    dm = MemoryDataModule(2, 32, train_mode="labeled", eval_mode="cases", labels="multilabel")
    trainer = _trainer(tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    assert model.label_kind == "multilabel"
    logits = torch.randn(1, 3, 8, 8)
    pred = model.logits_to_labels(logits)
    assert pred.shape == (1, 3, 8, 8) and torch.equal(pred, (torch.sigmoid(logits) > 0.5).float())
    trainer.test(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["test/seg_dice"]))


def test_num_classes_mismatch_is_a_config_error(tmp_path):
    trainer = _trainer(tmp_path, fast_dev_run=1)
    with pytest.raises(ConfigError, match="model.num_classes=4 but the data has 6"):
        trainer.fit(_seg(2, num_classes=4), datamodule=MemoryDataModule(2, 32, train_mode="labeled"))


def test_pairs_batches_are_refused_with_the_setting(tmp_path):
    trainer = _trainer(tmp_path, fast_dev_run=1)
    with pytest.raises(ConfigError, match="data.train_mode: labeled"):
        trainer.fit(_seg(2), datamodule=MemoryDataModule(2, 32, train_mode="pairs"))


def test_init_from_pretrain_checkpoint_transfers_exactly_the_backbone(tmp_path, pretrain_ckpt):
    path, pre = pretrain_ckpt
    model = _seg(2, init_from=str(path))
    fresh_head = {k: v.clone() for k, v in model.net.head.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    ours, theirs = model.net.state_dict(), pre.net.state_dict()
    backbone = [k for k in theirs if k.startswith("backbone.")]
    assert backbone and all(torch.equal(ours[k], theirs[k]) for k in backbone)
    assert all(torch.equal(model.net.head.state_dict()[k], v) for k, v in fresh_head.items())  # head untouched
    report = model.transfer_report
    assert sorted(report.loaded) == sorted(backbone)
    assert report.source_format == "lightning" and not report.missing and not report.mismatched
    assert any(k.startswith("deformer.") for k in report.skipped) and any(k.startswith("head.") for k in report.skipped)


def test_init_exclude_transfers_the_encoder_only(tmp_path, pretrain_ckpt):
    """``init_exclude: [backbone.up]``: encoder tensors equal the pre-trained ones, decoder tensors keep
    the fresh initialisation and are reported as not copied."""
    path, pre = pretrain_ckpt
    model = _seg(2, init_from=str(path), init_exclude=["backbone.up"])
    fresh = {k: v.clone() for k, v in model.net.state_dict().items()}
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    ours, theirs = model.net.state_dict(), pre.net.state_dict()
    encoder = [k for k in theirs if k.startswith("backbone.") and not k.startswith("backbone.up")]
    decoder = [k for k in theirs if k.startswith("backbone.up")]
    assert encoder and decoder
    assert all(torch.equal(ours[k], theirs[k]) for k in encoder)
    assert all(torch.equal(ours[k], fresh[k]) for k in decoder)
    assert sorted(model.transfer_report.loaded) == sorted(encoder)
    assert set(decoder) <= set(model.transfer_report.skipped)


def test_init_head_reports_a_mismatched_head(tmp_path, pretrain_ckpt, capsys):
    path, _ = pretrain_ckpt
    model = _seg(2, init_from=str(path), init_head=True)
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    assert any(k.startswith("head.3.weight") for k in model.transfer_report.mismatched)  # 1 output vs 6
    assert "shape mismatch" in capsys.readouterr().out


def test_init_from_official_checkpoint(tmp_path, pretrain_ckpt):
    _, pre = pretrain_ckpt
    official = tmp_path / "GEMINI_official.pth"
    torch.save(pre.net.official_state_dict(), official)
    model = _seg(2, init_from=str(official))
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    assert model.transfer_report.source_format == "official"
    assert torch.equal(model.net.backbone.up4.conv.double_conv[3].weight, pre.net.backbone.up4.conv.double_conv[3].weight)


def test_wrong_widths_name_the_keys(tmp_path, pretrain_ckpt):
    path, _ = pretrain_ckpt
    model = Segmentation(spatial_dims=2, num_classes=6, widths=[16, 16, 32, 64, 128, 64, 32, 16, 8], init_from=str(path))
    with pytest.raises(CheckpointError, match=r"does not fit this network's backbone(.|\n)*backbone.inc.double_conv.0.weight"):
        _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))


def test_freeze_backbone_trains_the_head_only(tmp_path, pretrain_ckpt):
    path, pre = pretrain_ckpt
    model = _seg(2, init_from=str(path), freeze_backbone=True)
    head0 = model.net.head[0].weight.detach().clone()
    _trainer(tmp_path, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    for k, v in pre.net.backbone.state_dict().items():
        assert torch.equal(model.net.backbone.state_dict()[k], v), k
    assert not torch.equal(head0, model.net.head[0].weight)


def test_resume_ignores_init_from(tmp_path, pretrain_ckpt):
    """With --ckpt_path the checkpoint's weights win; the init file is not even read."""
    model = _seg(2)
    dm = MemoryDataModule(2, 32, train_mode="labeled")
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "seg.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = _seg(2, init_from=str(tmp_path / "does_not_exist.ckpt"))
    _trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(resumed, datamodule=dm, ckpt_path=str(ckpt))
    assert resumed.transfer_report is None


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_dev_run_on_phantom_files(tmp_path, phantom_root, dims):
    """fast_dev_run with the real GeminiDataModule (train_mode labeled, eval_mode cases)."""
    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(phantom_root), dataset=f"phantom{dims}d", spatial_dims=dims, train_mode="labeled",
                          eval_mode="cases", num_labeled=2, labeled_batch_size=2)
    trainer = _trainer(tmp_path, fast_dev_run=1)
    trainer.fit(_seg(dims), datamodule=dm)
    assert trainer.global_step == 1 and math.isfinite(float(trainer.callback_metrics["val/seg_dice"]))
