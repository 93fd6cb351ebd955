"""The eight datasets: tiny files written in each dataset's exact layout, formats and label values,
read back through GeminiDataModule (batches, dtypes, label tables, intensities, pairing rules,
few-shot determinism, geometry) and every bad-input case."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from gemini_pl.data import GeminiDataModule, get_spec, save_prediction
from gemini_pl.data.io import DataWarning, case_name
from gemini_pl.data.pairs import PairDataset
from gemini_pl.data.specs import candi, whs_ct
from gemini_pl.errors import ConfigError, DataError

S3 = (16, 16, 16)
S2 = (32, 32)
SPACING = (1.5, 1.0, 0.8)
ORIGIN = (-10.0, 4.0, 2.5)


# ------------------------------------------------------------------------------ file writers
def write_nifti(path: Path, arr: np.ndarray, spacing=SPACING, origin=ORIGIN) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*spacing, 1.0]).astype(np.float64)
    aff[:3, 3] = origin
    nib.save(nib.Nifti1Image(arr, aff), str(path))


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _blocks(rng, shape, values) -> np.ndarray:
    """A label map holding every value of ``values`` in a block (and background)."""
    lab = np.zeros(shape, dtype=np.int16)
    flat = lab.reshape(-1)
    n = flat.size // (len(values) + 1)
    start = int(rng.integers(0, n // 2))
    for i, v in enumerate(values):
        flat[start + i * n: start + i * n + n // 2] = v
    return lab


def _ct(rng, shape=S3) -> np.ndarray:
    return rng.integers(-300, 3200, shape).astype(np.int16)


def _canonical_3d(root: Path, folder: str, rng, *, unl: int, lab: int, test: int, values, suffix=".nii.gz",
                  image=_ct, label_sub="label") -> None:
    d = root / folder
    for i in range(unl):
        write_nifti(d / "train/unlabeled/image" / f"u{i:03d}{suffix}", image(rng))
    for split, n in (("train/labeled", lab), ("test/labeled", test)):
        for i in range(n):
            name = f"{split.split('/')[0]}{i:03d}{suffix}"
            write_nifti(d / split / "image" / name, image(rng))
            write_nifti(d / split / label_sub / name, _blocks(rng, S3, values))


def _mr(rng, shape=S3) -> np.ndarray:
    return (rng.random(shape) * 900 - 50).astype(np.float32)


def brain_mask(shape=S3) -> np.ndarray:
    """The brain mask of every CANDI test case: a centred cube."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[3:13, 3:13, 3:13] = 1
    return mask


def make_generic(root: Path, name: str = "mine", values=(1, 2), seed: int = 0) -> Path:
    """A dataset without a spec (no label table, K from the labels): labels ``values`` (K = 3)."""
    rng = np.random.default_rng(seed)
    _canonical_3d(root, name, rng, unl=3, lab=2, test=2, values=list(values), image=_mr)
    return root / name


def make_dataset(root: Path, name: str, seed: int = 0) -> Path:
    """Write a tiny copy of dataset ``name`` in its distributed layout under ``root``."""
    rng = np.random.default_rng(seed)
    if name == "whs_ct":
        _canonical_3d(root, "whs_ct", rng, unl=3, lab=7, test=3, values=list(whs_ct.LABEL_TABLE))
    elif name == "asoca":
        _canonical_3d(root, "asoca", rng, unl=3, lab=2, test=2, values=[1])
    elif name == "kipa22":
        _canonical_3d(root, "kipa22", rng, unl=2, lab=2, test=2, values=[1, 2, 3, 4])
    elif name == "cat08":
        for i in range(3):
            write_nifti(root / "cat08/train/unlabeled/image" / f"dataset{i:02d}.nii", _ct(rng))
    elif name == "candi":
        codes = [*candi.FREESURFER_CODES[:6], 41, 60, 5, 31]  # 5 and 31 are not in the table
        _canonical_3d(root, "candi", rng, unl=0, lab=2, test=2, values=codes, image=_mr)
        for i in range(3):  # unlabeled images carry their brain mask under train/unlabeled/label
            name_i = f"BPDwoPsy_{i:03d}_MR.nii.gz"
            write_nifti(root / "candi/train/unlabeled/image" / name_i, _mr(rng))
            write_nifti(root / "candi/train/unlabeled/label" / name_i, brain_mask())
        for split in ("train/labeled", "test/labeled"):  # labeled cases under <split>/mask
            for p in sorted((root / "candi" / split / "image").iterdir()):
                write_nifti(root / "candi" / split / "mask" / p.name, brain_mask())
    elif name == "scr":
        d = root / "scr"
        for i in range(2):
            write_png(d / "train/unlabeled/image" / f"JPCNN{i + 1:03d}.png",
                      rng.integers(0, 256, (40, 32), dtype=np.uint8))
        for split, n in (("train/labeled", 4), ("test/labeled", 2)):
            for i in range(n):
                nm = f"JPCLN{i + 1 + (10 if split.startswith('test') else 0):03d}.png"
                write_png(d / split / "image" / nm, rng.integers(0, 256, (40, 32), dtype=np.uint8))
                for ch, box in (("heart", (10, 30, 8, 24)), ("lung", (2, 38, 2, 30)), ("clavicle", (0, 6, 4, 28))):
                    m = np.zeros((40, 32), dtype=np.uint8)
                    m[box[0]:box[1], box[2]:box[3]] = 255
                    write_png(d / split / "label" / ch / nm, m)
    elif name == "chestxray8":
        for g in ("AP_F", "AP_M", "PA_F", "PA_M"):
            for i in range(2 if g != "PA_M" else 3):
                write_png(root / "chestxray" / g / f"{g}_{i:05d}_000.png",
                          rng.integers(0, 256, S2, dtype=np.uint8))
    elif name == "ppmi":
        for i in range(3):
            write_nifti(root / "brain" / f"PPMI_{3000 + i}_T1.nii", _mr(rng))
    else:
        raise KeyError(name)
    return root


