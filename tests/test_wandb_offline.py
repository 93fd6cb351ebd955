"""W&B holds what the README promises, read back from an offline run's own files: the complete
resolved config (trainer with callbacks and loggers, model, data), a media file, the per-case test
table and the summary metrics. Also: where pictures go (media policy), the curves and report.md."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from wandb_log import read_chunks, read_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """fit (2 iterations, one validation with media) then test on one trainer: one offline W&B run."""
    import os

    from gemini_pl.cli import cli_main

    root = tmp_path_factory.mktemp("wandb_run")
    old = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        cli = cli_main([
            "fit", "--config", str(REPO / "experiments/demo/seg.yaml"),
            "--config", str(REPO / "experiments/logger/wandb.yaml"),
            "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.log_every_n_steps", "1",
            "--trainer.callbacks+=gemini_pl.callbacks.WandbMedia", "--log_media", "true",
            "--data.init_args.root", str(root / "data"), "--data.init_args.size", "16",
            "--data.init_args.num_test", "2", "--data.init_args.num_val", "2", "--data.init_args.num_unlabeled", "2",
            "--data.init_args.samples_per_epoch", "4", "--model.init_args.widths", "[8, 8, 8, 8, 8, 8, 8, 8, 8]",
        ])
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}  # val/ ...
        cli.trainer.test(cli.model, datamodule=cli.datamodule)
        metrics.update({k: float(v) for k, v in cli.trainer.callback_metrics.items()})  # test/ ...
        for logger in cli.trainer.loggers:
            if type(logger).__name__ == "GeminiWandbLogger":
                logger.experiment.finish()
    finally:
        if old is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = old
    run_dir = Path(glob.glob(str(root / "wandb" / "offline-run-*"))[0])
    log_file = next(run_dir.glob("run-*.wandb"))
    wait_for_exit_record(log_file)
    return SimpleNamespace(root=root, run_dir=run_dir, log=read_run(log_file), metrics=metrics)


def wait_for_exit_record(path: Path, timeout: float = 60.0) -> None:
    """W&B's service writes the log after ``finish()`` returns: wait for its final ``exit`` record."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunks = read_chunks(path)
        except AssertionError:  # a record being written
            chunks = []
        if chunks:
            rec = pb.Record()
            rec.ParseFromString(chunks[-1])
            if rec.WhichOneof("record_type") == "exit":
                return
        time.sleep(0.2)
    raise AssertionError(f"{path} has no exit record after {timeout} s")


@pytest.mark.slow  # one offline run for these five tests: ~25 s on 2 cores
def test_transaction_log_framing(offline_run):
    raw = next(offline_run.run_dir.glob("run-*.wandb")).read_bytes()
    assert raw[:4] == b":W&B"
    assert len(read_chunks(next(offline_run.run_dir.glob("run-*.wandb")))) > 5


@pytest.mark.slow  # one offline run for these five tests: ~25 s on 2 cores
def test_run_config_is_the_resolved_config(offline_run):
    config = offline_run.log["config"]
    saved = yaml.safe_load((offline_run.root / "config.yaml").read_text())  # LightningCLI's own copy
    for section in ("trainer", "model", "data", "seed_everything"):
        assert config[section] == saved[section], section
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert "gemini_pl.callbacks.WandbMedia" in callbacks and "gemini_pl.callbacks.ResultsWriter" in callbacks
    assert [lg["class_path"] for lg in config["trainer"]["logger"]][0] == "gemini_pl.loggers.GeminiWandbLogger"
    assert config["trainer"]["max_epochs"] == 1
    assert config["model"]["class_path"] == "gemini_pl.modules.Segmentation"
    assert config["data"]["init_args"]["size"] == 16
    assert config["log_media"] is True


@pytest.mark.slow  # one offline run for these five tests: ~25 s on 2 cores
def test_media_file_in_the_run(offline_run):
    rows = [h for h in offline_run.log["history"] if "media/prediction/filenames" in h]
    assert rows, "no media/prediction in the history"
    name = rows[0]["media/prediction/filenames"][0]
    assert name in offline_run.log["files"]
    png = Image.open(offline_run.run_dir / "files" / name)
    # the middle slice of a 16 x 16 phantom, drawn at its size
    assert png.size == (rows[0]["media/prediction/width"], rows[0]["media/prediction/height"]) == (16, 16)


