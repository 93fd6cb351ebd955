"""End-to-end runs of the ``gemini-pl`` console script on phantoms: fit, resume, bf16, DDP, errors;
configs composed of presets; one output folder (``trainer.default_root_dir``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, print_config

CONFIG = str(REPO / "experiments" / "demo_pretrain.yaml")
SMALL = [
    "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "6", "--data.init_args.num_test", "4",
    "--data.init_args.num_val_pairs", "2", "--data.init_args.batch_size", "2",
    "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
]


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "gemini_pl.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def test_fit_writes_everything_then_resumes(tmp_path):
    res = run_cli(["fit", "--config", CONFIG, *SMALL, "--trainer.max_epochs", "2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "demo_pretrain"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert _global_step(last) == 2 * 2 * 2  # epochs × iterations × 2 optimiser steps
    assert list((run / "csv").glob("version_*/metrics.csv"))
    assert list((run / "wandb").glob("offline-run-*"))
    assert "Dice after warping" in res.stdout + res.stderr
    assert (tmp_path / "data" / "phantom2d" / "manifest.json").is_file()

    first_runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(first_runs) == 1

    res = run_cli(["fit", "--config", CONFIG, *SMALL, "--trainer.max_epochs", "3", "--ckpt_path", "last"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _global_step(last) == 3 * 2 * 2  # continued from step 8, not restarted
    # the resumed run continues the same W&B run: a second offline session with the same run id
    runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    run_id = first_runs[0].rsplit("-", 1)[-1]
    assert len(runs) == 2 and all(r.endswith("-" + run_id) for r in runs)
    assert torch.load(last, map_location="cpu", weights_only=True)["wandb_run_ids"] == [run_id]

    res = run_cli(["test", "--config", CONFIG, *SMALL, "--ckpt_path", str(last)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test/reg_dice" in res.stdout


def test_bf16_mixed_from_the_cli(tmp_path):
    res = run_cli(["fit", "--config", CONFIG, *SMALL, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "runs" / "demo_pretrain" / "checkpoints" / "last.ckpt").is_file()


def test_print_config(tmp_path):
    res = run_cli(["fit", "--config", CONFIG, "--print_config"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "gemini_pl.modules.GeminiPretrain" in res.stdout
    assert "lambda_gss: 0.8" in res.stdout


def test_wrong_config_key_is_named(tmp_path):
    res = run_cli(["fit", "--config", CONFIG, "--model.init_args.lamda_gss", "1.0"], cwd=tmp_path)
    assert res.returncode != 0
    assert "lamda_gss" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_data_root_is_named(tmp_path):
    missing = tmp_path / "no_such_root"
    res = run_cli(["fit", "--config", CONFIG, "--data.init_args.root", str(missing), "--data.init_args.generate", "false"], cwd=tmp_path)
    assert res.returncode == 2
    assert "gemini-pl: error:" in res.stderr
    assert str(missing) in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_cpu_processes(tmp_path):
    res = run_cli(
        ["fit", "--config", CONFIG, *SMALL, "--trainer.max_epochs", "1", "--trainer.strategy", "ddp",
         "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in res.stderr + res.stdout
    last = tmp_path / "runs" / "demo_pretrain" / "checkpoints" / "last.ckpt"
    # each rank takes the 2 iterations of its share of the epoch; the weights stay in sync
    assert _global_step(last) == 2 * 2
    # the checkpoint keeps each rank's augmentation stream (distinct: seeded with the rank offset)
    import torch

    gens = torch.load(last, map_location="cpu", weights_only=True)["gemini_pl"]["aug_generators"]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])


def _classes(items: list[dict]) -> list[str]:
    return [item["class_path"].rsplit(".", 1)[-1] for item in items]


def test_experiment_composed_of_presets(capsys):
    """An experiment names its presets (config: key): trainer, loggers and callbacks come from them,
    the experiment's own keys override them, and a preset given after it overrides it in turn."""
    cfg = print_config(["--config", str(REPO / "experiments" / "gemini_seg.yaml")], capsys)
    t = cfg["trainer"]
    assert (t["accelerator"], t["devices"], t["precision"], t["log_every_n_steps"]) == ("auto", 1, "32-true", 50)  # trainer/default
    assert (t["max_steps"], t["val_check_interval"], t["default_root_dir"]) == (40000, 200, "runs/gemini_seg")     # its own
    assert _classes(t["logger"]) == ["GeminiWandbLogger", "CSVLogger"]                                             # logger/wandb
    assert _classes(t["callbacks"]) == ["LastCheckpoint", "ModelCheckpoint", "ResultsWriter", "TestPictures"]      # callbacks/*
    assert t["callbacks"][0]["init_args"]["every_n_train_steps"] == 2000
    assert t["callbacks"][1]["init_args"]["monitor"] == "val/seg_dice" and t["callbacks"][1]["init_args"]["mode"] == "max"
    # output folders: the configs leave them unset, they follow trainer.default_root_dir
    assert [lg["init_args"]["save_dir"] for lg in t["logger"]] == ["runs/gemini_seg"] * 2
    assert t["callbacks"][0]["init_args"]["dirpath"] == t["callbacks"][1]["init_args"]["dirpath"] == os.path.join("runs/gemini_seg", "checkpoints")
    assert t["callbacks"][2]["init_args"]["results_dir"] == os.path.join("runs/gemini_seg", "results")
    assert "config" not in cfg
    for f in (REPO / "experiments").rglob("*.yaml"):
        text = f.read_text()
        assert not any(k in text for k in ("save_dir:", "dirpath:", "results_dir:", "output_dir:")), f

    cfg = print_config(["--config", str(REPO / "experiments" / "gemini_seg.yaml"),
                         "--config", str(REPO / "experiments" / "trainer" / "gpu.yaml")], capsys)
    t = cfg["trainer"]
    assert (t["accelerator"], t["precision"], t["max_steps"]) == ("gpu", "bf16-mixed", 40000)
    assert _classes(t["callbacks"]) == ["LastCheckpoint", "ModelCheckpoint", "ResultsWriter", "TestPictures"]

    cfg = print_config(["--config", str(REPO / "experiments" / "demo_pretrain.yaml")], capsys)
    t = cfg["trainer"]
    assert (t["accelerator"], t["max_epochs"], t["log_every_n_steps"]) == ("cpu", 8, 10)
    assert _classes(t["logger"]) == ["GeminiWandbLogger", "CSVLogger"]
    assert _classes(t["callbacks"]) == ["LastCheckpoint", "ModelCheckpoint", "RegistrationSummary"]  # + its own, appended
    assert t["callbacks"][1]["init_args"]["monitor"] == "val/reg_dice"

    cfg = print_config(["--config", str(REPO / "experiments" / "demo" / "seg.yaml")], capsys)
    assert _classes(cfg["trainer"]["logger"]) == ["CSVLogger"] and cfg["trainer"]["accelerator"] == "cpu"


