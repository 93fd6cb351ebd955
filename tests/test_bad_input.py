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

import lightning as L
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


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``gemini-pl ARGS`` in-process: (exit status, stderr, stdout)."""
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
    main(["fit", "--config", str(cfg)])  # returns on success
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return tmp, root, cfg, ckpt


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


@pytest.mark.parametrize("extra,key,suggestion", [
    (["--trainer.max_step", "3"], "trainer.max_step", "trainer.max_steps"),  # was taken as an abbreviation
    (["--trainr.max_steps", "3"], "trainr.max_steps", "trainer.max_steps"),
    (["--ckpt_pth", "x"], "ckpt_pth", "ckpt_path"),
])
def test_misspelled_option_is_not_taken_as_another(good, tmp_path, capsys, extra, key, suggestion):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "r"), *extra)
    assert code == 2
    assert f"did you mean {suggestion}?" in one_error(err, key)
    assert not (tmp_path / "r").exists()


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


@pytest.mark.parametrize("module", ["Registration", "GeminiPretrain"])
@pytest.mark.parametrize("window", [4, 0])
def test_even_or_zero_ncc_window_is_a_config_error(module, window):
    """An LNCC box must be centred on its voxel: an even window used to give a field one voxel too
    large and a shape error deep in the loss."""
    import gemini_pl.modules as modules
    from gemini_pl.errors import ConfigError

    with pytest.raises(ConfigError, match=f"model.init_args.ncc_window must be an odd integer >= 1.*got {window}"):
        getattr(modules, module)(spatial_dims=2, widths=[8] * 9, ncc_window=window)


# ================================================================ checkpoints
def _variant(ckpt: Path, out: Path, **hparams) -> Path:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["hyper_parameters"].update(hparams)
    torch.save(state, out)
    return out


def _text(path: Path) -> Path:
    path.write_text("this is not a checkpoint\n")
    return path


def test_test_with_checkpoint_of_another_module(good, tmp_path, capsys):
    tmp, _, cfg, ckpt = good
    other = _variant(ckpt, tmp_path / "pretrain.ckpt", _class_path="gemini_pl.modules.GeminiPretrain")
    code, err, _ = run(capsys, "test", "--config", str(cfg), "--ckpt_path", str(other))
    assert code == 2
    one_error(err, "pretrain.ckpt", "GeminiPretrain", "gemini_pl.modules.Segmentation")


def test_test_with_checkpoint_of_another_dimensionality(good, tmp_path, capsys):
    tmp, _, cfg, ckpt = good
    other = _variant(ckpt, tmp_path / "3d.ckpt", spatial_dims=3)
    code, err, _ = run(capsys, "test", "--config", str(cfg), "--ckpt_path", str(other))
    assert code == 2
    one_error(err, "3d.ckpt", "3D", "2D")


@pytest.mark.parametrize("command", ["fit", "test", "validate", "predict"])
def test_text_file_as_checkpoint_of_the_cli(good, tmp_path, capsys, command):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, command, "--config", str(cfg), "--ckpt_path", str(_text(tmp_path / "notes.ckpt")))
    assert code == 2
    one_error(err, "notes.ckpt")


def test_text_file_as_init_from(good, tmp_path, capsys):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "r"),
                       "--model.init_args.init_from", str(_text(tmp_path / "notes.ckpt")))
    assert code == 2
    one_error(err, "notes.ckpt")
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("command", ["segment", "register"])
def test_text_file_as_checkpoint_of_the_apps(good, tmp_path, capsys, command):
    _, root, _, _ = good
    img = str(root / "mine/test/labeled/image/c100.png")
    args = (["--input", img] if command == "segment" else ["--fixed", img, "--moving", img])
    code, err, _ = run(capsys, command, *args, "--ckpt", str(_text(tmp_path / "notes.ckpt")), "--out", str(tmp_path / "out"))
    assert code == 2
    one_error(err, "notes.ckpt", prog=f"gemini-pl {command}")
    assert not any((tmp_path / "out").glob("**/*.nii*"))


@pytest.mark.parametrize("which", ["last", "best"])
def test_evaluation_with_no_such_checkpoint(good, tmp_path, capsys, which):
    _, _, cfg, _ = good
    run_dir = tmp_path / "empty_run"
    code, err, _ = run(capsys, "test", "--config", str(cfg), "--trainer.default_root_dir", str(run_dir),
                       "--ckpt_path", which)
    assert code == 2
    one_error(err, f"--ckpt_path {which}")
    assert not (run_dir / "results").exists()


def test_sigterm_during_fit_exits_nonzero_naming_the_checkpoint(good, tmp_path, capsys):
    _, _, cfg, _ = good
    extra = tmp_path / "term.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"max_steps": 6, "max_epochs": 5, "callbacks+": [
        {"class_path": "test_bad_input.TermAfter", "init_args": {"step": 4}}]}}))
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(extra),
                       "--trainer.default_root_dir", str(tmp_path / "r"))
    assert code == 143
    line = one_error(err, "SIGTERM", "--ckpt_path")
    assert str(tmp_path / "r" / "checkpoints" / "last.ckpt") in line


def test_last_checkpoint_holds_the_last_step(good, tmp_path):
    _, _, cfg, _ = good
    extra = tmp_path / "steps.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"max_steps": 5, "max_epochs": 5, "callbacks": [
        {"class_path": "gemini_pl.callbacks.LastCheckpoint", "init_args": {"every_n_train_steps": 2}}]}}))
    main(["fit", "--config", str(cfg), "--config", str(extra), "--trainer.default_root_dir", str(tmp_path / "r")])
    state = torch.load(tmp_path / "r/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(good, tmp_path, capsys):
    _, _, cfg, _ = good
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.default_root_dir", str(out / "run"))
    finally:
        out.chmod(0o700)
    assert code != 0
    one_error(err, str(out))



class TermAfter(L.Callback):
    """Sends SIGTERM to this process after training step ``step`` (as a scheduler would)."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_output_folder_is_a_file(good, tmp_path, capsys):
    _, _, cfg, _ = good
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder\n")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.default_root_dir", str(blocker / "run"))
    assert code != 0
    one_error(err, str(blocker))


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(good, tmp_path, capsys, monkeypatch):
    import gemini_pl.checkpoint_io as cio

    _, _, cfg, _ = good
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 3990")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(cio.torch, "save", full_disk)
    extra = tmp_path / "steps.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"max_steps": 4, "max_epochs": 5, "callbacks": [
        {"class_path": "gemini_pl.callbacks.LastCheckpoint", "init_args": {"every_n_train_steps": 2}}]}}))
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(extra),
                       "--trainer.default_root_dir", str(tmp_path / "r"))
    last = tmp_path / "r/checkpoints/last.ckpt"
    assert code != 0
    one_error(err, str(last), "disk full", "previous")
    monkeypatch.setattr(cio.torch, "save", real_save)
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    assert not list(last.parent.glob("*.tmp-*"))


