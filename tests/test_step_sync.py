"""No host read of a computed value inside a training step, apart from the logging cadence.

On a GPU every read of a tensor's value on the host (``item``, ``bool``, ``float``, ``tolist``…)
waits for the device. The probe below records every such read made while a training step runs
(steps between two logging steps) and where it came from. Reads of CPU-side random draws are
allowed by design: the appearance corruption plans its shuffles and boxes on the CPU generator
(``gemini_pl/augment``), and the sampler picks indices on the CPU (``gemini_pl/data``).
"""

from __future__ import annotations

import collections
import traceback

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.modules import GeminiPretrain, Registration, Segmentation

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")
ALLOWED = ("gemini_pl/augment/", "gemini_pl/data/")


class HostReadProbe(L.Callback):
    """Records host reads of tensor values during training steps after the first one."""

    def __init__(self) -> None:
        self.reads: collections.Counter = collections.Counter()
        self.active = False
        self.steps = 0
        self._orig = {name: getattr(torch.Tensor, name) for name in READS}

    def _install(self) -> None:
        for name in READS:
            orig = self._orig[name]

            def spy(tensor, *args, _orig=orig, _name=name, **kwargs):
                if self.active:
                    frames = traceback.extract_stack()[:-1]
                    site = next((f for f in reversed(frames) if "/torch/" not in f.filename), frames[-1])
                    self.reads[(_name, site.filename, site.lineno, site.line)] += 1
                return _orig(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, spy)

    def _remove(self) -> None:
        for name, orig in self._orig.items():
            setattr(torch.Tensor, name, orig)

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.active = batch_idx >= 1  # the first step builds caches (identity grids, …)
        self.steps += int(self.active)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.active = False

    def on_train_end(self, trainer, pl_module) -> None:
        self._remove()

    def offending(self) -> dict:
        return {k: v for k, v in self.reads.items() if not any(a in k[1].replace("\\", "/") for a in ALLOWED)}


def _run(model: L.LightningModule, dm: L.LightningDataModule, tmp_path, batches: int = 4) -> HostReadProbe:
    probe = HostReadProbe()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1000, callbacks=[probe], default_root_dir=tmp_path,
    )
    try:
        trainer.fit(model, datamodule=dm)
    finally:
        probe._remove()
    assert probe.steps == batches - 1
    return probe


@pytest.mark.parametrize("schedule", ["alternate", "joint"])
def test_gemini_pretrain_step_reads_nothing_on_the_host(tmp_path, schedule):
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, schedule=schedule)
    probe = _run(model, MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"), tmp_path)
    assert probe.offending() == {}
    # the probe does see reads: the corruption's CPU-side plans are read on the host by design
    assert any("gemini_pl/augment/" in k[1] for k in probe.reads)


def test_segmentation_and_registration_steps_read_nothing_on_the_host(tmp_path):
    seg = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6)
    assert _run(seg, MemoryDataModule(2, 32, train_mode="labeled"), tmp_path).offending() == {}
    reg = Registration(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    assert _run(reg, MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"), tmp_path).offending() == {}


def test_probe_catches_a_host_read(tmp_path):
    """The probe is not blind: a module that reads its loss every step is caught."""

    class Reads(Segmentation):
        def training_losses(self, batch):
            for name, terms in super().training_losses(batch):
                if float(terms["total"]) > 1e9:  # a host read, as a careless NaN check would do
                    raise AssertionError
                yield name, terms

    probe = _run(Reads(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6), MemoryDataModule(2, 32, train_mode="labeled"), tmp_path)
    assert any(k[0] == "__float__" and "test_step_sync.py" in k[1] for k in probe.offending())


def test_diagnostics_and_logging_run_only_at_the_logging_cadence(tmp_path, monkeypatch):
    """4 GeminiPretrain iterations, ``log_every_n_steps`` 2: the feature-similarity diagnostic is
    computed on iterations 2 and 4 only (every iteration before: per-step work the loggers never
    wrote); the loss terms are still handed to ``log_dict`` every iteration (``callback_metrics``
    stays current for callbacks that monitor a training term)."""
    import gemini_pl.modules.gemini as gemini_mod

    calls = {"feature_similarity": 0, "log_dict": 0}
    real = gemini_mod.feature_similarity

    def counted(f):
        calls["feature_similarity"] += 1
        return real(f)

    monkeypatch.setattr(gemini_mod, "feature_similarity", counted)
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    real_log_dict = model.log_dict

    def log_dict(*args, **kwargs):
        calls["log_dict"] += 1
        return real_log_dict(*args, **kwargs)

    model.log_dict = log_dict
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=4, limit_val_batches=0, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=2, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 4
    assert calls == {"feature_similarity": 2, "log_dict": 4}
    import csv

    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/gemini/feature_similarity")]
    assert len(rows) == 2  # what the loggers write is unchanged: one row per logging step


@pytest.mark.parametrize("options", [{"head_balance": 1.0}, {"optimizer_states": "per_loss"}])
def test_two_step_options_read_nothing_on_the_host(tmp_path, options):
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, **options)
    probe = _run(model, MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"), tmp_path)
    assert probe.offending() == {}
