"""The data modules and image I/O: batches, pairs, labels and user-facing data errors."""

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gemini_pl.data import GeminiDataModule, PhantomDataModule, generate_phantom_dataset
from gemini_pl.data.datamodule import LabeledPairDataset, PairDataset
from gemini_pl.data.io import case_name, list_images, load_image, pair_with_labels
from gemini_pl.errors import DataError

SMALL = dict(num_unlabeled=4, num_labeled=1, num_test=3)


@pytest.fixture(scope="module")
def dm_root(tmp_path_factory):
    """A small 2D (size 32) and 3D (size 16) phantom under one root, generated once."""
    root = tmp_path_factory.mktemp("data")
    generate_phantom_dataset(root, name="phantom2d", spatial_dims=2, size=32, **SMALL)
    generate_phantom_dataset(root, name="phantom3d", spatial_dims=3, size=16, **SMALL)
    return root


def _copy(dm_root, tmp_path, name="phantom2d"):
    shutil.copytree(dm_root / name, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_train_and_val_batches(dm_root, dims, size):
    dm = PhantomDataModule(
        root=str(dm_root), spatial_dims=dims, size=size, batch_size=2, val_batch_size=2,
        num_val_pairs=3, **SMALL,
    )
    assert dm.dataset == f"phantom{dims}d"
    dm.prepare_data()  # fast path: already there
    dm.setup("fit")
    shape = (size,) * dims

    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image_a", "image_b"}
    for key in ("image_a", "image_b"):
        x = batch[key]
        assert type(x) is torch.Tensor  # plain tensors, not MetaTensor
        assert x.shape == (2, 1, *shape) and x.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        flat = x.flatten(1)
        assert torch.allclose(flat.min(1).values, torch.zeros(2))  # min-max per image
        assert torch.allclose(flat.max(1).values, torch.ones(2))
    assert not torch.equal(batch["image_a"], batch["image_b"])

    val = list(dm.val_dataloader())
    assert sum(len(b["name_a"]) for b in val) == 3
    b = val[0]
    assert set(b) == {"image_a", "image_b", "label_a", "label_b", "name_a", "name_b", "spacing_a", "spacing_b", "meta_a", "meta_b"}
    assert b["image_a"].shape == (2, 1, *shape) and b["image_a"].dtype == torch.float32
    # each image's geometry travels with the pair (predictions are written on its grid)
    assert torch.equal(b["meta_a"]["spacing"].float(), b["spacing_a"]) and b["meta_b"]["affine"].shape[0] == 2
    for key in ("label_a", "label_b"):
        assert b[key].shape == (2, 1, *shape) and b[key].dtype == torch.int64
        assert b[key].min() >= 0 and b[key].max() <= 5
    # validation: the generated validation phantoms (numbered after the test ones), never a test case
    assert b["name_a"] == ["phantom_0008", "phantom_0009"]
    assert b["name_b"] == ["phantom_0009", "phantom_0010"]
    test_names = {case_name(n) for n in dm.split["test"]}
    assert test_names == {"phantom_0005", "phantom_0006", "phantom_0007"}
    assert not {n for v in val for n in v["name_a"] + v["name_b"]} & test_names
    assert dm.num_classes == 6
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["name_a"] == ["phantom_0005", "phantom_0006"]
    assert not torch.equal(test_batch["label_a"], b["label_a"])


def test_val_labels_equal_the_written_files(dm_root):
    dm = GeminiDataModule(root=str(dm_root), dataset="phantom2d", num_val_pairs=2)
    dm.setup("validate")
    item = dm.val_set[1]
    for side in ("a", "b"):
        path = dm_root / "phantom2d/val/labeled/label" / f"{item['name_' + side]}.nii.gz"
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T  # file voxel order
        assert np.array_equal(item[f"label_{side}"][0].numpy(), written.astype(np.int64))
        raw = dm_root / "phantom2d/val/labeled/image" / path.name
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(raw))).T.astype(np.float64)
        raw = np.clip(raw, 0, None)
        raw = (raw - raw.min()) / (raw.max() - raw.min())
        np.testing.assert_allclose(item[f"image_{side}"][0].numpy(), raw, atol=1e-5)


