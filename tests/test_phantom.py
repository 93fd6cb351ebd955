"""The phantom generator: determinism, anatomy, inter-subject variation, files on disk."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

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
    assert [p.name for p in tmp_path.iterdir()] == ["p2"]


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