# ================================================================ 2. the files: one read path
def _nii_case(data: Path, name: str, image: np.ndarray, label: np.ndarray | None = None,
              split: str = "train/labeled") -> tuple[Path, Path]:
    img = nifti(data / split / "image" / f"{name}.nii.gz", image)
    lab = nifti(data / split / "label" / f"{name}.nii.gz", label if label is not None else label_array(1).astype(np.int16))
    return img, lab


def _float_image() -> np.ndarray:
    return image_array(7).astype(np.float32)


def d_nan_image(data):
    img = _float_image()
    img[3, 4] = np.nan
    return _nii_case(data, "nan", img)[0], "NaN"


def d_inf_image(data):
    img = _float_image()
    img[5, 5] = np.inf
    return _nii_case(data, "inf", img)[0], "infinite"


def d_inf_label(data):
    lab = label_array(1).astype(np.float32)
    lab[2, 2] = -np.inf
    return _nii_case(data, "infl", _float_image(), lab)[1], "infinite"


def d_fractional_label(data):
    lab = label_array(1).astype(np.float32)
    lab[lab == 1] = 0.5
    lab[lab == 2] = 2.5
    return _nii_case(data, "half", _float_image(), lab)[1], "non-integer"


def d_negative_label(data):
    lab = label_array(1).astype(np.int16)
    lab[0, 0] = -1
    return _nii_case(data, "neg", _float_image(), lab)[1], "negative"