def chestxray_csv(root: Path, rng=None) -> Path:
    """ChestX-ray8 as distributed by NIH: images/ plus Data_Entry_2017.csv."""
    rng = rng or np.random.default_rng(3)
    d = root / "chestxray"
    rows = []
    for i, (view, sex) in enumerate([("PA", "M"), ("PA", "M"), ("AP", "F"), ("AP", "F"), ("PA", "F"), ("PA", "F"),
                                     ("PA", "M")]):
        nm = f"{i:08d}_000.png"
        write_png(d / "images" / nm, rng.integers(0, 256, S2, dtype=np.uint8))
        rows.append(f"{nm},No Finding,0,{i},{40 + i},{sex},{view},1024,1024,0.143,0.143,")
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
    (d / "Data_Entry_2017.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return d


ALL = ["whs_ct", "asoca", "cat08", "candi", "scr", "kipa22", "chestxray8", "ppmi"]
FAST = {"scr": {"preprocessing": {"resize": [24, 24]}}, "chestxray8": {"preprocessing": {"resize": [32, 32]}}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """One data root per dataset, written once for the module."""
    out = {}
    for name in ALL:
        out[name] = make_dataset(tmp_path_factory.mktemp(name), name)
    return out


def _dm(root, name, **kw) -> GeminiDataModule:
    args = dict(root=str(root), dataset=name, batch_size=2, num_val_pairs=2, num_labeled=2)
    args.update(FAST.get(name, {}))
    args.update(kw)
    return GeminiDataModule(**args)


def _copy(src_root: Path, tmp_path: Path, name: str) -> Path:
    folder = get_spec(name).dir_name
    shutil.copytree(src_root / folder, tmp_path / folder)
    return tmp_path / folder


# ------------------------------------------------------------------------------ every dataset
@pytest.mark.parametrize("name", ALL)
def test_pairs_batches(roots, name):
    spec = get_spec(name)
    dm = _dm(roots[name], name)
    dm.setup("fit")
    assert dm.spatial_dims == spec.spatial_dims and dm.label_kind == spec.label_kind
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"image_a", "image_b"}
    shape = (24, 24) if name == "scr" else (S3 if spec.spatial_dims == 3 else S2)
    for key in ("image_a", "image_b"):
        x = b[key]
        assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (2, 1, *shape)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert dm.split_hash and len(dm.split_hash) == 64
    val = dm.val_dataloader()
    if spec.label_kind is None:
        assert val == []
        with pytest.raises(ConfigError, match="no labels"):
            _dm(roots[name], name, train_mode="labeled").setup("fit")
        return
    dm.setup("test")
    v = next(iter(dm.test_dataloader()))
    assert set(v) == {"image_a", "image_b", "label_a", "label_b", "name_a", "name_b", "spacing_a", "spacing_b", "meta_a", "meta_b"}
    test = {case_name(n) for n in dm.split["test"]}
    if name == "whs_ct":  # 7 labeled training cases: the last 2 of the seeded order validate, 5 train
        assert len(dm.split["val"]) == 2 and len(dm.split["train_labeled"]) == 5
        names = [n for b in val for n in b["name_a"] + b["name_b"]]
        v = next(iter(val))
        assert set(v) == {"image_a", "image_b", "label_a", "label_b", "name_a", "name_b", "spacing_a", "spacing_b", "meta_a", "meta_b"}
        assert set(names) == {case_name(n) for n in dm.split["val"]} and not set(names) & test
    else:  # too few labeled training cases to hold some out: no validation (never the test cases)
        assert "val" not in dm.split and val == []


@pytest.mark.parametrize("name", ["whs_ct", "asoca", "candi", "scr", "kipa22"])
def test_labeled_and_cases(roots, name):
    spec = get_spec(name)
    dm = _dm(roots[name], name, train_mode="pairs+labeled", eval_mode="cases")
    dm.setup("fit")
    dm.setup("test")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"image_a", "image_b", "image", "label"}
    k = dm.num_classes
    if spec.label_kind == "multilabel":
        assert k == 3 and b["label"].shape == (2, 3, 24, 24) and b["label"].dtype == torch.float32
        assert set(torch.unique(b["label"]).tolist()) <= {0.0, 1.0}
    else:
        assert b["label"].shape == (2, 1, *S3) and b["label"].dtype == torch.int64
        assert 0 <= int(b["label"].min()) and int(b["label"].max()) < k
    assert k == {"whs_ct": 8, "asoca": 2, "candi": 29, "scr": 3, "kipa22": 5}[name]
    cases = list(dm.test_dataloader())
    assert len(cases) == len(dm.test_set) >= 2
    c = cases[0]
    assert set(c) == {"image", "label", "name", "spacing", "meta"} and c["image"].shape[0] == 1
    assert type(c["image"]) is torch.Tensor and type(c["label"]) is torch.Tensor