def test_pairs_are_distinct_and_complete():
    ds = PairDataset([{"image": torch.full((1, 2, 2), float(i))} for i in range(5)])
    pairs = [ds.pair(i) for i in range(len(ds))]
    assert len(ds) == 20 and len(set(pairs)) == 20
    assert all(a != b for a, b in pairs)
    item = ds[7]
    a, b = ds.pair(7)
    assert item["image_a"][0, 0, 0] == a and item["image_b"][0, 0, 0] == b
    with pytest.raises(IndexError):
        ds.pair(20)

    items = [{"image": torch.zeros(1), "label": torch.zeros(1), "name": str(i)} for i in range(4)]
    val = LabeledPairDataset(items, num_pairs=100)
    assert len(val) == 12 and len(set(val.pairs)) == 12
    assert all(a != b for a, b in val.pairs)
    assert val.pairs[:4] == [(0, 1), (1, 2), (2, 3), (3, 0)]


def test_worker_processes(dm_root):
    dm = GeminiDataModule(root=str(dm_root), dataset="phantom2d", num_workers=1, batch_size=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and not loader.pin_memory
    batch = next(iter(loader))
    assert batch["image_a"].shape == (3, 1, 32, 32)


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        GeminiDataModule(root=str(missing)).setup("fit")
    assert str(missing) in str(err.value)
    (missing / "other").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        GeminiDataModule(root=str(missing), dataset="phantom2d").setup("fit")
    assert str(missing / "phantom2d") in str(err.value)


def test_empty_image_folder(tmp_path):
    folder = tmp_path / "ds" / "train" / "unlabeled" / "image"
    folder.mkdir(parents=True)
    with pytest.raises(DataError, match="no images in") as err:
        GeminiDataModule(root=str(tmp_path), dataset="ds").setup("fit")
    assert str(folder) in str(err.value)
    (folder / "notes.txt").write_text("no images here")  # a file of another type is named, not skipped
    with pytest.raises(DataError, match="notes.txt is not a supported image file") as err:
        GeminiDataModule(root=str(tmp_path), dataset="ds").setup("fit")
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_file(dm_root, tmp_path, cache):
    ds = _copy(dm_root, tmp_path)
    bad = ds / "train/unlabeled/image/phantom_0000.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage, not a NIfTI file" * 10)
    with pytest.raises(DataError, match="cannot read") as err:
        GeminiDataModule(root=str(tmp_path), cache=cache).setup("fit")
    assert str(bad) in str(err.value)


def test_labeled_image_without_label(dm_root, tmp_path):
    ds = _copy(dm_root, tmp_path)
    (ds / "test/labeled/label/phantom_0006.nii.gz").unlink()
    with pytest.raises(DataError, match="has no label") as err:
        GeminiDataModule(root=str(tmp_path)).setup("validate")
    assert str(ds / "test/labeled/image/phantom_0006.nii.gz") in str(err.value)


def test_wrong_spatial_dims(dm_root):
    with pytest.raises(DataError, match="spatial_dims"):
        GeminiDataModule(root=str(dm_root), dataset="phantom3d", spatial_dims=2).setup("fit")


def test_io_helpers_and_png(tmp_path):
    from PIL import Image

    folder = tmp_path / "img"
    folder.mkdir()
    arr = (np.arange(12 * 10).reshape(10, 12) % 256).astype(np.uint8)
    Image.fromarray(arr).save(folder / "b.png")
    Image.fromarray(np.stack([arr] * 3, -1)).save(folder / "a.png")
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "readme.md").write_text("x")
    with pytest.raises(DataError, match="readme.md is not a supported image file"):
        list_images(folder)  # an image folder holds images: another file is named, not skipped
    files = list_images(folder, strict=False)
    assert [f.name for f in files] == ["a.png", "b.png"]
    assert case_name(files[0]) == "a" and case_name("x/y.nii.gz") == "y"
    gray = load_image(folder / "b.png")
    rgb = load_image(folder / "a.png")
    assert gray.shape == rgb.shape and gray.shape[0] == 1 and gray.dim() == 3
    assert torch.allclose(gray, rgb)
    label = load_image(folder / "b.png", label=True)
    assert label.dtype == torch.int64
    with pytest.raises(DataError, match="has no label"):
        pair_with_labels(files, tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_image(folder / "gone.nii.gz")


# ------------------------------------------------------------------------------ modes
@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_train_and_eval_modes(dm_root, dims, size):
    shape = (size,) * dims
    patch = [8] * dims if dims == 3 else None
    crop = tuple(patch) if patch else shape
    common = dict(root=str(dm_root), spatial_dims=dims, size=size, batch_size=2, **SMALL)
    dm = PhantomDataModule(train_mode="pairs+labeled", eval_mode="cases", patch_size=patch, **common)
    dm.setup("fit")
    assert (dm.num_classes, dm.label_kind, dm.spatial_dims) == (6, "multiclass", dims)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"image_a", "image_b", "image", "label"}
    assert b["image_a"].shape == b["image"].shape == (2, 1, *crop)
    assert b["label"].dtype == torch.int64 and b["label"].shape == (2, 1, *crop)
    case = next(iter(dm.val_dataloader()))
    assert set(case) == {"image", "label", "name", "spacing", "meta"}
    assert type(case["image"]) is torch.Tensor and type(case["label"]) is torch.Tensor
    assert case["image"].shape == (1, 1, *shape) and case["label"].dtype == torch.int64
    assert case["spacing"].shape == (1, dims) and case["spacing"].dtype == torch.float32
    assert case["meta"]["filename"][0].endswith(f"{case['name'][0]}.nii.gz")
    assert case["meta"]["affine"].shape == (1, dims + 1, dims + 1)

    dm = PhantomDataModule(train_mode="labeled", labeled_batch_size=1, patch_size=patch, **common)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"image", "label"} and b["image"].shape == (1, 1, *crop)


