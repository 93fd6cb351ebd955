"""The README's "Your own data" walkthrough, end to end on phantom files: a folder of unlabeled scans
(three formats, different shapes and spacings) -> `gemini-pl fit` pre-training -> a segmenter
fine-tuned from it on a labeled folder -> `gemini-pl test`, `segment` and `register`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gemini_pl.cli import main
from gemini_pl.data.phantom import generate_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model.init_args.widths", "[8, 8, 16, 16, 16, 16, 16, 8, 8]"]
QUICK = ["--trainer.max_steps", "2", "--trainer.accelerator", "cpu", "--data.init_args.num_workers", "0",
         "--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]


def gemini_pl(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:  # the extra commands exit with their status
        assert exc.code in (0, None), f"gemini-pl {args[0]} exited with {exc.code}"


@pytest.mark.slow
def test_walkthrough(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)  # the configs are found from any working directory
    labeled = generate_phantom_dataset(str(tmp_path), name="my_labeled", spatial_dims=2, size=24,
                                       num_unlabeled=3, num_labeled=3, num_val=2, num_test=2, seed=0)
    # your folder of unlabeled scans: other formats, shapes and spacings
    scans = tmp_path / "my_scans"
    scans.mkdir()
    for i, (path, suffix, factor) in enumerate(zip(
            sorted((Path(labeled) / "train" / "unlabeled" / "image").iterdir()), (".nii.gz", ".nrrd", ".mha"),
            (1.0, 1.5, 0.8))):
        img = sitk.ReadImage(str(path))
        spacing = [s * factor for s in img.GetSpacing()]
        size = [int(round(n / factor)) for n in img.GetSize()]
        out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing, img.GetDirection())
        sitk.WriteImage(out, str(scans / f"scan{i}{suffix}"))

    gemini_pl("fit", "--config", "experiments/folder/pretrain.yaml", "--data.init_args.root", str(tmp_path),
              "--data.init_args.dataset", "my_scans", "--trainer.default_root_dir", "runs/folder_pretrain",
              *QUICK, *SMALL, "--model.init_args.deformer_widths", "[8, 8, 8, 8, 8]")
    pretrained = tmp_path / "runs/folder_pretrain/checkpoints/last.ckpt"
    assert pretrained.is_file()
    from gemini_pl.safe_load import safe_torch_load

    data_hp = safe_torch_load(pretrained)["datamodule_hyper_parameters"]
    assert data_hp["spatial_dims"] == 2 and set(data_hp["preprocessing"]) == {"spacing", "shape"}  # the common grid

    seg_args = ["--config", "experiments/folder/seg.yaml", "--data.init_args.root", str(tmp_path),
                "--data.init_args.dataset", "my_labeled", "--trainer.default_root_dir", "runs/folder_seg", *QUICK, *SMALL]
    gemini_pl("fit", *seg_args, "--model.init_args.init_from", str(pretrained))
    segmenter = tmp_path / "runs/folder_seg/checkpoints/last.ckpt"
    assert segmenter.is_file()
    gemini_pl("test", *seg_args, "--ckpt_path", str(segmenter))
    with open(tmp_path / "runs/folder_seg/results/test_cases.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "## Test results" in (tmp_path / "runs/folder_seg/results/report.md").read_text()

    new = sorted((Path(labeled) / "test" / "labeled" / "image").iterdir())
    gemini_pl("segment", "--ckpt", str(segmenter), "--input", str(new[0].parent), "--out", "seg_out", "--device", "cpu")
    for image in new:
        name = image.name.split(".")[0]
        seg = sitk.ReadImage(str(tmp_path / "seg_out" / f"{name}_seg.nii.gz"))
        src = sitk.ReadImage(str(image))
        assert seg.GetSize() == src.GetSize()
        np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing())

    gemini_pl("register", "--ckpt", str(pretrained), "--fixed", str(new[0]), "--moving", str(new[1]),
              "--out", "reg_out", "--device", "cpu")
    written = {p.name for p in (tmp_path / "reg_out").iterdir()}
    assert any(n.endswith("_warped.nii.gz") for n in written) and any("_field" in n for n in written)
