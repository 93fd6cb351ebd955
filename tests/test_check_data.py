"""``gemini-pl check-data``: the report and its exit status on good and bad datasets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from gemini_pl.cli import main
from test_datasets import _set_voxel, make_dataset, make_generic, write_nifti, write_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    for name in ("whs_ct", "candi", "chestxray8"):
        make_dataset(root, name)
    return root


def run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["check-data", *args])
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def cfg(name: str) -> str:
    return str(REPO / "experiments/data" / f"{name}.yaml")


def test_good_dataset(good_root, capsys):
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(good_root), "--data.split_file", "null")
    assert code == 0, out
    assert "train_unlabeled: 3 image(s)" in out and "test: 2 image(s)" in out
    assert "shapes: (16, 16, 16) x3" in out and "spacings: (1.5, 1.0, 0.8) x3" in out
    assert "label values found: [0, 2, 3, 4, 5, 7, 8, 10, 31, 41, 60]" in out
    assert "values not in the table (mapped to background 0): [5, 31]" in out
    assert "OK: no problems found" in out


def test_experiment_config_composes(good_root, capsys):
    code, out = run(capsys, "--config", str(REPO / "experiments/demo_pretrain.yaml"), "--config", cfg("whs_ct"),
                    "--data.root", str(good_root), "--data.split_file", "null", "--data.num_labeled", "2")
    assert code == 0, out
    assert "dataset whs_ct" in out and "train_labeled: 7 image(s)" in out and "5 in the split" in out
    # the 2 held-out labeled training cases validate (the split's val list), not the test cases
    assert "validation: 2 case(s) of the split's val list" in out and "val 2, test 6" in out


def test_problems_are_listed_and_exit_nonzero(good_root, tmp_path, capsys):
    shutil.copytree(good_root / "whs_ct", tmp_path / "whs_ct")
    d = tmp_path / "whs_ct"
    bad_label = d / "test/labeled/label/test001.nii.gz"
    lab = np.asarray(nib.load(str(bad_label)).dataobj).copy()
    lab[0, 0, 0] = 421
    write_nifti(bad_label, lab)
    corrupt = d / "train/unlabeled/image/u001.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    mismatch = d / "train/labeled/label/train002.nii.gz"
    write_nifti(mismatch, np.zeros((16, 16, 12), np.int16))
    code, out = run(capsys, "--config", cfg("whs_ct"), "--data.root", str(tmp_path), "--data.split_file", "null")
    assert code == 1
    assert "PROBLEMS (3)" in out
    assert f"label {bad_label} has values [421] that are not in the label table" in out
    assert "values NOT in the table: [421]" in out
    assert f"cannot read {corrupt}" in out
    assert str(mismatch) in out and str(d / "train/labeled/image/train002.nii.gz") in out
    # everything else was still checked and counted
    assert "train_labeled: 7 image(s)" in out and "test: 3 image(s)" in out


def test_missing_label_and_missing_root(good_root, tmp_path, capsys):
    shutil.copytree(good_root / "candi", tmp_path / "candi")
    (tmp_path / "candi/train/labeled/label/train000.nii.gz").unlink()
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(tmp_path), "--data.split_file", "null")
    assert code == 1 and "has no label" in out and "train000.nii.gz" in out
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(tmp_path / "nowhere"))
    assert code == 1 and "does not exist" in out


def test_missing_brain_mask_is_a_problem(good_root, tmp_path, capsys):
    shutil.copytree(good_root / "candi", tmp_path / "candi")
    d = tmp_path / "candi"
    (d / "test/labeled/mask/test001.nii.gz").unlink()
    (d / "train/unlabeled/label/BPDwoPsy_000_MR.nii.gz").unlink()
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(tmp_path), "--data.split_file", "null")
    assert code == 1 and "PROBLEMS (2)" in out, out
    assert (f"image {d / 'test/labeled/image/test001.nii.gz'} has no brain mask: expected "
            f"{d / 'test/labeled/mask/test001.nii.gz'}") in out
    assert (f"image {d / 'train/unlabeled/image/BPDwoPsy_000_MR.nii.gz'} has no brain mask: expected "
            f"{d / 'train/unlabeled/label/BPDwoPsy_000_MR.nii.gz'}") in out
    assert "test: 2 image(s)" in out and "brain masks: 1/2" in out and "brain masks: 2/3" in out
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(tmp_path), "--data.split_file", "null",
                    "--data.preprocessing", "{brain_mask: none}")
    assert code == 0, out


def test_label_values_beyond_the_classes_are_problems(tmp_path, capsys):
    d = make_generic(tmp_path)
    bad = d / "train/labeled/label/train000.nii.gz"
    _set_voxel(bad, 7)
    args = ("--data", "gemini_pl.data.GeminiDataModule", "--data.root", str(tmp_path), "--data.dataset", "mine",
            "--data.num_labeled", "2")
    code, out = run(capsys, *args)
    assert code == 1 and "PROBLEMS (1)" in out, out
    assert f"label {bad} has values [7] beyond the 3 classes 0..2 of mine" in out
    assert "label values found: [0, 1, 2, 7]" in out
    code, out = run(capsys, *args, "--data.label_table", "{1: 1, 2: 2}")
    assert code == 1 and f"label {bad} has values [7] that are not in the label table of mine" in out, out
    # a multilabel channel that is not binary
    make_dataset(tmp_path, "scr")
    bad = tmp_path / "scr/test/labeled/label/heart/JPCLN011.png"
    _set_voxel(bad, 3)
    code, out = run(capsys, "--config", cfg("scr"), "--data.root", str(tmp_path), "--data.split_file", "null",
                    "--data.num_labeled", "2", "--data.preprocessing", "{resize: [16, 16]}")
    assert code == 1 and f"label {bad} (channel heart of the 3 channels heart, lung, clavicle) has values [0, 3, 255]" in out, out


def test_settings_the_data_cannot_serve(good_root, capsys):
    code, out = run(capsys, "--config", cfg("whs_ct"), "--data.root", str(good_root), "--data.split_file", "null",
                    "--data.patch_size", "[8, 8, 40]", "--data.num_labeled", "2")
    assert code == 1 and "data.patch_size=[8, 8, 40] is larger than the image" in out


def test_rgb_xray_is_a_warning(good_root, tmp_path, capsys):
    shutil.copytree(good_root / "chestxray", tmp_path / "chestxray")
    p = tmp_path / "chestxray/PA_M/PA_M_00001_000.png"
    gray = np.asarray(Image.open(p))
    write_png(p, np.stack([gray] * 3, -1))
    code, out = run(capsys, "--config", cfg("chestxray8"), "--data.root", str(tmp_path),
                    "--data.preprocessing", "{resize: [16, 16]}")
    assert code == 0, out
    assert "groups: AP_F 2, AP_M 2, PA_F 2, PA_M 3" in out
    assert "3 channels; converted to one grayscale channel" in out


def test_console_script(good_root):
    exe = Path(sys.executable).parent / "gemini-pl"
    res = subprocess.run([str(exe), "check-data", "--config", cfg("chestxray8"), "--data.root", str(good_root / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "does not exist" in res.stderr + res.stdout


def test_overrides_from_the_command_line(good_root, capsys):
    code, out = run(capsys, "--config", cfg("candi"), "--data.root", str(good_root), "--data.split_file", "null",
                    "--data.label_table", "{41: 1, 60: 2}", "--data.cache", "disk",
                    "--data.cache_dir", str(good_root / "cache"))
    assert code == 0, out
    assert "label table (2 values -> classes 1..2): {41: 1, 60: 2}" in out and "num_classes 3" in out