def test_patch_size_larger_than_image(dm_root):
    from gemini_pl.errors import ConfigError

    dm = GeminiDataModule(root=str(dm_root), dataset="phantom3d", patch_size=[8, 8, 32])
    with pytest.raises(ConfigError, match=r"data.patch_size=\[8, 8, 32\].*phantom_0000.*\(16, 16, 16\)"):
        dm.setup("fit")


def test_few_shot_is_deterministic(dm_root, tmp_path):
    ds = _copy(dm_root, tmp_path)
    for i in range(2, 6):  # 6 labeled training cases
        for sub in ("image", "label"):
            shutil.copy(ds / f"train/labeled/{sub}/phantom_0004.nii.gz", ds / f"train/labeled/{sub}/extra_{i}.nii.gz")
    names = []
    for _ in range(2):
        dm = GeminiDataModule(root=str(tmp_path), train_mode="labeled", num_labeled=3, seed=1)
        dm.setup("fit")
        names.append([r["rel"] for r in dm._select("train_labeled", dm.split["train_labeled"][:3])])
        assert len(dm.train_set) == 3
    assert names[0] == names[1]
    split_file = tmp_path / "split.json"
    dm = GeminiDataModule(root=str(tmp_path), train_mode="labeled", num_labeled=3, seed=1, split_file=str(split_file))
    dm.setup("fit")
    assert split_file.is_file() and dm.split["train_labeled"][:3] == names[0]
    import hashlib

    assert dm.split_hash == hashlib.sha256(split_file.read_bytes()).hexdigest()
    assert dm.hparams["split_hash"] == dm.split_hash


# ------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def carved_root(tmp_path_factory):
    """A 2D phantom without a val folder: 8 labeled training cases, 3 test cases."""
    root = tmp_path_factory.mktemp("carved")
    generate_phantom_dataset(root, name="phantom2d", spatial_dims=2, size=32, num_unlabeled=3, num_labeled=8,
                             num_test=3, num_val=0)
    return root


def _split_without_val(root, tmp_path):
    """A split file as written before validation lists existed (no ``val``)."""
    import json

    path = tmp_path / "old_split.json"
    GeminiDataModule(root=str(root), dataset="phantom2d", split_file=str(path)).prepare_data()
    split = json.loads(path.read_text())
    split.pop("val", None)
    path.write_text(json.dumps(split))
    return path


@pytest.mark.parametrize("eval_mode", ["pairs", "cases"])
def test_validation_never_yields_a_test_case(carved_root, eval_mode):
    """Validation batches hold only the split's val cases — the last 3 labeled training cases of the
    seeded order, which neither "Full" nor a few-shot set trains on — and never a test case."""
    from pathlib import Path

    dm = GeminiDataModule(root=str(carved_root), dataset="phantom2d", eval_mode=eval_mode, num_val_pairs=None,
                          train_mode="labeled", num_labeled=None)
    dm.setup("fit")
    split = dm.split
    assert len(split["val"]) == 3 and len(split["train_labeled"]) == 5
    names = set()
    for b in dm.val_dataloader():
        names |= set(b["name_a"] + b["name_b"]) if eval_mode == "pairs" else set(b["name"])
    assert names == {case_name(n) for n in split["val"]}
    assert not names & {case_name(n) for n in split["test"]}
    trained = {Path(dm.train_set.items[i]["meta"]["filename"]).name for i in range(len(dm.train_set))}
    assert trained == set(split["train_labeled"]) and not trained & set(split["val"])
    dm.setup("test")
    assert {case_name(n) for n in split["test"]} == {b["name_a"][0] for b in dm.test_dataloader()} if eval_mode == "pairs" \
        else {b["name"][0] for b in dm.test_dataloader()}


