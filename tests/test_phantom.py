"""The phantom generator: determinism, anatomy, inter-subject variation, files on disk."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gemini_pl.data.phantom import LABEL_NAMES, PHANTOM_VERSION, generate_phantom_dataset, make_phantom
from gemini_pl.errors import DataError


def _dice(a: np.ndarray, b: np.ndarray, labels) -> float:
    scores = []
    for k in labels:
        inter = np.logical_and(a == k, b == k).sum()
        total = (a == k).sum() + (b == k).sum()
        if total:
            scores.append(2.0 * inter / total)
    return float(np.mean(scores))


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_deterministic_for_a_seed(dims, size):
    img1, lab1 = make_phantom(np.random.default_rng(7), dims, size)
    img2, lab2 = make_phantom(np.random.default_rng(7), dims, size)
    img3, lab3 = make_phantom(np.random.default_rng(8), dims, size)
    assert img1.shape == lab1.shape == (size,) * dims
    assert img1.dtype == np.float32
    assert lab1.dtype in (np.uint8, np.int16)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(lab1, lab2)
    assert not np.array_equal(img1, img3)
    assert not np.array_equal(lab1, lab3)


@pytest.mark.parametrize("dims,size", [(2, 64), (3, 32)])
def test_structures_have_distinct_intensities(dims, size):
    image, label = make_phantom(np.random.default_rng(0), dims, size)
    values = np.unique(label)
    foreground = [int(v) for v in values if v > 0]
    assert len(foreground) >= 4
    assert set(foreground) <= set(LABEL_NAMES)
    means = sorted(float(image[label == k].mean()) for k in foreground)
    assert min(np.diff(means)) > 20.0, means  # distinct mean intensities
    assert float(image[label == 0].mean()) < min(means)  # dark background
    assert image.max() > 100.0  # raw units, not [0, 1]: the loader's normalisation matters


@pytest.mark.parametrize("dims,size", [(2, 64), (3, 32)])
def test_unwarped_dice_between_subjects(dims, size):
    subjects = [make_phantom(np.random.default_rng([0, i]), dims, size)[1] for i in range(6)]
    scores = [_dice(subjects[i], subjects[i + 1], range(1, 6)) for i in range(5)]
    mean = float(np.mean(scores))
    assert 0.3 < mean < 0.9, scores
    assert max(scores) < 0.95, scores


def test_dataset_layout_spacing_and_manifest(tmp_path):
    out = generate_phantom_dataset(
        tmp_path, name="p2", spatial_dims=2, size=16, num_unlabeled=3, num_labeled=2, num_test=2
    )
    assert out == tmp_path / "p2"
    unl = sorted(p.name for p in (out / "train/unlabeled/image").iterdir())
    lab = sorted(p.name for p in (out / "train/labeled/image").iterdir())
    tst = sorted(p.name for p in (out / "test/labeled/image").iterdir())
    assert unl == ["phantom_0000.nii.gz", "phantom_0001.nii.gz", "phantom_0002.nii.gz"]
    assert len(lab) == 2 and len(tst) == 2 and not set(unl) & set(lab) | set(unl) & set(tst)
    assert sorted(p.name for p in (out / "train/labeled/label").iterdir()) == lab
    assert sorted(p.name for p in (out / "test/labeled/label").iterdir()) == tst
    assert not (out / "train/unlabeled/label").exists()
    # validation phantoms (default 4), numbered after the others so that those stay the same
    val = sorted(p.name for p in (out / "val/labeled/image").iterdir())
    assert val == [f"phantom_{i:04d}.nii.gz" for i in range(7, 11)]
    assert sorted(p.name for p in (out / "val/labeled/label").iterdir()) == val
    none = generate_phantom_dataset(tmp_path, name="p0", spatial_dims=2, size=16, num_unlabeled=1, num_labeled=1,
                                    num_test=1, num_val=0)
    assert not (none / "val").exists() and "num_val" not in json.loads((none / "manifest.json").read_text())["params"]

    img = sitk.ReadImage(str(out / "test/labeled/image" / tst[0]))
    lbl = sitk.ReadImage(str(out / "test/labeled/label" / tst[0]))
    assert img.GetSpacing() == pytest.approx((0.8, 0.8))
    assert lbl.GetSpacing() == pytest.approx((0.8, 0.8))
    assert any(abs(o) > 1e-3 for o in img.GetOrigin())
    assert img.GetSize() == (16, 16)
    arr = sitk.GetArrayFromImage(lbl)
    assert arr.min() == 0 and arr.max() <= 5 and np.issubdtype(arr.dtype, np.integer)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == PHANTOM_VERSION
    assert manifest["params"]["size"] == 16 and manifest["params"]["seed"] == 0
    assert manifest["params"]["spacing"] == [0.8, 0.8]
    # no leftover temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0", "p2"]


def test_3d_custom_spacing(tmp_path):
    out = generate_phantom_dataset(
        tmp_path, name="p3", spatial_dims=3, size=12, num_unlabeled=2, num_labeled=0, num_test=2,
        spacing=(1.5, 1.5, 2.0),
    )
    img = sitk.ReadImage(str(out / "train/unlabeled/image/phantom_0000.nii.gz"))
    assert img.GetSpacing() == pytest.approx((1.5, 1.5, 2.0))
    assert img.GetSize() == (12, 12, 12)
    assert sitk.GetArrayFromImage(img).max() > 100.0


def test_manifest_fast_path_and_regeneration(tmp_path):
    kwargs = dict(name="p", spatial_dims=2, size=16, num_unlabeled=2, num_labeled=1, num_test=2)
    out = generate_phantom_dataset(tmp_path, **kwargs)
    manifest = out / "manifest.json"
    image = out / "train/unlabeled/image/phantom_0000.nii.gz"
    stamp = (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns, image.stat().st_ino)
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))

    assert generate_phantom_dataset(tmp_path, **kwargs) == out
    assert (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns, image.stat().st_ino) == stamp

    # other parameters -> regenerated, stale cases removed
    generate_phantom_dataset(tmp_path, **{**kwargs, "seed": 1, "num_unlabeled": 1})
    assert json.loads(manifest.read_text())["params"]["seed"] == 1
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
    assert not np.array_equal(before, after)
    assert sorted(os.listdir(out / "train/unlabeled/image")) == ["phantom_0000.nii.gz"]


def test_folder_without_manifest_is_an_error(tmp_path):
    target = tmp_path / "p"
    (target / "train/unlabeled/image").mkdir(parents=True)
    (target / "train/unlabeled/image/x.nii.gz").write_bytes(b"not ours")
    with pytest.raises(DataError, match=str(target)):
        generate_phantom_dataset(tmp_path, name="p", size=16, num_unlabeled=2, num_labeled=0, num_test=2)
    out = generate_phantom_dataset(
        tmp_path, name="p", size=16, num_unlabeled=2, num_labeled=0, num_test=2, overwrite=True
    )
    assert (out / "manifest.json").is_file()
    assert not (out / "train/unlabeled/image/x.nii.gz").exists()


# ------------------------------------------------------------------------------ the data module's phantom option
SMALL = dict(num_unlabeled=4, num_labeled=2, num_test=3)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_dm")
    generate_phantom_dataset(root, name="phantom2d", spatial_dims=2, size=32, **SMALL)
    return root


def _copy(phantom_dir, tmp_path):
    import shutil

    shutil.copytree(phantom_dir / "phantom2d", tmp_path / "phantom2d")
    return tmp_path / "phantom2d"


def test_phantom_option_is_the_phantom_data_module(tmp_path):
    """GeminiDataModule(phantom=...) generates what PhantomDataModule generates, and serves the
    same batches; num_labeled of the alias is both the generated count and the budget."""
    from gemini_pl.data import GeminiDataModule, PhantomDataModule, PhantomOptions

    alias = PhantomDataModule(root=str(tmp_path / "a"), size=16, train_mode="pairs+labeled", **SMALL)
    option = GeminiDataModule(root=str(tmp_path / "b"), num_labeled=2, train_mode="pairs+labeled",
                              phantom=PhantomOptions(size=16, num_unlabeled=4, num_train_labeled=2, num_test=3))
    for dm in (alias, option):
        dm.prepare_data()
        params = json.loads((tmp_path / dm.root / "phantom2d/manifest.json").read_text())["params"]
        assert {k: params[k] for k in ("size", "num_unlabeled", "num_labeled", "num_test")} == \
            {"size": 16, "num_unlabeled": 4, "num_labeled": 2, "num_test": 3}
        dm.setup("fit")
        assert len(dm.train_set.labeled) == 2
    a, b = next(iter(alias.train_dataloader())), next(iter(option.train_dataloader()))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the saved hyperparameters (less split_hash, which setup records) rebuild each module
    assert "phantom" not in alias.hparams and option.hparams["phantom"]["num_train_labeled"] == 2
    for dm in (alias, option):
        again = type(dm)(**{k: v for k, v in dm.hparams.items() if k != "split_hash"})
        assert (again.phantom, again.dataset, again.num_labeled) == (dm.phantom, "phantom2d", 2)


def test_phantom_option_errors(tmp_path):
    from gemini_pl.data import GeminiDataModule, PhantomOptions
    from gemini_pl.errors import ConfigError

    with pytest.raises(ConfigError, match="num_test must be >= 0"):
        PhantomOptions(num_test=-1)
    with pytest.raises(ConfigError, match="real dataset"):
        GeminiDataModule(root=str(tmp_path), dataset="candi", phantom=PhantomOptions())
    # without the option a missing phantom folder is an error, not generated
    with pytest.raises(DataError, match="does not exist"):
        GeminiDataModule(root=str(tmp_path), dataset="phantom2d").setup("fit")
    assert not (tmp_path / "phantom2d").exists()


def test_phantom_data_module_label_table_and_preprocessing(phantom_dir):
    """The parent's arguments PhantomDataModule used to drop now take effect."""
    from gemini_pl.data import PhantomDataModule

    table = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3}  # body; both organs; wall and cavity
    dm = PhantomDataModule(root=str(phantom_dir), size=32, label_table=table, eval_mode="cases",
                           preprocessing={"intensity": "none"}, **SMALL)
    assert dm.num_classes == 4 and dm.class_names == ()  # the 6 phantom names no longer fit
    dm.setup("validate")
    case = dm.val_set[0]
    folder = phantom_dir / "phantom2d/val/labeled"  # validation: the validation phantoms
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"label/{case['name']}.nii.gz"))).T
    lookup = np.array([0, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(case["label"][0].numpy(), lookup[label])
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"image/{case['name']}.nii.gz"))).T
    np.testing.assert_allclose(case["image"][0].numpy(), raw, rtol=1e-6)  # no intensity scaling


def test_phantom_data_module_on_error_and_cache_dir(phantom_dir, tmp_path):
    from gemini_pl.data import PhantomDataModule

    data = _copy(phantom_dir, tmp_path)
    bad = data / "train/unlabeled/image/phantom_0001.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    with pytest.raises(DataError, match="phantom_0001"):
        PhantomDataModule(root=str(tmp_path), size=32, **SMALL).setup("fit")
    cache = tmp_path / "my_cache"
    dm = PhantomDataModule(root=str(tmp_path), size=32, on_error="skip", cache="disk", cache_dir=str(cache),
                           **SMALL)
    dm.setup("fit")
    assert [path for path, _ in dm.skipped] == [str(bad)]
    assert len(dm.train_set) == 3 * 2  # the 3 readable images give 6 ordered pairs
    next(iter(dm.train_dataloader()))
    (sub,) = cache.iterdir()  # pair images and the first test case read so far
    assert sub.name.startswith("phantom2d-") and 2 <= len(list(sub.glob("*.pt"))) <= 6
    assert not (tmp_path / "cache").exists()  # not the default <root>/cache
