"""GeminiPretrain: fast_dev_run in 2D and 3D, the two-step schedule, the non-finite guard, bf16."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS, poison_gemini_loss
from gemini_pl.data import GeminiDataModule
from gemini_pl.errors import NonFiniteLossError
from gemini_pl.modules import GeminiPretrain


def _trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def _module(dims: int, **kw) -> GeminiPretrain:
    return GeminiPretrain(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, **kw)


def _data(root, dims: int, **kw) -> GeminiDataModule:
    return GeminiDataModule(root=str(root), dataset=f"phantom{dims}d", spatial_dims=dims, batch_size=2, num_val_pairs=2, **kw)


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_dev_run(tmp_path, phantom_root, dims):
    model = _module(dims)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=_data(phantom_root, dims))
    # the published schedule: two optimiser steps per iteration
    assert trainer.global_step == 4
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("net.backbone.") for k in changed)
    assert any(k.startswith("net.deformer.") for k in changed)
    assert any(k.startswith("net.head.") for k in changed)
    m = trainer.callback_metrics
    for key in ("train/gemini/smooth", "train/gemini/gvs", "train/gemini/gss_pos", "train/gemini/gss_align", "train/gemini/total",
                "train/restore/total", "val/reg_dice", "val/reg_dice_unwarped", "val/folding_percent", "val/sdlogj"):
        assert key in m and math.isfinite(float(m[key])), key
    assert model.nonfinite_steps == 0


def test_joint_schedule_takes_one_step(tmp_path, phantom_root):
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(_module(2, schedule="joint"), datamodule=_data(phantom_root, 2))
    assert trainer.global_step == 3


def test_alternate_steps_use_updated_weights(phantom_root):
    """Step 2 (the head loss) sees the weights after step 1, as published."""
    model = _module(2, spatial_augment=False)
    seen = []
    orig = model.head_loss

    def spy(batch):
        seen.append(model.net.backbone.inc.double_conv[0].weight.detach().clone())
        return orig(batch)

    model.head_loss = spy
    trainer = _trainer(phantom_root, fast_dev_run=1)
    w0 = model.net.backbone.inc.double_conv[0].weight.detach().clone()
    trainer.fit(model, datamodule=_data(phantom_root, 2))
    assert not torch.equal(seen[0], w0)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, phantom_root):
    model = _module(2)
    poison_gemini_loss(model, at_call=2)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(model, datamodule=_data(phantom_root, 2))
    assert model.nonfinite_steps == 1
    assert trainer.global_step == 6  # 3 iterations × 2 optimiser calls (the skipped one included)
    # Adam's own step count: 3 head steps, 2 GEMINI steps (the skipped one left no trace)
    opt = trainer.optimizers[0]
    steps = lambda p: int(opt.state[p]["step"])  # noqa: E731
    assert steps(model.net.head[-1].weight) == 3
    assert steps(model.net.deformer.flow.weight) == 2
    assert steps(model.net.backbone.inc.double_conv[0].weight) == 5
    for p in model.parameters():
        assert torch.isfinite(p).all()


def test_consecutive_nonfinite_losses_stop_with_step(tmp_path, phantom_root):
    model = _module(2, max_consecutive_nonfinite=3)
    orig = model.gemini_terms

    def poisoned(x_a, x_b):
        terms = orig(x_a, x_b)
        terms["total"] = terms["total"] + float("inf")
        return terms

    model.gemini_terms = poisoned
    trainer = _trainer(tmp_path, max_steps=20, limit_val_batches=0, log_every_n_steps=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive non-finite gemini losses, last at global step \d+"):
        trainer.fit(model, datamodule=_data(phantom_root, 2))
    # the last good state is on disk; no GEMINI step ran, so the deformer is untouched
    saved = torch.load(tmp_path / "checkpoints" / "nonfinite-stop.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(saved["state_dict"]["net.deformer.flow.weight"], before["net.deformer.flow.weight"])
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_bf16_mixed_runs_on_cpu(tmp_path, phantom_root):
    trainer = _trainer(tmp_path, fast_dev_run=1, precision="bf16-mixed")
    model = _module(2)
    trainer.fit(model, datamodule=_data(phantom_root, 2))
    assert math.isfinite(float(trainer.callback_metrics["train/gemini/total"]))
    assert model.net.backbone.inc.double_conv[0].weight.dtype == torch.float32


def test_spatial_dims_mismatch_is_a_config_error(tmp_path, phantom_root):
    from gemini_pl.errors import ConfigError

    trainer = _trainer(tmp_path, fast_dev_run=1)
    with pytest.raises(ConfigError, match="model.spatial_dims=3 but data.spatial_dims=2"):
        trainer.fit(_module(3), datamodule=_data(phantom_root, 2))


def test_model_and_data_seeds_are_independent_settings(tmp_path, phantom_root):
    """The model's augmentation seed (aug_seed) and the data module's seed may differ with a logger on
    (a shared hyper-parameter name with different values makes Lightning refuse to run)."""
    from lightning.pytorch.loggers import CSVLogger

    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=CSVLogger(tmp_path))
    model = _module(2, aug_seed=3)
    trainer.fit(model, datamodule=_data(phantom_root, 2, seed=5))
    assert trainer.global_step == 2
    assert model.hparams.aug_seed == 3 and trainer.datamodule.hparams.seed == 5


def test_nonfinite_grad_check_finds_nan_and_inf_and_keeps_values():
    from gemini_pl.modules.guard import nonfinite_grads as _nonfinite_grads

    grads = [torch.randn(4, 3), torch.randn(7)]
    before = [g.clone() for g in grads]
    assert float(_nonfinite_grads(grads)) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(grads, before))  # values untouched
    for bad in (float("nan"), float("inf"), -float("inf")):
        g = [torch.randn(5), torch.tensor([1.0, bad]), torch.randn(2, dtype=torch.float64)]
        assert float(_nonfinite_grads(g)) == 1.0
    assert float(_nonfinite_grads([torch.randn(3), torch.tensor([float("nan")], dtype=torch.float64)])) == 1.0
    assert float(_nonfinite_grads([])) == 0.0