@pytest.mark.slow  # one offline run for these five tests: ~25 s on 2 cores
def test_per_case_table_and_summary(offline_run):
    summary = offline_run.log["summary"]
    for key in ("val/seg_dice", "test/seg_dice", "test/hd95"):
        assert summary[key] == pytest.approx(offline_run.metrics[key], rel=1e-6), key
    table = json.loads((offline_run.run_dir / "files" / summary["test/cases/path"]).read_text())
    with open(offline_run.root / "results" / "test_cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert table["columns"] == list(rows[0].keys())
    assert [r[0] for r in table["data"]] == [r["case"] for r in rows]
    dice = table["columns"].index("dice")
    np.testing.assert_allclose([r[dice] for r in table["data"]], [float(r["dice"]) for r in rows], atol=1e-4)
    assert np.mean([r[dice] for r in table["data"]]) == pytest.approx(100 * summary["test/seg_dice"], rel=1e-4)


@pytest.mark.slow  # one offline run for these five tests: ~25 s on 2 cores
def test_curves_and_report_on_disk(offline_run):
    results = offline_run.root / "results"
    report = (results / "report.md").read_text()
    assert "![val/seg_dice](curves/val_seg_dice.png)" in report
    assert "## Test results" in report and "| dice (%) |" in report
    png = Image.open(results / "curves" / "val_seg_dice.png")
    assert png.size == (640, 360)


# ---------------------------------------------------------------- where pictures go
def test_media_policy():
    from gemini_pl.callbacks.media_policy import upload_media_allowed

    real = SimpleNamespace(datamodule=SimpleNamespace(phantom=None, dataset="candi"))
    phantom = SimpleNamespace(datamodule=SimpleNamespace(phantom=object(), dataset="x"))
    mni = SimpleNamespace(datamodule=SimpleNamespace(phantom=None, dataset="mni2d"))
    assert not upload_media_allowed(real)
    assert upload_media_allowed(phantom) and upload_media_allowed(mni)
    real.gemini_log_media = True  # gemini-pl ... --log_media true
    assert upload_media_allowed(real)
    phantom.gemini_log_media = False
    assert not upload_media_allowed(phantom)
    assert upload_media_allowed(phantom, explicit=True)


def test_media_of_real_data_stay_local(tmp_path):
    """Without --log_media, WandbMedia on a dataset under a use agreement writes PNGs under
    <root>/media and logs nothing to W&B."""
    from gemini_pl.callbacks import WandbMedia

    logged = []

    class FakeWandb:
        def log_image(self, **kw):
            logged.append(kw)

    import gemini_pl.callbacks.wandb_media as wm

    cb = WandbMedia()
    cb._batch = {"image": torch.rand(1, 1, 8, 8), "label": torch.randint(0, 2, (1, 1, 8, 8))}
    module = torch.nn.Module()
    module.segment_logits = lambda x: torch.stack([1 - x, x], 1)[:, :, 0]
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, global_step=3,
                              default_root_dir=str(tmp_path), datamodule=SimpleNamespace(phantom=None, dataset="candi"))
    orig = wm._wandb_loggers
    wm._wandb_loggers = lambda t: [FakeWandb()]
    try:
        module.device = torch.device("cpu")
        cb.on_validation_end(trainer, module)
    finally:
        wm._wandb_loggers = orig
    assert logged == []
    names = sorted(Path(p).name for p in cb.local_files)
    assert names == ["media_ground_truth_step3_0.png", "media_prediction_step3_0.png"]
    gt = np.asarray(Image.open(tmp_path / "media" / names[0]))
    assert gt.shape == (8, 8, 3)


def test_report_sections_are_replaced(tmp_path):
    from gemini_pl.report import write_section

    report = tmp_path / "report.md"
    write_section(report, "training", "curves v1")
    write_section(report, "test", "table")
    write_section(report, "training", "curves v2")
    text = report.read_text()
    assert "curves v1" not in text
    assert text.index("curves v2") < text.index("table")
    assert text.count("<!-- section: training -->") == 1
