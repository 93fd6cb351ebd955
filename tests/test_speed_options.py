"""CompileNetwork and ChannelsLast change how the network runs, not the losses it trains on."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.callbacks import ChannelsLast, CompileNetwork
from gemini_pl.modules import GeminiPretrain, Segmentation


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def _losses(make_module, dims: int, callbacks, train_mode: str = "pairs") -> tuple[list[dict[str, float]], L.LightningModule]:
    L.seed_everything(0)
    module = make_module(dims)
    rec = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        callbacks=[rec, *callbacks],
    )
    trainer.fit(module, datamodule=MemoryDataModule(dims, 16 if dims == 3 else 32, train_mode=train_mode, eval_mode="pairs"))
    return rec.losses, module


def _pretrain(dims: int) -> GeminiPretrain:
    return GeminiPretrain(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)


def _assert_same(a: list[dict[str, float]], b: list[dict[str, float]], rtol: float) -> None:
    assert len(a) == len(b) == 3 and a[0].keys() == b[0].keys() and len(a[0]) >= 1
    for step_a, step_b in zip(a, b):
        for key, value in step_a.items():
            assert step_b[key] == pytest.approx(value, rel=rtol, abs=1e-6), key


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_gives_the_eager_losses(dims):
    eager, _ = _losses(_pretrain, dims, [])
    cl, module = _losses(_pretrain, dims, [ChannelsLast()])
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    conv = next(w for w in module.net.parameters() if w.dim() == dims + 2 and w.shape[1] > 1 and w.shape[2] > 1)
    assert conv.is_contiguous(memory_format=fmt) and not conv.is_contiguous()
    _assert_same(eager, cl, rtol=1e-4)  # three steps of training: same losses up to summation order


def test_channels_last_segmentation():
    seg = lambda dims: Segmentation(spatial_dims=dims, widths=SMALL_WIDTHS, num_classes=6)  # noqa: E731
    eager, _ = _losses(seg, 2, [], train_mode="labeled")
    cl, _ = _losses(seg, 2, [ChannelsLast()], train_mode="labeled")
    _assert_same(eager, cl, rtol=1e-4)


@pytest.mark.slow
def test_compiled_network_gives_the_eager_losses():
    """Inductor on CPU: a few minutes of compilation on two cores (hence slow-marked)."""
    eager, _ = _losses(_pretrain, 2, [])
    compiled, module = _losses(_pretrain, 2, [CompileNetwork()])
    assert module.net.backbone._compiled_call_impl is not None  # nn.Module.compile took effect
    assert "backbone.inc.double_conv.0.weight" in module.net.state_dict()  # names unchanged
    _assert_same(eager, compiled, rtol=1e-4)


def test_callbacks_need_a_net():
    from gemini_pl.errors import ConfigError

    class NoNet(L.LightningModule):
        pass

    with pytest.raises(ConfigError, match="no `net`"):
        ChannelsLast().setup(None, NoNet(), "fit")
