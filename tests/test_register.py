"""Registration: fit/validate/test in 2D and 3D, warped-label Dice loss, velocity integration,
exact transfer of the backbone and deformer from a GeminiPretrain checkpoint."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.callbacks import ResultsWriter
from gemini_pl.errors import ConfigError
from gemini_pl.modules import GeminiPretrain, Registration


def _trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def _reg(dims: int, **kw) -> Registration:
    return Registration(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, lr=1e-3, **kw)


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_fit_validate_test(tmp_path, dims, size):
    model = _reg(dims)
    dm = MemoryDataModule(dims, size, train_mode="pairs", eval_mode="pairs")
    writer = ResultsWriter(results_dir=str(tmp_path), print_summary=False)
    flow0 = model.net.deformer.flow.weight.detach().clone()
    trainer = _trainer(tmp_path, limit_val_batches=1, callbacks=[writer])
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    assert not torch.equal(flow0, model.net.deformer.flow.weight)
    assert model.net.head is None
    for key in ("train/reg/ncc", "train/reg/smooth", "train/reg/total", "val/reg_dice", "val/reg_dice_unwarped", "val/folding_percent", "val/sdlogj"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key
    trainer.test(model, datamodule=dm)
    m = trainer.callback_metrics
    for key in ("test/reg_dice", "test/reg_dice_unwarped", "test/folding_percent", "test/sdlogj", "test/reg_hd95"):
        assert key in m, key
    rows = list(csv.DictReader(open(writer.csv_path)))
    assert [r["case"] for r in rows] == ["case0->case1", "case1->case2", "case2->case0"]
    assert {"dice", "dice_unwarped", "folding", "sdlogj", "hd95"} <= set(rows[0])
    assert "folding (%)" in writer.summary_path.read_text()


def test_unwarped_dice_matches_the_identity(tmp_path):
    """Before training the field is ~0, so warped Dice equals un-warped Dice."""
    model = _reg(2)
    dm = MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs")
    trainer = _trainer(tmp_path)
    trainer.test(model, datamodule=dm)
    m = trainer.callback_metrics
    assert float(m["test/reg_dice"]) == pytest.approx(float(m["test/reg_dice_unwarped"]), abs=1e-6)
    assert float(m["test/folding_percent"]) == 0.0


def test_warped_label_dice_loss_with_labeled_batches(tmp_path):
    model = _reg(2, lambda_dice=1.0, bidirectional=False)
    dm = MemoryDataModule(2, 32, train_mode="labeled", eval_mode="pairs", labeled_batch_size=2)
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert "train/reg/dice" in trainer.callback_metrics
    assert 0.0 <= float(trainer.callback_metrics["train/reg/dice"]) <= 1.0


def test_velocity_integration_option(tmp_path):
    model = _reg(2, integration_steps=5)
    v = torch.zeros(1, 2, 16, 16)
    v[:, 0] = 0.5
    assert torch.allclose(model.to_displacement(v)[..., 4:-4, 4:-4], v[..., 4:-4, 4:-4], atol=1e-5)
    _trainer(tmp_path, limit_val_batches=1).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    with pytest.raises(ConfigError, match="integration_steps"):
        _reg(2, integration_steps=-1)


def test_labeled_batches_of_one_are_refused(tmp_path):
    dm = MemoryDataModule(2, 32, train_mode="labeled", batch_size=1)
    with pytest.raises(ConfigError, match="train_mode"):
        _trainer(tmp_path, fast_dev_run=1).fit(_reg(2), datamodule=dm)


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_init_from_pretrain_transfers_exactly_backbone_and_deformer(tmp_path, dims, size):
    pre = GeminiPretrain(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    trainer = _trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(pre, datamodule=MemoryDataModule(dims, size, train_mode="pairs", eval_mode="pairs"))
    path = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(path)

    model = _reg(dims, init_from=str(path))
    _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(dims, size, train_mode="pairs"))
    ours, theirs = model.net.state_dict(), pre.net.state_dict()
    expected = sorted(k for k in theirs if k.startswith(("backbone.", "deformer.")))
    assert sorted(ours) == expected  # no head in Registration
    assert all(torch.equal(ours[k], theirs[k]) for k in expected)
    assert sorted(model.transfer_report.loaded) == expected
    assert all(k.startswith("head.") for k in model.transfer_report.skipped)


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_dev_run_on_phantom_files(tmp_path, phantom_root, dims):
    """fast_dev_run with the real GeminiDataModule (train_mode pairs, eval_mode pairs)."""
    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(phantom_root), dataset=f"phantom{dims}d", spatial_dims=dims, train_mode="pairs",
                          eval_mode="pairs", num_val_pairs=2)
    trainer = _trainer(tmp_path, fast_dev_run=1)
    trainer.fit(_reg(dims), datamodule=dm)
    assert trainer.global_step == 1 and math.isfinite(float(trainer.callback_metrics["val/reg_dice"]))


def test_test_pairs_of_files_give_hd95_in_physical_units(tmp_path, phantom_root):
    """Pairs read from files carry each image's spacing, so HD95 is logged in mm (``test/reg_hd95``)."""
    import SimpleITK as sitk

    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(phantom_root), dataset="phantom2d", spatial_dims=2, train_mode="pairs",
                          eval_mode="pairs", num_val_pairs=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    first = sorted((phantom_root / "phantom2d" / "test" / "labeled" / "image").glob("*.nii.gz"))[0]
    spacing = list(sitk.ReadImage(str(first)).GetSpacing())  # file axes = tensor axes (see the phantom writer)
    assert batch["spacing_b"].shape == (1, 2) and batch["spacing_b"][0].tolist() == pytest.approx(spacing)
    trainer = _trainer(tmp_path, limit_test_batches=2)
    out = trainer.test(_reg(2), datamodule=dm)[0]
    assert "test/reg_hd95" in out and "test/reg_hd95_vox" not in out


def test_init_from_a_deformer_of_the_other_deformation_model_warns(tmp_path):
    """A deformer pre-trained as a velocity field (integration_steps 7) fine-tuned as a displacement
    (the default 0) changes the meaning of its output: said once, naming both settings; the same
    setting on both sides says nothing."""
    import warnings

    pre = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, integration_steps=7)
    trainer = _trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(pre, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    path = tmp_path / "pre_svf.ckpt"
    trainer.save_checkpoint(path)

    def fit(**kw):
        model = _reg(2, init_from=str(path), **kw)
        _trainer(tmp_path, max_steps=0, limit_val_batches=0).fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs"))

    with pytest.warns(UserWarning, match=r"integration_steps=7 \(output = a velocity field integrated in 7 steps\), "
                                         r"this model reads it with integration_steps=0 \(a displacement\); "
                                         r"set model.init_args.integration_steps=7"):
        fit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(integration_steps=7)
    assert not [w for w in caught if "integration_steps" in str(w.message)]