def d_truncated_gz(data):
    img, _ = _nii_case(data, "cut", _float_image())
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) // 2])
    return img, "cut.nii.gz"


def d_truncated_nii(data):
    img = nifti(data / "train/labeled/image/short.nii", _float_image())
    nifti(data / "train/labeled/label/short.nii", label_array(1).astype(np.int16))
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) - 500])
    return img, "corrupt"


def d_not_gzip(data):
    img, _ = _nii_case(data, "plain", _float_image())
    img.write_bytes(gzip.decompress(img.read_bytes()))
    return img, "not gzip"


def d_empty_png(data):
    p = data / "train/labeled/image/c000.png"
    p.write_bytes(b"")
    return p, "empty"


def d_empty_label(data):
    p = data / "train/labeled/label/c001.png"
    p.write_bytes(b"")
    return p, "empty"


def d_corrupt_png(data):
    p = data / "test/labeled/image/c100.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return p, "c100.png"


def d_unsupported_suffix(data):
    p = data / "train/labeled/image/c002.jpg"
    p.write_bytes(b"jpeg?")
    return p, "not a supported image file"


def d_text_in_image_folder(data):
    p = data / "test/labeled/image/notes.txt"
    p.write_text("scanner notes\n")
    return p, "not a supported image file"


def d_dangling_link(data):
    p = data / "train/labeled/image/c009.png"
    p.symlink_to(data / "nowhere.png")
    return p, "dangling link"


def d_duplicate_case(data):
    _nii_case(data, "c000", _float_image())
    return data / "train/labeled/image/c000.png", "same case"


def d_missing_label(data):
    (data / "train/labeled/label/c002.png").unlink()
    return data / "train/labeled/label/c002.png", "has no label"


def d_label_shape(data):
    p = data / "train/labeled/label/c001.png"
    png(p, np.zeros((SIZE, SIZE + 4), np.uint8))
    return p, "shape"


def d_label_beyond(data):
    p = data / "train/labeled/label/c001.png"
    lab = label_array(1)
    lab[0:4, 0:4] = 9
    png(p, lab)
    return p, "beyond"


def d_nan_label(data):
    lab = label_array(1).astype(np.float32)
    lab[4, 4] = np.nan
    return _nii_case(data, "nanl", _float_image(), lab)[1], "NaN"


def d_label_not_gzip(data):
    _, lab = _nii_case(data, "plainl", _float_image())
    lab.write_bytes(gzip.decompress(lab.read_bytes()))
    return lab, "not gzip"


def d_empty_nifti(data):
    img, _ = _nii_case(data, "zero", _float_image())
    img.write_bytes(b"")
    return img, "empty"


def d_dangling_label_link(data):
    p = data / "train/labeled/label/c002.png"
    p.unlink()
    p.symlink_to(data / "gone.png")
    return p, "dangling link"


FILE_DEFECTS = {f.__name__[2:]: f for f in (
    d_nan_image, d_inf_image, d_inf_label, d_fractional_label, d_negative_label, d_truncated_gz, d_truncated_nii,
    d_not_gzip, d_empty_png, d_empty_label, d_corrupt_png, d_unsupported_suffix, d_text_in_image_folder,
    d_dangling_link, d_duplicate_case, d_missing_label, d_label_shape, d_label_beyond, d_nan_label, d_label_not_gzip, d_empty_nifti,
    d_dangling_label_link)}


@pytest.fixture
def fresh(good, tmp_path):
    """A copy of the good dataset to break, and a config reading it."""
    _, root, _, _ = good
    shutil.copytree(root / "mine", tmp_path / "data" / "mine", symlinks=True)
    return tmp_path / "data" / "mine", config(tmp_path, tmp_path / "data")


@pytest.mark.parametrize("defect", list(FILE_DEFECTS))
def test_check_data_names_the_bad_file(fresh, capsys, defect):
    data, cfg = fresh
    path, what = FILE_DEFECTS[defect](data)
    code, err, out = run(capsys, "check-data", "--config", str(cfg))
    assert code == 1, out + err
    assert "Traceback" not in out + err
    problems = [ln for ln in (out + err).splitlines() if ln.startswith("  - ") or "error:" in ln]
    hits = [ln for ln in problems if path.name in ln and what in ln]
    assert hits, (path.name, what, out[-3000:], err[-2000:])
    assert "OK: no problems found" not in out