def test_a_split_sharing_val_and_test_is_refused(dm_root, tmp_path):
    import json

    path = tmp_path / "split.json"
    GeminiDataModule(root=str(dm_root), split_file=str(path)).prepare_data()
    split = json.loads(path.read_text())
    split["val"].append(split["test"][1])
    path.write_text(json.dumps(split))
    with pytest.raises(DataError, match=rf"val and test share 1 case\(s\): {split['test'][1]}"):
        GeminiDataModule(root=str(dm_root), split_file=str(path)).setup("fit")


def test_no_val_list_means_no_validation(dm_root, tmp_path, caplog):
    """An old split file without val: training and testing work, validation does not happen (one log
    line saying how to add a val list), and ``validate`` is a one-line ConfigError naming the fix."""
    import logging

    import lightning as L

    from gemini_pl.errors import ConfigError

    path = _split_without_val(dm_root, tmp_path)
    dm = GeminiDataModule(root=str(dm_root), split_file=str(path))
    with caplog.at_level(logging.WARNING, logger="gemini_pl"):
        dm.setup("fit")
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if "no validation" in r.getMessage()]
    assert len(lines) == 1 and "has no val list" in lines[0] and "python -m gemini_pl.data.splits --num-val" in lines[0]
    assert dm.val_set is None and dm.val_dataloader() == [] and dm.train_set is not None
    dm.setup("test")
    assert len(dm.test_set) == 3 * 2 and dm.num_classes == 6
    for call in (lambda: GeminiDataModule(root=str(dm_root), split_file=str(path)).setup("validate"),
                 lambda: L.Trainer(logger=False, enable_progress_bar=False).validate(
                     _Tiny(), datamodule=GeminiDataModule(root=str(dm_root), split_file=str(path)))):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(f"validate needs a validation split: split file {path} has no val list") and "\n" not in msg
        assert "python -m gemini_pl.data.splits --num-val" in msg


class _Tiny:
    """A LightningModule that counts its training steps (built lazily: lightning is slow to import)."""

    def __new__(cls):
        import lightning as L

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1))
                self.steps = 0

            def training_step(self, batch, _):
                self.steps += 1
                return (batch["image_a"].mean() - self.w).pow(2)

            def validation_step(self, batch, _):
                self.log("val/seg_dice", 0.5)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Tiny()


def test_monitored_val_checkpoint_without_val_fails_early(dm_root, tmp_path, monkeypatch):
    """A ModelCheckpoint monitoring val/... with no validation split: one line saying why, before any
    training step — from a plain Trainer and from the CLI (the demo's best-checkpoint preset)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from conftest import REPO
    from gemini_pl.cli import cli_main
    from gemini_pl.errors import ConfigError

    path = _split_without_val(dm_root, tmp_path)
    model = _Tiny()
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), callbacks=[ModelCheckpoint(monitor="val/seg_dice", mode="max")])
    with pytest.raises(ConfigError) as err:
        trainer.fit(model, datamodule=GeminiDataModule(root=str(dm_root), split_file=str(path)))
    msg = str(err.value)
    assert msg.startswith(f"a ModelCheckpoint monitors val/seg_dice, but there is no validation split: split file {path} "
                          "has no val list") and "\n" not in msg
    assert "best_seg.yaml" in msg and model.steps == 0
    # with validation cases the same fit runs, validates and keeps its best checkpoint
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path / "ok"), limit_val_batches=1,
                        callbacks=[ModelCheckpoint(monitor="val/seg_dice", mode="max")])
    trainer.fit(model, datamodule=GeminiDataModule(root=str(dm_root)))
    assert model.steps == 2 and trainer.checkpoint_callback.best_model_path
    # the CLI: the demo's segmentation config (best_seg.yaml) on phantoms generated without validation cases
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cli"
    with pytest.raises(ConfigError, match=r"^a ModelCheckpoint monitors val/seg_dice, but there is no validation split: "
                                          r"the split built from .* has no val list"):
        cli_main(["fit", "--config", str(REPO / "experiments" / "demo" / "seg.yaml"), "--trainer.default_root_dir", str(out),
                  "--data.init_args.size", "32", "--data.init_args.num_unlabeled", "2", "--data.init_args.num_test", "2",
                  "--data.init_args.num_val", "0", "--trainer.logger", "false"])
    assert not list(out.rglob("*.ckpt"))