def test_whs_ct_label_table_and_ct_intensity(roots):
    root = roots["whs_ct"]
    dm = _dm(root, "whs_ct", eval_mode="cases")
    dm.setup("test")
    c = dm.test_set[0]
    raw_img = nib.load(c["meta"]["filename"]).get_fdata()
    raw_lab = np.asarray(nib.load(c["meta"]["label_filename"]).dataobj).astype(np.int64)
    np.testing.assert_allclose(c["image"][0].numpy(), np.clip(raw_img, 0, 2048) / 2048, atol=1e-6)
    expected = np.vectorize(lambda v: whs_ct.LABEL_TABLE.get(int(v), 0))(raw_lab)
    assert np.array_equal(c["label"][0].numpy(), expected)
    assert set(np.unique(c["label"]).tolist()) == set(range(8))
    # geometry kept
    np.testing.assert_allclose(c["spacing"].numpy(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(c["meta"]["origin"].numpy(), ORIGIN, atol=1e-6)
    np.testing.assert_allclose(c["meta"]["affine"].numpy(), nib.load(c["meta"]["filename"]).affine, atol=1e-6)


def test_candi_mapping_masks_and_override(roots, tmp_path):
    root = roots["candi"]
    dm = _dm(root, "candi", train_mode="labeled", eval_mode="cases")
    dm.setup("fit")
    dm.setup("test")
    c = dm.test_set[0]
    raw = np.asarray(nib.load(c["meta"]["label_filename"]).dataobj).astype(np.int64)
    lab = c["label"][0].numpy()
    assert np.all(lab[raw == 41] == 17) and np.all(lab[raw == 60] == 28) and np.all(lab[raw == 2] == 1)
    assert np.all(lab[(raw == 5) | (raw == 31)] == 0)  # other FreeSurfer codes -> background
    img = c["image"][0]
    assert float(img.min()) >= 0 and 0.9 < float(img.max()) <= 1.0  # min-max, then the brain mask
    # unlabeled images are multiplied by their brain mask (train/unlabeled/label)
    pairs = dm._pairs()
    item = pairs.images[0]
    mask = np.asarray(nib.load(Path(root) / "candi/train/unlabeled/label" / Path(item["meta"]["filename"]).name).dataobj)
    assert float(item["image"][0][torch.from_numpy(mask == 0)].abs().max()) == 0.0
    assert float(item["image"][0][torch.from_numpy(mask > 0)].max()) > 0.5
    # parity option: labeled images masked by their own label map
    dm = _dm(root, "candi", eval_mode="cases", preprocessing={"brain_mask": "label"})
    dm.setup("test")
    c = dm.test_set[0]
    raw = np.asarray(nib.load(c["meta"]["label_filename"]).dataobj)
    assert float(c["image"][0][torch.from_numpy(raw == 0)].abs().max()) == 0.0
    # label table override from the config: only code 41 -> 1
    dm = _dm(root, "candi", eval_mode="cases", label_table={41: 1})
    dm.setup("test")
    assert dm.num_classes == 2
    c = dm.test_set[0]
    raw = np.asarray(nib.load(c["meta"]["label_filename"]).dataobj)
    assert np.array_equal(c["label"][0].numpy(), (raw == 41).astype(np.int64))


def test_scr_multilabel_and_xray_intensity(roots):
    root = roots["scr"]
    dm = GeminiDataModule(root=str(root), dataset="scr", eval_mode="cases", num_labeled=2)  # default 512²
    dm.setup("test")
    c = dm.test_set[0]
    assert c["image"].shape == (1, 512, 512) and c["label"].shape == (3, 512, 512)
    raw = np.asarray(Image.open(c["meta"]["filename"]), dtype=np.float64)
    assert float(c["image"].max()) <= 1.0 and float(c["image"].max()) == pytest.approx(raw.max() / 255, abs=0.02)
    heart = np.asarray(Image.open(Path(root) / "scr/test/labeled/label/heart" / Path(c["meta"]["filename"]).name))
    assert c["label"][0].mean().item() == pytest.approx((heart > 0).mean(), abs=0.01)
    assert c["meta"]["original_shape"].tolist() == [32, 40]  # PIL order (width, height)
    assert c["spacing"].tolist() == pytest.approx([32 / 512, 40 / 512])


def test_kipa22_cases_write_back(roots, tmp_path):
    dm = _dm(roots["kipa22"], "kipa22", eval_mode="cases")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    out = save_prediction(batch["label"][0], batch["meta"], tmp_path / "pred.nii.gz")
    src = nib.load(batch["meta"]["label_filename"][0])
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, src.affine, atol=1e-5)
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(src.dataobj))  # table is the identity


