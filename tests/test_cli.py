"""End-to-end runs of the ``gemini-pl`` console script on phantoms: fit, resume, bf16, DDP, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

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
    assert "test/dice_warped" in res.stdout


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