def test_missing_preset_is_named(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("config: [trainer/nope.yaml]\nseed_everything: 1\n")
    res = run_cli(["fit", "--config", str(exp)], cwd=tmp_path)
    assert res.returncode == 2 and "trainer/nope.yaml" in res.stderr and "Traceback" not in res.stderr


def test_fill_output_dirs_keeps_given_values():
    from jsonargparse import Namespace

    from gemini_pl.cli import fill_output_dirs

    cfg = Namespace(trainer=Namespace(default_root_dir="R", logger=[
        Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=None, name="csv")),
        Namespace(class_path="gemini_pl.loggers.GeminiWandbLogger", init_args=Namespace(save_dir="runs", name=None)),
    ], callbacks=[
        Namespace(class_path="gemini_pl.callbacks.LastCheckpoint", init_args=None),
        Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath="elsewhere")),
        Namespace(class_path="gemini_pl.callbacks.ResultsWriter", init_args=Namespace(results_dir=None)),
        Namespace(class_path="gemini_pl.callbacks.NiftiPredictionWriter", init_args=Namespace(output_dir="predictions")),
    ]))
    assert fill_output_dirs(cfg) == "R"
    lg, cb = cfg.trainer.logger, cfg.trainer.callbacks
    assert lg[0].init_args.save_dir == "R" and lg[1].init_args.save_dir == "R"  # unset / the class default
    assert cb[0].init_args.dirpath == os.path.join("R", "checkpoints")
    assert cb[1].init_args.dirpath == "elsewhere"  # given: kept
    assert cb[2].init_args.results_dir == os.path.join("R", "results")
    assert cb[3].init_args.output_dir == os.path.join("R", "predictions")