@pytest.mark.parametrize("defect", list(FILE_DEFECTS))
def test_fit_refuses_the_bad_file_before_training(fresh, capsys, defect):
    data, cfg = fresh
    path, what = FILE_DEFECTS[defect](data)
    code, err, _ = run(capsys, "fit", "--config", str(cfg))
    assert code == 2
    one_error(err, path.name, what)
    assert not (cfg.parent / "run" / "checkpoints").exists()


# ================================================================ segment and register: the same checks
@pytest.fixture(scope="module")
def deformer(tmp_path_factory):
    """A (untrained) GeminiPretrain checkpoint of 2D images, as gemini-pl fit writes it."""
    from gemini_pl.modules import GeminiPretrain

    tmp = tmp_path_factory.mktemp("deformer")
    hp = {"spatial_dims": 2, "widths": [8] * 9, "deformer_widths": [8] * 5}
    model = GeminiPretrain(**hp)
    path = tmp / "pretrain.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {**hp, "_class_path": "gemini_pl.modules.GeminiPretrain"}}, path)
    return path


APP_DEFECTS = ["nan_image", "inf_image", "truncated_gz", "truncated_nii", "not_gzip", "empty_png", "corrupt_png",
               "dangling_link", "unsupported_suffix", "duplicate_case", "empty_nifti"]
#: defects of one file given on its own (the others are defects of a folder's listing)
_FOLDER_ONLY = ("unsupported_suffix", "duplicate_case")


@pytest.mark.parametrize("command", ["segment", "register"])
@pytest.mark.parametrize("defect", APP_DEFECTS)
def test_apps_refuse_the_bad_file_and_write_nothing(good, deformer, fresh, tmp_path, capsys, command, defect):
    _, _, _, seg_ckpt = good
    data, _ = fresh
    folder = data / "train/labeled/image"
    path, what = FILE_DEFECTS[defect](data)
    given = str(folder) if defect in _FOLDER_ONLY or defect == "empty_png" else str(path)
    out = tmp_path / "out"
    if command == "segment":
        args = ["segment", "--ckpt", str(seg_ckpt), "--input", given, "--out", str(out)]
    else:
        fixed = str(data / "test/labeled/image/c101.png")
        args = ["register", "--ckpt", str(deformer), "--fixed", fixed, "--moving", given, "--out", str(out)]
    code, err, _ = run(capsys, *args)
    assert code == 2
    what = {"truncated_nii": "truncated", "unsupported_suffix": "cannot read"}.get(defect, what)  # the apps read .jpg
    one_error(err, path.name, what, prog=f"gemini-pl {command}")
    assert not out.exists() or not any(out.rglob("*.*")), sorted(out.rglob("*"))


def _inverted_palette_png(path: Path, grey: np.ndarray) -> Path:
    """``grey`` stored as a palette PNG whose index i shows grey 255 - i (indices inverted)."""
    im = Image.fromarray((255 - grey).astype(np.uint8), mode="L").convert("P")
    im.putpalette([c for i in range(256) for c in (255 - i,) * 3])
    im = Image.fromarray((255 - grey).astype(np.uint8), mode="P")
    im.putpalette([c for i in range(256) for c in (255 - i,) * 3])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def test_palette_image_reads_as_shown_by_training_and_inference(tmp_path):
    from gemini_pl.apps.grid import image_array as sitk_array
    from gemini_pl.apps.grid import read_image
    from gemini_pl.data.io import load_image

    grey = image_array(3)
    path = _inverted_palette_png(tmp_path / "p.png", grey)
    assert Image.open(path).mode == "P"
    with pytest.warns(UserWarning, match="palette is applied"):
        train = load_image(path)[0].numpy()
    np.testing.assert_allclose(train, grey.T.astype(np.float32), atol=1e-3)  # the picture, not the indices
    np.testing.assert_allclose(sitk_array(read_image(path, 2)), train, atol=1e-3)


