"""The bad-input battery: every defect class, built from tiny files, gives one clear line naming the
file or setting, a non-zero exit status, and writes nothing it should not (README "Bad input").

Commands run in-process (``gemini_pl.cli.main``); each case is one small dataset or command line
with one defect.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gemini_pl.cli import main

SIZE = 32


# ---------------------------------------------------------------- tiny files
def png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def image_array(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = (rng.random((SIZE, SIZE)) * 200).astype(np.uint8)
    arr[8:24, 8:24] += 50
    return arr


def label_array(seed: int) -> np.ndarray:
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[8 + seed % 3:20, 8:22] = 1
    lab[20:26, 10:20] = 2
    return lab


def make_pngs(root: Path, name: str = "mine", train: int = 3, test: int = 2, unlabeled: int = 0) -> Path:
    """``<root>/<name>`` in the canonical layout: labeled training, test (and unlabeled) PNGs."""
    data = root / name
    for split, n, off in (("train/labeled", train, 0), ("test/labeled", test, 100)):
        for i in range(n):
            png(data / split / "image" / f"c{off + i:03d}.png", image_array(off + i))
            png(data / split / "label" / f"c{off + i:03d}.png", label_array(off + i))
    for i in range(unlabeled):
        png(data / "train/unlabeled/image" / f"u{i:03d}.png", image_array(200 + i))
    return data


def nifti(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def config(tmp: Path, root: Path, name: str = "mine", **data) -> Path:
    """A tiny segmentation config over ``root/name``; ``data``: overrides of data.init_args."""
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "max_epochs": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "default_root_dir": str(tmp / "run"),
                    "callbacks": [{"class_path": "gemini_pl.callbacks.LastCheckpoint"}]},
        "model": {"class_path": "gemini_pl.modules.Segmentation",
                  "init_args": {"widths": [8, 8, 8, 8, 8, 8, 8, 8, 8], "lr": 1e-3}},
        "data": {"class_path": "gemini_pl.data.GeminiDataModule",
                 "init_args": {"root": str(root), "dataset": name, "train_mode": "labeled", "eval_mode": "cases",
                               "num_labeled": None, "labeled_batch_size": 1, "num_workers": 0, **data}},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(capsys, *args: str) -> tuple[int, str]:
    """``gemini-pl ARGS`` in-process: (exit status, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.err, out.out


def one_error(err: str, *named: str, prog: str = "gemini-pl") -> str:
    """The single ``<prog>: error:`` line of ``err`` (asserting there is exactly one, no traceback or
    usage block, and that it names every string of ``named``)."""
    assert "Traceback" not in err, err[-3000:]
    assert "usage:" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if re.match(rf"{re.escape(prog)}( [\w-]+)?: error:", ln)]
    assert len(lines) == 1, err[-3000:]
    for n in named:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GEMINI_PL_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A good tiny dataset and a checkpoint trained on it (one step)."""
    tmp = tmp_path_factory.mktemp("good")
    root = tmp / "data"
    make_pngs(root)
    cfg = config(tmp, root)
    with pytest.raises(SystemExit) if False else _nullcontext():
        main(["fit", "--config", str(cfg)])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return tmp, root, cfg, ckpt


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ================================================================ 1. command line and config
MISSPELLED = [
    (["--model.init_args.lamda_seg", "1"], "model.init_args.lamda_seg", "lambda_seg"),
    (["--data.init_args.num_labled", "2"], "data.init_args.num_labled", "num_labeled"),
    (["--data.init_args.patchsize", "[8, 8]"], "data.init_args.patchsize", "patch_size"),
    (["--model", "gemini_pl.modules.Segmentaton"], "Segmentaton", "gemini_pl.modules.Segmentation"),
    (["--data", "gemini_pl.data.GeminiDataModul"], "GeminiDataModul", "gemini_pl.data.GeminiDataModule"),
]


@pytest.mark.parametrize("extra,key,suggestion", MISSPELLED, ids=[m[1] for m in MISSPELLED])
def test_misspelled_key_or_class_one_line_with_suggestion(good, capsys, extra, key, suggestion):
    tmp, root, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), *extra)
    assert code == 2
    line = one_error(err, key)
    assert f"did you mean {suggestion}?" in line


MISTYPED = [
    (["--model.init_args.lr", "fast"], "model.init_args.lr", "fast"),
    (["--data.init_args.batch_size", "two"], "data.init_args.batch_size", "two"),
    (["--data.init_args.train_mode", "label"], "data.init_args.train_mode", "label"),
    (["--trainer.max_steps", "many"], "max_steps", "many"),
]


@pytest.mark.parametrize("extra,key,value", MISTYPED, ids=[m[1] for m in MISTYPED])
def test_mistyped_value_one_line(good, capsys, extra, key, value):
    tmp, root, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), *extra)
    assert code == 2
    one_error(err, key, value)


def test_misspelled_key_in_a_config_file(good, tmp_path, capsys):
    _, _, cfg, _ = good
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    freeze_backbon: true\n")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(extra))
    assert code == 2
    assert "did you mean freeze_backbone?" in one_error(err, "freeze_backbon")


def test_misspelled_section_in_a_config_file(good, tmp_path, capsys):
    _, _, cfg, _ = good
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainr:\n  max_steps: 1\n")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(extra))
    assert code == 2
    assert "did you mean trainer.max_steps?" in one_error(err, "trainr")


def test_missing_config_file(tmp_path, capsys):
    code, err, _ = run(capsys, "fit", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    one_error(err, "nope.yaml", "does not exist")


def test_unknown_command(capsys):
    code, err, _ = run(capsys, "fitt")
    assert code == 2
    assert "did you mean fit?" in one_error(err, "fitt")


def test_traceback_kept_on_request(good, capsys, monkeypatch):
    _, _, cfg, _ = good
    monkeypatch.setenv("GEMINI_PL_TRACEBACK", "1")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--model.init_args.lamda_seg", "1")
    assert code == 2 and "usage:" in err  # jsonargparse's own report


@pytest.mark.parametrize("value", ["-0.1", "0"])
def test_invalid_learning_rate(good, capsys, value):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--model.init_args.lr", value)
    assert code == 2
    one_error(err, "lr")