def test_default_root_dir_moves_checkpoints_logs_and_results(tmp_path, monkeypatch):
    """``--trainer.default_root_dir X``: checkpoints, CSV logs and test results all under X, nothing
    under the config's own folder."""
    from gemini_pl.cli import cli_main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "elsewhere" / "X"
    small = ["--config", str(REPO / "experiments" / "demo" / "seg.yaml"), "--trainer.default_root_dir", str(out),
             "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "4", "--data.init_args.num_test", "2",
             "--data.init_args.labeled_batch_size", "2", "--data.init_args.samples_per_epoch", "4",
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1"]
    cli_main(["fit", *small])
    cli_main(["test", *small, "--ckpt_path", str(out / "checkpoints" / "last.ckpt")])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-*.ckpt"))              # the monitored val/seg_dice
    assert list((out / "csv").glob("version_*/metrics.csv"))
    assert (out / "results" / "test_cases.csv").is_file() and (out / "results" / "test_summary.md").is_file()
    assert not (tmp_path / "runs").exists()


def test_a_batch_limit_of_one_is_one_batch(tmp_path, monkeypatch):
    """``--trainer.limit_train_batches 1`` trains one batch per epoch (Lightning's int), not 100 % of
    them: Lightning annotates the limits float-first, and the command line used to read 1 as 1.0.
    Two batches per epoch here (4 samples, batch 2)."""
    from gemini_pl.cli import cli_main

    monkeypatch.chdir(tmp_path)
    small = ["--config", str(REPO / "experiments" / "demo" / "seg.yaml"), "--trainer.default_root_dir", str(tmp_path / "run"),
             "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "4", "--data.init_args.num_test", "2",
             "--data.init_args.labeled_batch_size", "2", "--data.init_args.samples_per_epoch", "4",
             "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.logger", "false"]
    cli = cli_main(["fit", *small, "--trainer.limit_train_batches", "1"])
    assert cli.trainer.limit_train_batches == 1 and isinstance(cli.trainer.limit_train_batches, int)
    assert cli.trainer.global_step == 1
    cli = cli_main(["fit", *small, "--trainer.limit_train_batches", "1.0"])  # a fraction: all of them
    assert cli.trainer.global_step == 2
    cli = cli_main([*small, "--trainer.limit_train_batches", "0.5", "--trainer.limit_test_batches", "3"], run=False)
    assert cli.trainer.limit_train_batches == 0.5 and cli.trainer.limit_test_batches == 3


def test_synthseg_3d_registration_config_is_the_measured_recipe(capsys):
    """experiments/synthseg/reg3d.yaml resolves to the 3D recipe of benchmarks/RESULTS.md ("Longer
    training in 3D"): 25 epochs x 40 iterations, batch 2, 4 mm volumes, velocity field, pyramid 3."""
    cfg = print_config(["--config", str(REPO / "experiments" / "synthseg" / "reg3d.yaml")], capsys)
    t, m, d = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    assert cfg["model"]["class_path"] == "gemini_pl.modules.Registration"
    assert t["max_epochs"] * t["limit_train_batches"] == 1000
    assert (m["integration_steps"], m["pyramid_levels"], m["init_from"]) == (7, 3, None)
    assert (d["dataset"], d["batch_size"], d["preprocessing"]["spacing"]) == ("synthseg3d", 2, [4, 4, 4])


def test_settings_given_with_a_checkpoint_replace_the_checkpoints(tmp_path, monkeypatch, caplog):
    """Lightning fills the model's settings from ``--ckpt_path``'s checkpoint; those the command line
    states win (a test-time ``cascade_passes``), with one warning naming them; unstated ones come
    from the checkpoint."""
    from gemini_pl.cli import cli_main

    monkeypatch.chdir(tmp_path)
    small = ["--config", str(REPO / "experiments" / "demo" / "reg.yaml"), "--trainer.default_root_dir", str(tmp_path / "r"),
             "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "4", "--data.init_args.num_test", "2",
             "--data.init_args.num_val_pairs", "1", "--data.init_args.batch_size", "2", "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0", "--trainer.limit_test_batches", "1"]
    cli_main(["fit", *small, "--model.init_args.cascade_passes", "3"])
    ckpt = str(tmp_path / "r" / "checkpoints" / "last.ckpt")
    monkeypatch.setattr("gemini_pl.cli.GeminiCLI._run_subcommand", lambda self, sub: None)
    assert cli_main(["test", *small, "--ckpt_path", ckpt]).model.hparams.cascade_passes == 3  # the checkpoint's
    caplog.clear()
    with caplog.at_level("WARNING", logger="gemini_pl.cli"):
        cli = cli_main(["test", *small, "--model.init_args.cascade_passes", "2", "--ckpt_path", ckpt])
    assert cli.model.hparams.cascade_passes == 2
    warned = [r.getMessage() for r in caplog.records if r.name == "gemini_pl.cli"]
    assert len(warned) == 1 and "cascade_passes 3 -> 2" in warned[0] and ckpt in warned[0]


def test_a_learning_rate_given_on_resume_is_the_one_trained_with(tmp_path, monkeypatch):
    """``--ckpt_path`` restores the Adam state with the learning rate it was saved with; a
    ``model.lr`` given with the checkpoint (a step schedule by resuming) is the one the resumed
    steps use, with a warning; without one the config's (here the checkpoint's) rate goes on."""
    from gemini_pl.cli import cli_main

    monkeypatch.chdir(tmp_path)
    small = ["--config", str(REPO / "experiments" / "demo" / "reg.yaml"), "--trainer.default_root_dir", str(tmp_path / "r"),
             "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "4", "--data.init_args.num_test", "2",
             "--data.init_args.num_val_pairs", "1", "--data.init_args.batch_size", "2",
             "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"]
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"

    def saved_lrs() -> list[float]:
        states = torch.load(ckpt, map_location="cpu", weights_only=False)["optimizer_states"]
        return [g["lr"] for s in states for g in s["param_groups"]]

    cli_main(["fit", *small, "--trainer.max_epochs", "1"])
    assert saved_lrs() == [0.001]  # experiments/demo/reg.yaml
    cli_main(["fit", *small, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)])
    assert saved_lrs() == [0.001]
    with pytest.warns(UserWarning, match=r"model.lr 0.0005 replaces the learning rate restored .*\(0.001\)"):
        cli_main(["fit", *small, "--trainer.max_epochs", "3", "--ckpt_path", str(ckpt), "--model.init_args.lr", "0.0005"])
    assert _global_step(ckpt) == 3 and saved_lrs() == [0.0005]
