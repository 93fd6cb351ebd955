"""Crash safety: kill-and-resume gives the uninterrupted result, atomic checkpoint writes,
untrusted files refused, config mistakes named before training starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_cli import run_cli

from gemini_pl.checkpoint_io import AtomicCheckpointIO
from gemini_pl.errors import CheckpointError

CONFIG = str(REPO / "experiments" / "demo_pretrain.yaml")


SEMI_MODEL = """
        model:
          class_path: gemini_pl.modules.GeminiSemi
          init_args:
            spatial_dims: 2
            num_classes: 6
            widths: [8, 16, 32, 64, 128, 64, 32, 16, 8]
            deformer_widths: [8, 16, 16, 16, 8]
            lr: 0.001
        data:
          class_path: gemini_pl.data.PhantomDataModule
          init_args: {root: data, dataset: phantom2d, spatial_dims: 2, size: 32, num_unlabeled: 6,
                      num_test: 4, num_val_pairs: 2, batch_size: 2, train_mode: pairs+labeled,
                      eval_mode: cases, num_labeled: 3}
"""


def _resume_config(tmp_path: Path, semi: bool = False) -> Path:
    """A small phantom run with a checkpoint every iteration and deterministic kernels."""
    cfg = tmp_path / "resume.yaml"
    text = textwrap.dedent("""
        seed_everything: 0
        trainer:
          accelerator: cpu
          devices: 1
          max_epochs: 3
          limit_train_batches: 4
          check_val_every_n_epoch: 1
          log_every_n_steps: 1
          deterministic: true
          enable_progress_bar: false
          default_root_dir: run
          logger:
            - class_path: lightning.pytorch.loggers.CSVLogger
              init_args: {save_dir: run, name: csv}
          callbacks:
            - class_path: gemini_pl.callbacks.LastCheckpoint
              init_args: {dirpath: run/checkpoints, every_n_train_steps: 2}
        model:
          class_path: gemini_pl.modules.GeminiPretrain
          init_args:
            spatial_dims: 2
            widths: [8, 16, 32, 64, 128, 64, 32, 16, 8]
            deformer_widths: [8, 16, 16, 16, 8]
            lr: 0.001
        data:
          class_path: gemini_pl.data.PhantomDataModule
          init_args: {root: data, dataset: phantom2d, spatial_dims: 2, size: 32, num_unlabeled: 6,
                      num_test: 4, num_val_pairs: 2, batch_size: 2}
    """)
    if semi:
        text = text[: text.index("model:")] + textwrap.dedent(SEMI_MODEL)
    cfg.write_text(text)
    return cfg


def _final_state(folder: Path) -> dict:
    ckpt = torch.load(folder / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt


def _last_metrics(folder: Path) -> dict[str, str]:
    import csv

    rows = []
    for f in sorted((folder / "run" / "csv").glob("version_*/metrics.csv")):
        rows += list(csv.DictReader(f.open()))
    last: dict[str, str] = {}
    for r in rows:
        for k, v in r.items():
            if v not in ("", None):
                last[k] = v
    return last


@pytest.mark.parametrize("semi", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["pretrain", "semi"])
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, semi):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    for d in (ref, crashed):
        d.mkdir()
    cfg = _resume_config(tmp_path, semi)

    res = run_cli(["fit", "--config", str(cfg)], cwd=ref)
    assert res.returncode == 0, res.stderr[-3000:]
    reference = _final_state(ref)
    assert reference["global_step"] == 3 * 4 * 2

    # the same run, killed with SIGKILL once a mid-epoch checkpoint of epoch 1 exists
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.Popen([sys.executable, "-m", "gemini_pl.cli", "fit", "--config", str(cfg)], cwd=crashed, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = crashed / "run" / "checkpoints" / "last.ckpt"
    deadline, seen = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            mtime = last.stat().st_mtime_ns
            if mtime != seen:
                seen = mtime
                try:
                    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
                except Exception:  # caught mid-rename on a slow disk: look again
                    step = 0
                if step >= 10:  # epoch 1, iteration 1 of 4
                    break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 10 <= interrupted_at < 24

    res = run_cli(["fit", "--config", str(cfg), "--ckpt_path", "last"], cwd=crashed)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = _final_state(crashed)
    assert resumed["global_step"] == reference["global_step"]
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for group_ref, group_res in zip(reference["optimizer_states"][0]["state"].values(),
                                    resumed["optimizer_states"][0]["state"].values()):
        assert torch.equal(group_ref["exp_avg"], group_res["exp_avg"])
    assert torch.equal(reference["gemini_pl"]["aug_generator"], resumed["gemini_pl"]["aug_generator"])
    m_ref, m_res = _last_metrics(ref), _last_metrics(crashed)
    keys = [k for k in m_ref if k.startswith(("val/", "train/"))]
    assert len(keys) >= 4
    for key in keys:
        assert m_ref[key] == m_res[key], key


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(3)}, target)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from gemini_pl.checkpoint_io import AtomicCheckpointIO
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PARTIAL" * 1000)   # half a checkpoint on disk, then the process dies
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        AtomicCheckpointIO().save_checkpoint({{"global_step": 2, "w": torch.zeros(3)}}, {str(target)!r})
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert list(tmp_path.glob("last.ckpt.tmp-*")), "the partial write should have gone to a temporary file"
    ckpt = AtomicCheckpointIO().load_checkpoint(target)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)  # the next save cleans up
    assert not list(tmp_path.glob("last.ckpt.tmp-*"))


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_payload_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused to load checkpoint .*evil.ckpt"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_resume_from_pickled_checkpoint_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(str(marker))}, path)
    res = run_cli(["fit", "--config", str(_resume_config(tmp_path)), "--ckpt_path", str(path)], cwd=tmp_path)
    assert res.returncode == 2
    assert "refused to load checkpoint" in res.stderr and "evil.ckpt" in res.stderr
    assert not marker.exists()


def test_wrong_type_is_named(tmp_path):
    res = run_cli(["fit", "--config", CONFIG, "--model.init_args.lr", "fast"], cwd=tmp_path)
    assert res.returncode != 0
    assert "lr" in res.stderr and "fast" in res.stderr
    assert "Traceback" not in res.stderr