def test_palette_label_keeps_its_indices(tmp_path):
    from gemini_pl.apps.grid import image_array as sitk_array
    from gemini_pl.apps.grid import read_image
    from gemini_pl.data.io import load_image

    lab = label_array(0)
    im = Image.fromarray(lab, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    im.save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png", label=True)[0].numpy().T.tolist() == lab.tolist()
    assert sitk_array(read_image(tmp_path / "l.png", 2, label=True), np.int64).T.tolist() == lab.tolist()


@pytest.mark.parametrize("mode", ["LA", "RGBA", "RGB"])
def test_grey_alpha_and_colour_read_alike(tmp_path, mode):
    from gemini_pl.apps.grid import image_array as sitk_array
    from gemini_pl.apps.grid import read_image
    from gemini_pl.data.io import load_image

    grey = image_array(4)
    alpha = np.full_like(grey, 128)
    arr = {"LA": np.stack([grey, alpha], -1), "RGBA": np.stack([grey, grey, grey, alpha], -1),
           "RGB": np.stack([grey] * 3, -1)}[mode]
    path = png(tmp_path / f"{mode}.png", arr, mode)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_image(path)[0].numpy()
        infer = sitk_array(read_image(path, 2))
    np.testing.assert_allclose(train, grey.T.astype(np.float32), atol=1e-3)  # alpha never averaged in
    np.testing.assert_allclose(infer, train, atol=1e-3)


def test_constant_image_is_warned_by_check_data(fresh, capsys):
    data, cfg = fresh
    png(data / "train/labeled/image/c001.png", np.full((SIZE, SIZE), 7, np.uint8))
    code, err, out = run(capsys, "check-data", "--config", str(cfg))
    assert code == 0, out + err
    assert any("c001.png is constant" in ln for ln in out.splitlines() if ln.startswith("  - "))


def test_constant_image_is_warned_by_segment(good, tmp_path, capsys, caplog):
    _, _, _, seg_ckpt = good
    img = png(tmp_path / "flat.png", np.zeros((SIZE, SIZE), np.uint8))
    with pytest.warns(UserWarning, match="flat.png is constant"):
        code, err, _ = run(capsys, "segment", "--ckpt", str(seg_ckpt), "--input", str(img), "--out", str(tmp_path / "o"))
    assert code == 0


# ================================================================ 3. split integrity
def s_test_case_in_training(data):
    shutil.copy(data / "test/labeled/image/c100.png", data / "train/labeled/image/c100.png")
    shutil.copy(data / "test/labeled/label/c100.png", data / "train/labeled/label/c100.png")
    return "c100.png", "share"


def s_test_bytes_in_training_renamed(data):
    shutil.copy(data / "test/labeled/image/c101.png", data / "train/labeled/image/z_copy.png")
    shutil.copy(data / "test/labeled/label/c101.png", data / "train/labeled/label/z_copy.png")
    return "z_copy.png", "identical"


def s_val_case_in_training(data):
    for sub in ("image", "label"):
        (data / "val/labeled" / sub).mkdir(parents=True)
        shutil.copy(data / f"train/labeled/{sub}/c001.png", data / f"val/labeled/{sub}/c001.png")
    return "c001.png", "share"


def s_val_bytes_in_test(data):
    for sub in ("image", "label"):
        (data / "val/labeled" / sub).mkdir(parents=True)
        shutil.copy(data / f"test/labeled/{sub}/c100.png", data / f"val/labeled/{sub}/v9.png")
    return "v9.png", "identical"


def s_same_case_other_suffix_across_splits(data):
    _nii_case(data, "c100", _float_image())  # train/labeled c100.nii.gz beside test c100.png
    return "c100", "share"


def s_duplicate_case_in_test(data):
    _nii_case(data, "c101", _float_image(), split="test/labeled")
    return "c101", "same case"


SPLIT_DEFECTS = {f.__name__[2:]: f for f in (
    s_test_case_in_training, s_test_bytes_in_training_renamed, s_val_case_in_training, s_val_bytes_in_test,
    s_same_case_other_suffix_across_splits, s_duplicate_case_in_test)}


@pytest.mark.parametrize("defect", list(SPLIT_DEFECTS))
def test_check_data_finds_the_leak(fresh, capsys, defect):
    data, cfg = fresh
    name, what = SPLIT_DEFECTS[defect](data)
    code, err, out = run(capsys, "check-data", "--config", str(cfg))
    assert code == 1
    hits = [ln for ln in (out + err).splitlines() if name in ln and what in ln and (ln.startswith("  - ") or "error:" in ln)]
    assert hits, out[-3000:] + err[-2000:]


@pytest.mark.parametrize("defect", list(SPLIT_DEFECTS))
def test_fit_refuses_the_leak(fresh, capsys, defect):
    data, cfg = fresh
    name, what = SPLIT_DEFECTS[defect](data)
    code, err, _ = run(capsys, "fit", "--config", str(cfg))
    assert code == 2
    one_error(err, name, what)
    assert not (cfg.parent / "run" / "checkpoints").exists()


def test_split_file_with_train_test_overlap_is_refused(fresh, tmp_path, capsys):
    import json

    data, cfg = fresh
    split = {"format": "gemini-pl-split", "dataset": "mine", "train_labeled": ["c000.png", "c001.png", "c100.png"],
             "test": ["c100.png", "c101.png"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--data.init_args.split_file", str(tmp_path / "split.json"))
    assert code == 2
    one_error(err, "split.json", "c100.png", "train_labeled and test")


# ================================================================ 4. settings contradicting the data
@pytest.mark.parametrize("key,value,data_value", [
    ("num_classes", "2", "3"),      # the class default: was replaced by the data's value silently
    ("num_classes", "5", "3"),
    ("spatial_dims", "3", "2"),     # the class default
])
def test_explicit_model_setting_contradicting_the_data(good, capsys, key, value, data_value):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), f"--model.init_args.{key}", value)
    assert code == 2
    one_error(err, f"model.init_args.{key}={value}", f"{key}={data_value}")


def test_explicit_model_setting_in_a_config_file(good, tmp_path, capsys):
    _, _, cfg, _ = good
    extra = tmp_path / "model.yaml"
    extra.write_text("model:\n  init_args:\n    num_classes: 2\n")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(extra))
    assert code == 2
    one_error(err, "model.init_args.num_classes=2")


