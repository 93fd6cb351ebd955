"""The real-anatomy demo data: subjects generated from the MNI152 template (nilearn's local files)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nilearn")  # installed with the test extra; the demo data needs it

from gemini_pl.data.anatomy import generate_mni_dataset, make_subject, mni_atlas  # noqa: E402


def test_atlas_labels_are_the_more_probable_tissue_of_the_template():
    from nilearn import datasets

    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj)
    image, label, origin = mni_atlas()
    assert image.shape == label.shape == (99, 117, 95) and 0.0 <= image.min() and image.max() == pytest.approx(1.0)
    expected = np.where((wm > 0.5) & (wm > gm), 2, np.where((gm > 0.5) & (gm >= wm), 1, 0))
    assert np.array_equal(label, expected)
    assert origin == (-98.0, -134.0, -72.0)


def _dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return 2 * np.logical_and(a == k, b == k).sum() / ((a == k).sum() + (b == k).sum())


def test_subjects_are_seeded_deformed_and_keep_the_tissues():
    a1, l1 = make_subject(np.random.default_rng([0, 1]), 2)
    a2, l2 = make_subject(np.random.default_rng([0, 1]), 2)
    b, lb = make_subject(np.random.default_rng([0, 2]), 2)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2)  # same seed, same subject
    assert not np.array_equal(l1, lb)
    assert a1.shape == l1.shape == (99, 117) and a1.dtype == np.float32 and set(np.unique(l1)) == {0, 1, 2}
    assert a1.min() >= 0 and a1.max() == pytest.approx(1.0)
    # a smooth deformation of the same anatomy: tissues overlap clearly, but not perfectly
    template = mni_atlas()[1][..., 45]
    for k in (1, 2):
        assert 0.3 < _dice(l1, template, k) < 0.97, k
    # the intensity tracks the tissue: white matter brighter than grey matter on average (T1)
    assert a1[l1 == 2].mean() > a1[l1 == 1].mean()


def test_dataset_on_disk_is_read_like_real_data(tmp_path):
    from gemini_pl.data import GeminiDataModule

    out = generate_mni_dataset(tmp_path, spatial_dims=2, num_unlabeled=3, num_labeled=2, num_test=2, num_val=0, seed=3)
    assert out == tmp_path / "mni2d"
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert generate_mni_dataset(tmp_path, spatial_dims=2, num_unlabeled=3, num_labeled=2, num_test=2, num_val=0,
                                seed=3) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # same parameters: nothing rewritten
    dm = GeminiDataModule(root=str(tmp_path), dataset="mni2d", train_mode="labeled", eval_mode="cases",
                          labeled_batch_size=2, num_labeled=2)
    assert (dm.spatial_dims, dm.num_classes, dm.label_kind) == (2, 3, "multiclass")
    dm.setup("test")
    case = next(iter(dm.test_dataloader()))
    assert tuple(case["image"].shape) == (1, 1, 99, 117)
    assert case["spacing"].tolist() == [[2.0, 2.0]]
    expected = make_subject(np.random.default_rng([3, 5]), 2)[1]  # case 5: after 3 unlabeled and 2 labeled
    assert np.array_equal(case["label"][0, 0].numpy(), expected)


def test_atlas_file_gives_the_same_files_as_nilearn(tmp_path):
    """--save-atlas / --atlas (machines without nilearn): the same template, the same subjects and
    the same files byte for byte."""
    import hashlib

    from gemini_pl.data.anatomy import main

    main(["--save-atlas", str(tmp_path / "atlas.npz")])
    image, label, origin = mni_atlas(str(tmp_path / "atlas.npz"))
    ref = mni_atlas()
    assert np.array_equal(image, ref[0]) and np.array_equal(label, ref[1]) and origin == ref[2]
    assert image.dtype == np.float32 and label.dtype == np.uint8
    a, b = make_subject(np.random.default_rng([0, 4]), 2), make_subject(np.random.default_rng([0, 4]), 2,
                                                                        str(tmp_path / "atlas.npz"))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    kw = dict(spatial_dims=2, num_unlabeled=1, num_labeled=1, num_test=0, num_val=0, seed=1)
    one = generate_mni_dataset(tmp_path / "nilearn", **kw)
    two = generate_mni_dataset(tmp_path / "file", atlas=tmp_path / "atlas.npz", **kw)
    files = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz"))
    assert len(files) == 3  # 1 unlabeled image, 1 labeled image + label
    for rel in files:
        assert hashlib.md5((one / rel).read_bytes()).digest() == hashlib.md5((two / rel).read_bytes()).digest()
    assert (one / "manifest.json").read_text() == (two / "manifest.json").read_text()


def test_a_file_that_is_not_an_atlas_is_named_in_the_error(tmp_path):
    from gemini_pl.errors import ConfigError

    bad = tmp_path / "notes.npz"
    bad.write_text("not numpy")
    with pytest.raises(ConfigError, match="notes.npz: not an atlas file"):
        mni_atlas(str(bad))
    np.savez(tmp_path / "other.npz", image=np.zeros(3))
    with pytest.raises(ConfigError, match="other.npz: not an atlas file"):
        mni_atlas(str(tmp_path / "other.npz"))
