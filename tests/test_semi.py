"""GeminiSemi: the published two-step schedule in 2D and 3D, joint option, one affine for the pair
and the labeled image + label, softmax vs sigmoid by label kind, segmentation validation."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.callbacks import ResultsWriter
from gemini_pl.errors import ConfigError
from gemini_pl.losses import sigmoid_seg_loss, softmax_seg_loss
from gemini_pl.metrics import one_hot_labels
from gemini_pl.modules import GeminiSemi
from gemini_pl.spatial import apply_affine, random_affine


def _trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def _semi(dims: int, **kw) -> GeminiSemi:
    kw.setdefault("num_classes", 6)
    return GeminiSemi(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, lr=1e-3, **kw)


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_fit_two_steps_per_iteration_and_seg_validation(tmp_path, dims, size):
    model = _semi(dims)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    writer = ResultsWriter(results_dir=str(tmp_path), print_summary=False)
    trainer = _trainer(tmp_path, limit_val_batches=1, callbacks=[writer])
    dm = MemoryDataModule(dims, size, train_mode="pairs+labeled", eval_mode="cases")
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4  # GEMINI step + segmentation step per iteration
    changed = {k.split(".")[1] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {"backbone", "deformer", "head"} <= changed
    m = trainer.callback_metrics
    for key in ("train/gemini/gvs", "train/gemini/gss_pos", "train/seg/total", "val/seg_dice"):
        assert math.isfinite(float(m[key])), key
    assert model.hparams.per_axis_scale is False and model.net.head[3].out_channels == 6
    trainer.test(model, datamodule=dm)
    assert {"test/seg_dice", "test/avd", "test/hd95"} <= set(trainer.callback_metrics)
    assert writer.csv_path.is_file()


def test_joint_schedule(tmp_path):
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(_semi(2, schedule="joint"), datamodule=MemoryDataModule(2, 32))
    assert trainer.global_step == 2


def test_registration_validation_when_given_pairs(tmp_path):
    trainer = _trainer(tmp_path, limit_val_batches=1)
    trainer.fit(_semi(2), datamodule=MemoryDataModule(2, 32, eval_mode="pairs"))
    assert "val/reg_dice" in trainer.callback_metrics


def test_one_affine_for_pair_labeled_image_and_label():
    model = _semi(2)
    dm = MemoryDataModule(2, 32)
    batch = next(iter(dm.train_dataloader()))
    state = model.aug_generator.get_state()
    out = model.prepare_batch(batch)
    x_a, x_b = out["image_a"], out["image_b"]
    g = torch.Generator()
    g.set_state(state)
    theta = random_affine(1, 2, scale=(0.75, 1.25), per_axis_scale=False, generator=g)
    assert not torch.equal(x_a, batch["image_a"])
    assert torch.equal(x_a, apply_affine(batch["image_a"], theta))
    assert torch.equal(x_b, apply_affine(batch["image_b"], theta))
    assert torch.equal(out["image"], apply_affine(batch["image"], theta))
    assert torch.equal(out["label"], apply_affine(batch["label"], theta, mode="nearest"))
    assert out["label"].dtype == torch.int64 and set(out["label"].unique().tolist()) <= set(range(6))
    # one scale factor for all axes (Semi): the matrix is a rotation times one scalar
    m = theta[0, :, :2]
    assert torch.allclose(m @ m.T, (m @ m.T)[0, 0] * torch.eye(2), atol=1e-6)


def test_loss_follows_the_label_kind():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    model = _semi(2, num_classes=3, label_kind="multilabel")
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    assert torch.allclose(model.seg_loss(logits, masks), sigmoid_seg_loss(logits, masks))
    model = _semi(2, num_classes=3, label_kind="multiclass")
    lab = torch.randint(0, 3, (2, 1, 8, 8))
    assert torch.allclose(model.seg_loss(logits, lab), softmax_seg_loss(logits, one_hot_labels(lab, 3)))
    with pytest.raises(ConfigError, match="multilabel"):
        model.seg_loss(logits, masks)


def test_multilabel_3d_fit(tmp_path):
    model = _semi(3, num_classes=3)
    trainer = _trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, datamodule=MemoryDataModule(3, 16, labels="multilabel"))
    assert model.label_kind == "multilabel" and math.isfinite(float(trainer.callback_metrics["val/seg_dice"]))


def test_missing_labeled_batch_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="pairs\\+labeled"):
        _trainer(tmp_path, fast_dev_run=1).fit(_semi(2), datamodule=MemoryDataModule(2, 32, train_mode="pairs"))


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_dev_run_on_phantom_files(tmp_path, phantom_root, dims):
    """fast_dev_run with the real GeminiDataModule (train_mode pairs+labeled, eval_mode cases)."""
    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(phantom_root), dataset=f"phantom{dims}d", spatial_dims=dims,
                          train_mode="pairs+labeled", eval_mode="cases", num_labeled=2)
    trainer = _trainer(tmp_path, fast_dev_run=1)
    trainer.fit(_semi(dims), datamodule=dm)
    assert trainer.global_step == 2 and math.isfinite(float(trainer.callback_metrics["val/seg_dice"]))
