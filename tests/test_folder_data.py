"""A plain folder of scans of different formats, shapes and spacings pre-trains without more
configuration: SimpleITK formats, spatial_dims from a header, the automatic common grid, random
patches of images of different shapes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gemini_pl.data import GeminiDataModule
from gemini_pl.data.grid import common_grid
from gemini_pl.data.io import load_image
from gemini_pl.data.pairs import PairDataset
from gemini_pl.data.sitk_io import header_geometry, header_spatial_dims

#: (file name, array shape (k, j, i) as SimpleITK's numpy view has it, spacing (i, j, k))
SCANS = [("a.nii.gz", (10, 14, 12), (1.5, 1.2, 2.0)), ("b.nrrd", (12, 12, 16), (1.0, 1.0, 1.5)),
         ("c.mha", (14, 10, 10), (2.0, 1.8, 1.0))]


def write_scans(folder, scans=SCANS, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, shape, spacing in scans:
        img = sitk.GetImageFromArray(rng.random(shape).astype(np.float32) * 100)
        img.SetSpacing(spacing)
        img.SetOrigin((1.0, -2.0, 3.0)[: len(spacing)])
        sitk.WriteImage(img, str(folder / name))
    return folder


def test_sitk_formats_read_like_nifti(tmp_path):
    """The same image written as .nii.gz, .nrrd, .mha and .mhd reads to the same array and affine
    (the NIfTI one through nibabel, the others through SimpleITK)."""
    rng = np.random.default_rng(1)
    img = sitk.GetImageFromArray(rng.random((5, 6, 7)).astype(np.float32))
    img.SetSpacing((1.5, 1.2, 2.0))
    img.SetOrigin((3.0, 4.0, 5.0))
    img.SetDirection([0, 1, 0, 1, 0, 0, 0, 0, -1])
    out = {}
    for suffix in (".nii.gz", ".nrrd", ".mha", ".mhd"):
        sitk.WriteImage(img, str(tmp_path / f"x{suffix}"))
        out[suffix] = load_image(tmp_path / f"x{suffix}")
    ref = out[".nii.gz"]
    assert tuple(ref.shape) == (1, 7, 6, 5)
    # voxel (i, j, k) = (1, 2, 3) is SimpleITK's array[3, 2, 1]
    assert float(ref[0, 1, 2, 3]) == pytest.approx(float(sitk.GetArrayViewFromImage(img)[3, 2, 1]))
    # RAS affine of LPS direction D, spacing s, origin o: diag(-1, -1, 1) [D diag(s) | o]
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array(
        [[0, 1.2, 0, 3], [1.5, 0, 0, 4], [0, 0, -2.0, 5], [0, 0, 0, 1]])
    for suffix, x in out.items():
        assert torch.equal(x.as_tensor(), ref.as_tensor()), suffix
        np.testing.assert_allclose(np.asarray(x.affine), expected, atol=1e-5, err_msg=suffix)
        assert header_spatial_dims(tmp_path / f"x{suffix}") == 3
        shape, spacing = header_geometry(tmp_path / f"x{suffix}")
        assert shape == (7, 6, 5)
        np.testing.assert_allclose(spacing, (1.5, 1.2, 2.0), rtol=1e-6)


def test_common_grid_values():
    # median spacing per axis: (1.5, 1.2, 1.5); MONAI's Spacingd size: ceil((n-1) s / t) + 1
    geoms = [((12, 14, 10), (1.5, 1.2, 2.0)), ((16, 12, 12), (1.0, 1.0, 1.5)), ((10, 10, 14), (2.0, 1.8, 1.0))]
    grid = common_grid(geoms)
    assert grid["spacing"] == (1.5, 1.2, 1.5)
    sizes = [[int(np.ceil((n - 1) * s / t - 1e-6)) + 1 for n, s, t in zip(sh, sp, grid["spacing"])]
             for sh, sp in geoms]
    assert grid["shape"] == tuple(int(v) for v in np.median(np.array(sizes), axis=0))
    assert common_grid([((8, 8), (1.0, 1.0))] * 3) == {}
    assert common_grid([((8, 8), (1.0, 1.0)), ((9, 8), (1.0, 1.0))]) == {"shape": (8, 8)}
    # random patches serve any shapes: only the spacing is made common
    assert set(common_grid(geoms, patches=True)) == {"spacing"}


def test_folder_dims_from_header_and_common_grid(tmp_path):
    write_scans(tmp_path / "scans")
    dm = GeminiDataModule(root=str(tmp_path), dataset="scans", cache="none")
    assert dm.spatial_dims == 3  # from the first file's header, before setup
    dm.setup("fit")
    grid = dm.hparams["grid"]
    geoms = [header_geometry(tmp_path / "scans" / n) for n, _, _ in SCANS]
    assert grid == {k: list(v) for k, v in common_grid(geoms).items()}
    assert dm.hparams["preprocessing"] == grid  # what register / segment apply to new images
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image_a"].shape) == (2, 1, *grid["shape"])
    assert tuple(batch["image_b"].shape) == (2, 1, *grid["shape"])
    assert dm.val_set is None  # unlabeled: no validation


def test_given_preprocessing_turns_the_automatic_grid_off(tmp_path):
    write_scans(tmp_path / "scans")
    dm = GeminiDataModule(root=str(tmp_path), dataset="scans", cache="none",
                          preprocessing={"shape": [9, 9, 9]})
    dm.setup("fit")
    assert "grid" not in dm.hparams
    assert tuple(next(iter(dm.train_dataloader()))["image_a"].shape) == (2, 1, 9, 9, 9)


def test_patches_of_images_of_different_shapes(tmp_path):
    write_scans(tmp_path / "scans")
    dm = GeminiDataModule(root=str(tmp_path), dataset="scans", cache="none", patch_size=[8, 8, 8])
    dm.setup("fit")
    assert set(dm.hparams["grid"]) == {"spacing"}
    assert tuple(next(iter(dm.train_dataloader()))["image_a"].shape) == (2, 1, 8, 8, 8)


def test_pair_patches_at_the_same_relative_location():
    a = torch.arange(20.0).view(1, 20)
    b = torch.arange(10.0).view(1, 10) + 100
    ds = PairDataset([{"image": a}, {"image": b}], patch_size=[4], seed=3)
    for i in range(2):
        item = ds[i]
        xa, xb = (item["image_a"], item["image_b"]) if i == 0 else (item["image_b"], item["image_a"])
        start_a, start_b = int(xa[0, 0]), int(xb[0, 0]) - 100
        assert xa[0].tolist() == list(range(start_a, start_a + 4))
        u = start_a / 16  # the fraction of a's free range; b's start is the same fraction of 6
        assert abs(start_b - u * 6) <= 0.5 + 6 / 16


def test_fit_on_a_folder_of_mixed_scans(tmp_path, monkeypatch):
    """`gemini-pl fit` with the folder config, only root and dataset given, finishes 2 steps."""
    from gemini_pl.cli import cli_main

    write_scans(tmp_path / "scans")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = tmp_path / "run"
    cli = cli_main([
        "fit", "--config", "experiments/folder/pretrain.yaml",
        "--data.init_args.root", str(tmp_path), "--data.init_args.dataset", "scans",
        "--data.init_args.num_workers", "0", "--data.init_args.cache", "none",
        "--trainer.max_steps", "2", "--trainer.default_root_dir", str(run), "--trainer.accelerator", "cpu",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--model.init_args.widths", "[8, 8, 16, 16, 16, 16, 16, 8, 8]",
        "--model.init_args.deformer_widths", "[8, 8, 8, 8, 8]",
    ])
    assert cli.trainer.global_step == 2
    assert cli.model.hparams.spatial_dims == 3
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_check_data_on_a_folder_of_scans(tmp_path, capsys):
    """check-data on an unlabeled folder: its dimensions from the header, no test stage, no problem."""
    from gemini_pl.data.check import main as check_data

    write_scans(tmp_path / "scans")
    status = check_data(["--config", "experiments/folder/pretrain.yaml", "--data.init_args.root", str(tmp_path),
                         "--data.init_args.dataset", "scans", "--data.init_args.cache", "none"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "3D, labels" in out and "OK: no problems found" in out
    assert "train_unlabeled: 3 image(s)" in out


def test_a_spec_dataset_of_mixed_shapes_names_the_settings(tmp_path):
    """A dataset with a spec (no automatic grid) whose images differ: the error names the settings,
    and data.preprocessing.shape then serves it."""
    from gemini_pl.errors import DataError

    folder = tmp_path / "brain"  # PPMI's folder: a flat folder of unlabeled scans
    write_scans(folder, [(f"s{i}.nii.gz", shape, (1.0, 1.0, 1.0)) for i, shape in
                         enumerate([(10, 12, 14), (12, 12, 12)])])
    dm = GeminiDataModule(root=str(tmp_path), dataset="ppmi", spatial_dims=3)  # cached: every file checked
    with pytest.raises(DataError, match="data.preprocessing.shape"):
        dm.setup("fit")
    dm = GeminiDataModule(root=str(tmp_path), dataset="ppmi", cache="none", spatial_dims=3,
                          preprocessing={"shape": [12, 12, 12]})
    dm.setup("fit")
    assert tuple(dm.train_set[0]["image_a"].shape) == (1, 12, 12, 12)