def test_agreeing_explicit_setting_is_accepted(good, tmp_path, capsys):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--model.init_args.num_classes", "3",
                       "--trainer.default_root_dir", str(tmp_path / "r"))
    assert code == 0, err[-2000:]
    assert (tmp_path / "r/checkpoints/last.ckpt").is_file()


# ================================================================ 5. the few-shot protocols as written
@pytest.fixture
def scr25(tmp_path):
    """25 labeled training images (the paper's SCR25 protocol) and a test split."""
    make_pngs(tmp_path / "data", "few", train=25, test=2)
    return tmp_path, config(tmp_path, tmp_path / "data", "few", num_labeled=25)


def test_scr25_budget_is_not_eaten_by_validation(scr25, capsys):
    tmp, cfg = scr25
    code, err, out = run(capsys, "check-data", "--config", str(cfg))
    assert code == 0, out + err
    assert "train_labeled: 25 image(s)" in out and "25 in the split, few-shot num_labeled=25" in out
    code, err, _ = run(capsys, "fit", "--config", str(cfg))
    assert code == 0, err[-2000:]
    assert (tmp / "run/checkpoints/last.ckpt").is_file()


def test_scr25_with_a_split_file_holding_val_out_says_what_to_pass(scr25, capsys):
    from gemini_pl.data.layout import listing_of
    from gemini_pl.data.splits import make_split, write_split

    tmp, cfg = scr25
    split_file = tmp / "few.json"
    write_split(make_split("few", listing_of(tmp / "data", "few")), split_file)  # the default: 5 held out
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--data.init_args.split_file", str(split_file))
    assert code == 2
    one_error(err, "num_labeled=25", "few.json", "--num-val 0", "val/labeled")
    assert not (tmp / "run/checkpoints").exists()


# ================================================================ devices and workers
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_segment_on_cuda_without_cuda(good, tmp_path, capsys):
    _, root, _, ckpt = good
    code, err, _ = run(capsys, "segment", "--ckpt", str(ckpt), "--input", str(root / "mine/test/labeled/image"),
                       "--out", str(tmp_path / "o"), "--device", "cuda")
    assert code == 2
    one_error(err, "--device cuda", prog="gemini-pl segment")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fit_on_gpu_without_gpu(good, tmp_path, capsys):
    _, _, cfg, _ = good
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.accelerator", "gpu",
                       "--trainer.default_root_dir", str(tmp_path / "r"))
    assert code == 2
    one_error(err, "trainer:", "gpu")
    assert not (tmp_path / "r").exists()