def test_chestxray8_groups_folders_and_csv(roots, tmp_path):
    dm = _dm(roots["chestxray8"], "chestxray8")
    dm.setup("fit")
    pairs = dm.train_set
    group_of = [r for r in dm._select("train_unlabeled")]
    assert len(pairs) == 2 + 2 + 2 + 6  # three groups of 2 images (2 pairs each), one of 3 (6)
    for i in range(len(pairs)):
        a, b = pairs.pair(i)
        assert a != b and group_of[a]["group"] == group_of[b]["group"]
    # the NIH metadata CSV: groups from "View Position" x "Patient Gender"
    chestxray_csv(tmp_path)
    dm = GeminiDataModule(root=str(tmp_path), dataset="chestxray8", preprocessing={"resize": [16, 16]}, batch_size=2)
    dm.setup("fit")
    recs = dm._select("train_unlabeled")
    assert {r["group"] for r in recs} == {"PA_M", "AP_F", "PA_F"}
    assert len(dm.train_set) == 6 + 2 + 2
    for i in range(len(dm.train_set)):
        a, b = dm.train_set.pair(i)
        assert recs[a]["group"] == recs[b]["group"]
    assert next(iter(dm.train_dataloader()))["image_a"].shape == (2, 1, 16, 16)
    # an image listed in the CSV but missing: an error, or skipped and reported with on_error=skip
    (tmp_path / "chestxray/images/00000003_000.png").unlink()
    with pytest.raises(DataError, match="00000003_000.png"):
        GeminiDataModule(root=str(tmp_path), dataset="chestxray8").setup("fit")
    dm = GeminiDataModule(root=str(tmp_path), dataset="chestxray8", on_error="skip",
                          preprocessing={"resize": [16, 16]})
    dm.setup("fit")
    assert len(dm._select("train_unlabeled")) == 6 and len(dm.layout.skipped) == 1


def test_huge_pair_sets_are_not_enumerated():
    class Images:
        def __len__(self):
            return 112_120

        def __getitem__(self, i):
            return {"image": torch.full((1, 2, 2), float(i))}

    groups = [range(0, 40_000), range(40_000, 70_000), range(70_000, 100_000), range(100_000, 112_120)]
    ds = PairDataset(Images(), groups=groups)
    assert len(ds) == sum(len(g) * (len(g) - 1) for g in groups) > 2**31
    a, b = ds.pair(len(ds) - 1)
    assert 100_000 <= a < 112_120 and 100_000 <= b < 112_120 and a != b
    dm = GeminiDataModule()
    loader = dm._loader(ds, 4, shuffle=True)
    # an epoch is 112,120 pairs drawn with replacement, by stream position (resumable)
    assert len(loader.sampler) == 112_120
    stream = loader.dataset
    picks = [stream.index(g) for g in range(1000)]
    assert all(0 <= i < len(ds) for i in picks) and len(set(picks)) > 990
    assert picks == [stream.index(g) for g in range(1000)]
    b = next(iter(loader))
    assert b["image_a"].shape == (4, 1, 2, 2)


