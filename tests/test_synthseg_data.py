"""Real inter-subject anatomy that ships with the package: the SynthSeg-derived brains
(T1-like intensities synthesised from real label maps; gemini_pl.data.brains)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from gemini_pl.data.brains import (
    ASSET, SLICE_INDEX, SPLIT, generate_synthseg_dataset, make_subject, subject_labels, synthseg_labels,
)
from gemini_pl.data.specs.synthseg import FREESURFER_GROUPS, LABEL_NAMES

#: classes every subject's 2D slice holds: all 11, the small ones included.
SLICE_CLASSES = set(LABEL_NAMES)


def test_the_derived_copy_loads_with_its_licence_and_notice():
    labels, subjects, origin = synthseg_labels()
    assert labels.dtype == np.uint8 and labels.shape == (20, 96, 112, 88) and len(origin) == 3
    assert subjects == tuple(range(1, 21))
    for lab in labels:  # every subject holds every class in 3D
        assert set(np.unique(lab)) == set(LABEL_NAMES)
    assert ASSET.stat().st_size < 3e6
    licence = (ASSET.parent / "LICENSE-SynthSeg.txt").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    notice = (ASSET.parent / "NOTICE-SynthSeg.txt").read_text()
    assert "BBillot/SynthSeg" in notice and "synthesised" in notice
    with np.load(ASSET) as f:  # provenance: the source files and the alignment
        assert len(f["source_blobs"]) == 20 and f["affines"].shape == (20, 4, 4)
        assert list(f["class_names"]) == list(LABEL_NAMES.values())


def test_freesurfer_values_are_grouped_left_and_right_merged():
    from gemini_pl.data import synthseg_derive as _derive
    from gemini_pl.data.synthseg_derive import group_labels

    codes = np.array([0, 2, 41, 3, 42, 4, 43, 7, 47, 10, 49, 11, 50, 12, 52, 17, 54, 16, 28, 14, 15, 24, 507, 85])
    expected = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 0, 0, 0]
    assert group_labels(codes).tolist() == expected
    assert _derive.TRAIN_SUBJECTS == SPLIT["train"]  # only training subjects shape the common space
    all_codes = [c for cs in FREESURFER_GROUPS.values() for c in cs]
    assert len(all_codes) == len(set(all_codes))  # each FreeSurfer value in one class
    assert sorted(FREESURFER_GROUPS) == list(range(1, len(LABEL_NAMES)))


def _dice_fg(a: np.ndarray, b: np.ndarray) -> float:
    ks = [k for k in range(1, len(LABEL_NAMES)) if (a == k).any() or (b == k).any()]
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in ks]))


def test_the_2d_slice_holds_the_small_structures_and_subjects_differ():
    slices = [subject_labels(s, 2) for s in range(1, 21)]
    for s, lab in zip(range(1, 21), slices):
        assert lab.shape == (96, 112)
        present = set(np.unique(lab))
        assert SLICE_CLASSES <= present, (s, sorted(SLICE_CLASSES - present))
        assert 5 <= np.sum(lab == 10) < 100 and 5 <= np.sum(lab == 8) < 100  # small: 3rd ventricle, hippocampus
    # real anatomy, affinely aligned: the same structures overlap, but far from perfectly
    test = [subject_labels(s, 2) for s in SPLIT["test"]]
    dice = [_dice_fg(a, b) for i, a in enumerate(test) for j, b in enumerate(test) if i != j]
    assert 0.4 < np.mean(dice) < 0.7  # 0.52 (12 ordered pairs of the 4 test subjects)


def test_subjects_are_seeded_and_the_image_follows_the_labels():
    a1, l1 = make_subject(7, np.random.default_rng([0, 7, 2]), 2)
    a2, l2 = make_subject(7, np.random.default_rng([0, 7, 2]), 2)
    b, lb = make_subject(7, np.random.default_rng([1, 7, 2]), 2)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2)  # same seed, same files
    assert np.array_equal(l1, lb) and not np.array_equal(a1, b)  # another seed: other intensities, same anatomy
    assert a1.dtype == np.float32 and a1.shape == (96, 112) and a1.min() >= 0 and a1.max() == pytest.approx(1.0)
    assert np.all(a1[l1 == 0][~_near_brain(l1)[l1 == 0]] == 0)  # skull-stripped
    mean = {k: a1[l1 == k].mean() for k in (1, 2, 3)}
    assert mean[1] > mean[2] > mean[3]  # T1-like: white matter > cortex > ventricles


def _near_brain(label: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.binary_dilation(label > 0)


def _md5s(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.nii.gz"))}


def test_the_2d_dataset_is_split_by_subject_and_the_same_for_the_same_seed(tmp_path):
    out = generate_synthseg_dataset(tmp_path / "one", spatial_dims=2)
    assert out == tmp_path / "one" / "synthseg2d"
    names = {split: sorted(p.name for p in (out / split / "image").iterdir())
             for split in ("train/unlabeled", "train/labeled", "val/labeled", "test/labeled")}
    subjects = {split: {int(n[len("synthseg_s"):len("synthseg_s") + 2]) for n in v} for split, v in names.items()}
    assert subjects["train/unlabeled"] == subjects["train/labeled"] == set(SPLIT["train"])
    assert subjects["test/labeled"] == set(SPLIT["test"]) and subjects["val/labeled"] == set(SPLIT["val"])
    assert not subjects["test/labeled"] & (subjects["train/unlabeled"] | subjects["val/labeled"])
    assert sorted(p.name for p in (out / "test/labeled/label").iterdir()) == names["test/labeled"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "T1-like intensities synthesised from real label maps" in manifest["source"]
    assert manifest["params"]["slice_index"] == SLICE_INDEX
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert generate_synthseg_dataset(tmp_path / "one", spatial_dims=2) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # same parameters: nothing rewritten
    two = generate_synthseg_dataset(tmp_path / "two", spatial_dims=2)
    assert _md5s(out) == _md5s(two)  # the same files every time
    three = generate_synthseg_dataset(tmp_path / "three", spatial_dims=2, seed=1)
    m1, m3 = _md5s(out), _md5s(three)
    assert all(m1[k] == m3[k] for k in m1 if "/label/" in k) and any(m1[k] != m3[k] for k in m1)


def test_datamodule_pairs_are_between_different_subjects(tmp_path):
    from gemini_pl.data import GeminiDataModule

    generate_synthseg_dataset(tmp_path, spatial_dims=2)
    dm = GeminiDataModule(root=str(tmp_path), dataset="synthseg2d", eval_mode="pairs", num_val_pairs=None,
                          batch_size=2)
    assert (dm.spatial_dims, dm.num_classes, dm.label_kind) == (2, 11, "multiclass")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image_a"].shape) == (2, 1, 96, 112)
    assert len(dm.train_set) == 14 * 13  # ordered pairs of 14 distinct training subjects
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["spacing_a"].tolist() == [[2.0, 2.0]]
    pairs = [(p["name_a"][0], p["name_b"][0]) for p in dm.test_dataloader()]
    assert len(pairs) == 12 and all(a != b for a, b in pairs)
    assert {int(n[-2:]) for pair in pairs for n in pair} == set(SPLIT["test"])
    val = [(p["name_a"][0], p["name_b"][0]) for p in dm.val_dataloader()]
    assert {int(n[-2:]) for pair in val for n in pair} == set(SPLIT["val"])


def test_one_3d_subject(tmp_path):
    image, label = make_subject(17, np.random.default_rng([0, 17, 3]), 3)
    assert image.shape == label.shape == (96, 112, 88) and set(np.unique(label)) == set(LABEL_NAMES)
    assert np.array_equal(label[..., SLICE_INDEX], subject_labels(17, 2))
    assert image[label == 1].mean() > image[label == 2].mean() > image[label == 3].mean()


def test_the_configs_are_the_demo_stages_on_these_data(capsys):
    from conftest import REPO, print_config

    for stage in ("pretrain", "reg", "seg", "demons"):
        cfg = print_config(["--config", str(REPO / "experiments" / "synthseg" / f"{stage}.yaml")], capsys)
        data = cfg["data"]["init_args"]
        assert (data["dataset"], data["num_val_pairs"], data["num_labeled"]) == ("synthseg2d", None, 5), stage
        assert cfg["trainer"]["default_root_dir"] == f"runs/synthseg/{stage}"
    cfg = print_config(["--config", str(REPO / "experiments" / "synthseg" / "reg.yaml"),
                        "--config", str(REPO / "experiments" / "synthseg" / "data3d.yaml")], capsys)
    assert cfg["data"]["init_args"]["dataset"] == "synthseg3d"