def test_bad_file_read_in_a_dataloader_worker(fresh, capsys):
    """Files read at every access (no cache) by a worker process: the worker's own line only."""
    data, cfg = fresh
    path, _ = d_nan_image(data)
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--data.init_args.cache", "none",
                       "--data.init_args.num_workers", "1", "--trainer.max_steps", "4")
    assert code == 2
    line = one_error(err, path.name, "NaN")
    assert "Original Traceback" not in err and "worker process" not in line


@pytest.mark.parametrize("errno_name", ["EROFS", "EACCES", "ENOSPC"])
def test_unwritable_output_folder(good, tmp_path, capsys, monkeypatch, errno_name):
    """A read-only, forbidden or full output folder (simulated: this suite may run as root)."""
    import errno
    import pathlib

    _, _, cfg, _ = good
    out = tmp_path / "ro"
    code_of = getattr(errno, errno_name)
    real_mkdir, real_makedirs, real_open = pathlib.Path.mkdir, os.makedirs, open

    def refuse(p):
        if str(p).startswith(str(out)):
            raise OSError(code_of, os.strerror(code_of), str(p))

    def mkdir(self, *a, **k):
        refuse(self)
        return real_mkdir(self, *a, **k)

    def makedirs(p, *a, **k):
        refuse(p)
        return real_makedirs(p, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "makedirs", makedirs)
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--trainer.default_root_dir", str(out / "run"))
    assert code == 1
    one_error(err, str(out), os.strerror(code_of))


# ================================================================ check-data reads each file once
def test_check_data_reads_each_file_once_per_pass(fresh, capsys, monkeypatch):
    """The report's pass reads each file once (its statistics come from the same read as the
    checks), then the data module's setup reads it once: two reads in all (three before)."""
    from collections import Counter

    import gemini_pl.data.check as check_mod
    import gemini_pl.data.transforms as tr

    data, cfg = fresh
    reads: Counter = Counter()
    real = tr.load_image

    def counting(path, *a, **k):
        reads[Path(path).name] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(tr, "load_image", counting)
    monkeypatch.setattr(check_mod, "load_image", counting, raising=False)
    code, err, out = run(capsys, "check-data", "--config", str(cfg))
    assert code == 0, out + err
    assert reads["c000.png"] == 2 * 2 and reads["c100.png"] == 2 * 2, reads  # image and label, twice each


def test_label_values_agree_with_unique():
    from gemini_pl.data.io import label_values

    rng = np.random.default_rng(0)
    for values in ([0, 1, 2], [0, 255], [0, 7, 70000], [-3, 0, 4]):
        lab = torch.as_tensor(rng.choice(values, size=(17, 19)))
        assert label_values(lab) == sorted(set(torch.unique(lab).tolist()))
    assert label_values(torch.zeros(0, dtype=torch.int64)) == []


def test_config_file_that_is_not_yaml(good, tmp_path, capsys):
    _, _, cfg, _ = good
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  init_args: [1, 2\n")
    code, err, _ = run(capsys, "fit", "--config", str(cfg), "--config", str(bad))
    assert code == 2
    one_error(err, "broken.yaml", "not valid YAML", "line 3")


@pytest.mark.parametrize("defect", ["fractional_label", "nan_label", "inf_label"])
def test_register_refuses_a_bad_moving_label(deformer, fresh, tmp_path, capsys, defect):
    data, _ = fresh
    label, what = FILE_DEFECTS[defect](data)
    image = label.parent.parent / "image" / label.name
    fixed = str(data / "test/labeled/image/c101.png")
    out = tmp_path / "out"
    code, err, _ = run(capsys, "register", "--ckpt", str(deformer), "--fixed", fixed, "--moving", str(image),
                       "--moving-label", str(label), "--out", str(out))
    assert code == 2
    one_error(err, label.name, what, prog="gemini-pl register")
    assert not out.exists() or not any(out.rglob("*.*"))