def test_datalist_json(roots, tmp_path):
    src = Path(roots["kipa22"]) / "kipa22"
    datalist = {
        "training": [{"image": f"train/labeled/image/train{i:03d}.nii.gz",
                      "label": f"train/labeled/label/train{i:03d}.nii.gz"} for i in range(2)]
        + [{"image": f"train/unlabeled/image/u{i:03d}.nii.gz"} for i in range(2)],
        "test": [{"image": f"test/labeled/image/test{i:03d}.nii.gz",
                  "label": f"test/labeled/label/test{i:03d}.nii.gz"} for i in range(2)],
    }
    path = src / "datalist.json"
    path.write_text(json.dumps(datalist))
    dm = GeminiDataModule(root=str(tmp_path), dataset="kipa22", datalist=str(path), train_mode="pairs+labeled",
                          num_labeled=2, eval_mode="cases")
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set.pairs) == 2 and len(dm.train_set.labeled) == 2 and len(dm.test_set) == 2
    b = next(iter(dm.train_dataloader()))
    assert b["label"].shape == (2, 1, *S3)
    assert dm.val_set is None  # no validation list (2 labeled training cases: none held out), never the test cases
    # a datalist's "validation" entries are the split's val cases
    datalist["validation"] = [datalist["training"].pop(1)]
    path.write_text(json.dumps(datalist))
    dm = GeminiDataModule(root=str(tmp_path), dataset="kipa22", datalist=str(path), train_mode="labeled",
                          num_labeled=1, eval_mode="cases")
    dm.setup("fit")
    assert dm.split["val"] == ["train/labeled/image/train001.nii.gz"] and len(dm.train_set) == 1
    assert [v["name"] for v in dm.val_dataloader()] == [["train001"]]


def test_few_shot_split_file_is_used(roots, tmp_path):
    split_file = tmp_path / "splits/whs_ct.json"
    dm = _dm(roots["whs_ct"], "whs_ct", train_mode="labeled", num_labeled=5, split_file=str(split_file))
    dm.prepare_data()
    dm.setup("fit")
    split = json.loads(split_file.read_text())
    assert split["dataset"] == "whs_ct" and split["seed"] == 0 and len(split["few_shot"]["5"]) == 5
    used = [Path(dm.train_set.items[i]["meta"]["filename"]).name for i in range(5)]
    assert used == split["few_shot"]["5"]
    # 7 labeled training cases: 2 held out for validation, the 5 others are the 5-shot set and "Full"
    assert len(split["val"]) == 2 and not set(split["val"]) & set(split["train_labeled"])
    assert sorted(split["train_labeled"] + split["val"]) == [f"train{i:03d}.nii.gz" for i in range(7)]
    # an edited split file decides (and changes the hash)
    split["few_shot"]["5"] = split["few_shot"]["5"][::-1]
    split_file.write_text(json.dumps(split))
    dm2 = _dm(roots["whs_ct"], "whs_ct", train_mode="labeled", num_labeled=5, split_file=str(split_file))
    dm2.setup("fit")
    assert [Path(dm2.train_set.items[i]["meta"]["filename"]).name for i in range(5)] == split["few_shot"]["5"]
    assert dm2.split_hash != dm.split_hash
    # a split built from the listing keeps the budget for training: validation takes what is beyond it
    six = _dm(roots["whs_ct"], "whs_ct", train_mode="labeled", num_labeled=6)
    six.setup("fit")
    assert len(six.train_set) == 6 and len(six.split["val"]) == 1
    with pytest.raises(ConfigError, match="num_labeled=8 but .* has only 7 labeled training images"):
        _dm(roots["whs_ct"], "whs_ct", train_mode="labeled", num_labeled=8).setup("fit")
    full = _dm(roots["whs_ct"], "whs_ct", train_mode="labeled", num_labeled=None)
    full.setup("fit")
    assert len(full.train_set) == 5


def test_split_hash_logged_with_a_trainer(roots, tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return (batch["image_a"].mean() - self.w).pow(2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _dm(roots["cat08"], "cat08")
    trainer = L.Trainer(max_steps=1, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Tiny(), datamodule=dm)
    hparams = (Path(trainer.logger.log_dir) / "hparams.yaml").read_text()
    assert f"split_hash: {dm.split_hash}" in hparams and "spatial_dims: 3" in hparams


# ------------------------------------------------------------------------------ bad input
def test_label_values_outside_the_table(roots, tmp_path):
    d = _copy(roots["whs_ct"], tmp_path, "whs_ct")
    bad = d / "test/labeled/label/test001.nii.gz"
    lab = np.asarray(nib.load(str(bad)).dataobj).copy()
    lab[0, 0, :3] = [421, 421, 999]
    write_nifti(bad, lab)
    with pytest.raises(DataError, match=r"values \[421, 999\] that are not in the label table") as err:
        _dm(tmp_path, "whs_ct").setup("test")
    assert str(bad) in str(err.value)


def _set_voxel(path: Path, value: int) -> None:
    """Write ``value`` into the first foreground voxel of the label file ``path`` (NIfTI or PNG)."""
    png = path.suffix == ".png"
    arr = (np.asarray(Image.open(path)) if png else np.asarray(nib.load(str(path)).dataobj)).copy()
    arr.reshape(-1)[int(np.flatnonzero(arr)[0])] = value
    (write_png if png else write_nifti)(path, arr)


def test_label_values_beyond_the_classes(tmp_path):
    """No label table: K is the largest test label + 1; a labeled training file beyond it names the
    file, the value and K (training, atlases, skip mode); the test files say what K is."""
    d = make_generic(tmp_path)
    bad = d / "train/labeled/label/train001.nii.gz"
    _set_voxel(bad, 7)
    dm = _dm(tmp_path, "mine", train_mode="labeled")
    assert dm.num_classes == 3  # from the test labels (values 0..2)
    for call in (lambda: dm.setup("fit"), dm.atlas_cases):
        with pytest.raises(DataError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(f"label {bad} has values [7] beyond the 3 classes 0..2 of mine") and "\n" not in msg
        assert "data.label_table" in msg
    # read at access (disk cache): the error comes from the loader
    dm = _dm(tmp_path, "mine", train_mode="labeled", cache="disk", cache_dir=str(tmp_path / "cache"),
             labeled_batch_size=1)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"has values \[7\] beyond the 3 classes"):
        list(dm.train_dataloader())
    dm = _dm(tmp_path, "mine", train_mode="labeled", on_error="skip", num_labeled=None)
    dm.setup("fit")
    assert [p for p, _ in dm.skipped] == [str(d / "train/labeled/image/train001.nii.gz")] and len(dm.train_set) == 1
    # a label table given by the user must cover every value found: 7 is not one of its keys
    with pytest.raises(DataError) as err:
        _dm(tmp_path, "mine", train_mode="labeled", label_table={1: 1, 2: 2}).setup("fit")
    assert str(err.value).startswith(f"label {bad} has values [7] that are not in the label table of mine "
                                     "(allowed: [0, 1, 2]; 3 classes)")
    # with the table extended the file is fine
    dm = _dm(tmp_path, "mine", train_mode="labeled", label_table={1: 1, 2: 2, 7: 3})
    dm.setup("fit")
    assert dm.num_classes == 4


def test_label_values_outside_a_spec_table_name_the_classes(roots, tmp_path):
    d = _copy(roots["kipa22"], tmp_path, "kipa22")
    bad = d / "train/labeled/label/train001.nii.gz"
    _set_voxel(bad, 7)
    with pytest.raises(DataError) as err:
        _dm(tmp_path, "kipa22", train_mode="labeled").setup("fit")
    assert str(err.value).startswith(f"label {bad} has values [7] that are not in the label table of kipa22 "
                                     "(allowed: [0, 1, 2, 3, 4]; 5 classes)")


def test_multilabel_channels_must_be_binary(roots, tmp_path):
    d = _copy(roots["scr"], tmp_path, "scr")
    bad = d / "train/labeled/label/lung/JPCLN002.png"
    _set_voxel(bad, 7)
    with pytest.raises(DataError) as err:
        _dm(tmp_path, "scr", train_mode="labeled", num_labeled=None).setup("fit")
    msg = str(err.value)
    assert msg.startswith(f"label {bad} (channel lung of the 3 channels heart, lung, clavicle) has values "
                          "[0, 7, 255]; a channel must be binary") and "\n" not in msg


# ------------------------------------------------------------------------------ CANDI brain masks
def _images(dm) -> list[tuple[str, torch.Tensor]]:
    """(file, image) of every preprocessed image of a set-up module: pairs, atlases, test cases."""
    items = [*dm.train_set.images, *dm.atlas_cases(), *dm.test_set]
    return [(it.get("meta", {}).get("filename", it["name"]), it["image"][0]) for it in items]


def test_candi_masks_every_split(roots):
    """One policy: unlabeled, labeled training and test images are all multiplied by their brain mask."""
    dm = _dm(roots["candi"], "candi", eval_mode="cases")
    assert dm.spec.preprocessing.brain_mask == "file"
    dm.setup("fit")
    dm.setup("test")
    outside = torch.from_numpy(brain_mask() == 0)
    images = _images(dm)
    assert len(images) == 3 + 2 + 2
    for name, img in images:
        assert float(img[outside].abs().max()) == 0.0, name
        assert float(img[~outside].max()) > 0.5, name
    # switched off: no image is masked, whatever the split
    dm = _dm(roots["candi"], "candi", eval_mode="cases", preprocessing={"brain_mask": "none"})
    dm.setup("fit")
    dm.setup("test")
    assert all(float(img[outside].max()) > 0.5 for _, img in _images(dm))


@pytest.mark.parametrize("split, sub, name", [
    ("test/labeled", "mask", "test001.nii.gz"),
    ("train/labeled", "mask", "train000.nii.gz"),
    ("train/unlabeled", "label", "BPDwoPsy_002_MR.nii.gz"),
])
def test_candi_missing_brain_mask(roots, tmp_path, split, sub, name):
    d = _copy(roots["candi"], tmp_path, "candi")
    mask = d / split / sub / name
    mask.unlink()
    dm = _dm(tmp_path, "candi", train_mode="pairs+labeled")
    with pytest.raises(DataError) as err:
        dm.setup("fit")
        dm.setup("test")
    msg = str(err.value)
    assert msg.startswith(f"image {d / split / 'image' / name} has no brain mask: expected {mask}")
    assert "brain_mask: none" in msg and "\n" not in msg
    # masking switched off: the same files load
    dm = _dm(tmp_path, "candi", train_mode="pairs+labeled", preprocessing={"brain_mask": "none"})
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_set is not None and dm.test_set is not None


def test_brain_mask_auto_is_gone():
    with pytest.raises(ConfigError, match=r"brain_mask='auto'.*'file'.*'none'"):
        GeminiDataModule(dataset="candi", preprocessing={"brain_mask": "auto"})


def test_shape_and_geometry_mismatch(roots, tmp_path):
    d = _copy(roots["asoca"], tmp_path, "asoca")
    label = d / "test/labeled/label/test000.nii.gz"
    write_nifti(label, np.zeros((16, 16, 15), np.int16))
    with pytest.raises(DataError, match="shape") as err:
        _dm(tmp_path, "asoca").setup("test")
    assert str(label) in str(err.value) and str(d / "test/labeled/image/test000.nii.gz") in str(err.value)
    write_nifti(label, np.zeros(S3, np.int16), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="different geometry") as err:
        _dm(tmp_path, "asoca").setup("test")
    assert str(label) in str(err.value) and str(d / "test/labeled/image/test000.nii.gz") in str(err.value)


@pytest.mark.parametrize("cache", [True, "disk", False])
def test_corrupt_file_and_skip_mode(roots, tmp_path, cache):
    d = _copy(roots["ppmi"], tmp_path, "ppmi")
    shutil.copy(d / "PPMI_3000_T1.nii", d / "PPMI_3999_T1.nii")
    bad = d / "PPMI_3001_T1.nii"
    bad.write_bytes(b"not a nifti file at all" * 20)
    kw = dict(cache=cache, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cannot read") as err:
        dm = _dm(tmp_path, "ppmi", **kw)
        dm.setup("fit")
        list(dm.train_dataloader())
    assert str(bad) in str(err.value)
    dm = _dm(tmp_path, "ppmi", on_error="skip", **kw)
    dm.setup("fit")
    assert [p for p, _ in dm.skipped] == [str(bad)] and dm.train_set.n == 3
    assert len(list(dm.train_dataloader())) == 3


def test_empty_split_and_missing_labels(roots, tmp_path):
    d = _copy(roots["scr"], tmp_path, "scr")
    (d / "test/labeled/label/clavicle/JPCLN011.png").unlink()
    with pytest.raises(DataError, match="has no clavicle label") as err:
        _dm(tmp_path, "scr").setup("validate")
    assert str(d / "test/labeled/image/JPCLN011.png") in str(err.value)
    # empty split in a split file
    d = _copy(roots["kipa22"], tmp_path, "kipa22")
    split_file = tmp_path / "kipa22.json"
    _dm(tmp_path, "kipa22", split_file=str(split_file)).prepare_data()
    split = json.loads(split_file.read_text())
    split["test"] = []
    split_file.write_text(json.dumps(split))
    with pytest.raises(DataError, match="split test of kipa22 is empty"):
        _dm(tmp_path, "kipa22", split_file=str(split_file)).setup("test")
    # an empty folder
    shutil.rmtree(d / "train/unlabeled/image")
    (d / "train/unlabeled/image").mkdir()
    with pytest.raises(DataError, match="no images in"):
        _dm(tmp_path, "kipa22").setup("fit")


def test_rgb_xray_becomes_grayscale_with_a_warning(roots, tmp_path):
    d = _copy(roots["chestxray8"], tmp_path, "chestxray8")
    gray = np.asarray(Image.open(d / "AP_F/AP_F_00000_000.png"))
    write_png(d / "AP_F/AP_F_00000_000.png", np.stack([gray] * 3, -1))
    with pytest.warns(DataWarning, match="3 channels; converted to one grayscale"):
        dm = _dm(tmp_path, "chestxray8", preprocessing={"resize": [32, 32]})
        dm.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        item = dm.train_set.images[0]
    np.testing.assert_allclose(item["image"][0].numpy(), gray.T / 255.0, atol=1e-3)


def test_config_errors(roots):
    with pytest.raises(ConfigError, match="train_mode"):
        GeminiDataModule(train_mode="nope")
    with pytest.raises(ConfigError, match="preprocessing has unknown keys"):
        GeminiDataModule(dataset="candi", preprocessing={"brain": 1})
    with pytest.raises(ConfigError, match="label_table"):
        GeminiDataModule(dataset="candi", label_table={2: 1, 3: 3})
    with pytest.raises(ConfigError, match="patch_size"):
        _dm(roots["cat08"], "cat08", patch_size=[8, 8, 17]).setup("fit")


@pytest.mark.parametrize("cache", [True, "disk"])
def test_files_are_read_once(roots, tmp_path, cache):
    """With the cache, setup reads every file; training and evaluation never touch the disk again."""
    _copy(roots["kipa22"], tmp_path / "data", "kipa22")
    dm = _dm(tmp_path / "data", "kipa22", train_mode="pairs+labeled", cache=cache, cache_dir=str(tmp_path / "c"),
             patch_size=[8, 8, 8])
    dm.setup("fit")
    dm.setup("test")
    if cache == "disk":  # the disk cache is filled on first access
        list(dm.train_dataloader()), list(dm.test_dataloader())
    shutil.rmtree(tmp_path / "data" / "kipa22")
    for _ in range(2):
        b = next(iter(dm.train_dataloader()))
        assert b["image_a"].shape == (2, 1, 8, 8, 8) and b["label"].shape == (2, 1, 8, 8, 8)
    assert len(list(dm.test_dataloader())) == 2


def test_registration_eval_pairs(roots, tmp_path):
    dm = _dm(roots["whs_ct"], "whs_ct", num_val_pairs=None)
    dm.setup("test")
    pairs = [(b["name_a"], b["name_b"]) for b in dm.test_set]
    assert len(pairs) == 3 * 2 and len(set(pairs)) == 6 and all(a != b for a, b in pairs)  # all ordered pairs
    listed = [["test002", "test000"], ["test000.nii.gz", "test001"]]
    dm = _dm(roots["whs_ct"], "whs_ct", eval_pairs=listed)
    dm.setup("test")
    assert [(b["name_a"], b["name_b"]) for b in dm.test_set] == [("test002", "test000"), ("test000", "test001")]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([["test001", "nope"]]))
    with pytest.raises(ConfigError, match=r"names \['nope'\]"):
        _dm(roots["whs_ct"], "whs_ct", eval_pairs=str(path)).setup("test")


def test_split_command_and_val_split(roots, tmp_path):
    from gemini_pl.data.splits import _main, load_split

    out = tmp_path / "whs.json"
    _main(["--root", str(roots["whs_ct"]), "--dataset", "whs_ct", "--seed", "3", "--out", str(out)])
    split, digest = load_split(out)
    assert split["seed"] == 3 and len(split["train_labeled"]) == 5 and len(split["test"]) == 3
    assert len(split["val"]) == 2 and not set(split["val"]) & set(split["train_labeled"] + split["test"])
    _main(["--root", str(roots["whs_ct"]), "--dataset", "whs_ct", "--seed", "3", "--out", str(out), "--num-val", "0"])
    assert "val" not in load_split(out)[0] and len(load_split(out)[0]["train_labeled"]) == 7
    # a hand-made val list: a training case and a case of the test folder taken out of test
    # (val never shares a case with train_labeled: the training case leaves it)
    split["val"] = ["train005.nii.gz", "test002.nii.gz"]
    split["test"].remove("test002.nii.gz")
    split["train_labeled"] = [n for n in split["train_labeled"] if n != "train005.nii.gz"]
    split["few_shot"] = {k: [n for n in v if n != "train005.nii.gz"] for k, v in split["few_shot"].items()}
    out.write_text(json.dumps(split))
    dm = _dm(roots["whs_ct"], "whs_ct", split_file=str(out), num_val_pairs=None)
    dm.setup("fit")
    assert {b["name_a"] for b in dm.val_set} == {"train005", "test002"}
    dm.setup("test")
    assert {b["name_a"] for b in dm.test_set} == {"test000", "test001"}


def test_pair_crops_share_one_location():
    base = torch.arange(16 * 16 * 16, dtype=torch.float32).reshape(1, 16, 16, 16)
    items = [{"image": base + 10_000 * i} for i in range(3)]
    ds = PairDataset(items, patch_size=[8, 4, 8], seed=5)
    starts = set()
    for k in range(len(ds)):
        a, b = ds.pair(k)
        item = ds[k]
        assert item["image_a"].shape == (1, 8, 4, 8)
        assert torch.all(item["image_a"] - item["image_b"] == 10_000 * (a - b))  # same place in A and B
        starts.add(float(item["image_a"].flatten()[0]) - 10_000 * a)
    assert len(starts) > 1  # random places
