"""The data contract (gemini_pl.data.contract): what LightningModules read from the data module.

Properties right after construction (before prepare_data/setup, as LightningCLI's
``link_arguments(apply_on="instantiate")`` reads them), ``num_classes`` of unlabeled data, and
``atlas_cases`` (whole few-shot images, the data module left as it was).
"""

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gemini_pl.data import GeminiDataModule, PhantomDataModule, PhantomOptions, generate_phantom_dataset
from gemini_pl.data.phantom import LABEL_NAMES
from gemini_pl.errors import ConfigError, DataError

SMALL = dict(num_unlabeled=4, num_labeled=3, num_test=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    generate_phantom_dataset(root, name="phantom2d", spatial_dims=2, size=32, **SMALL)
    return root


def _read(path) -> np.ndarray:
    """A NIfTI file's array in the file's voxel order (what the data module serves)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T


def _minmax(raw: np.ndarray) -> np.ndarray:
    raw = np.clip(raw.astype(np.float64), 0, None)
    return (raw - raw.min()) / (raw.max() - raw.min())


# ------------------------------------------------------------------------------ right after construction
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("how", ["alias", "option"])
def test_properties_before_prepare_data(tmp_path, dims, how):
    """Phantoms: everything a model links from the data is known before any file exists."""
    root = tmp_path / "nothing_yet"
    if how == "alias":  # the dataset name alone says 2D or 3D
        dm = PhantomDataModule(root=str(root), dataset=f"phantom{dims}d", train_mode="labeled",
                               eval_mode="cases", patch_size=[8] * dims)
    else:
        dm = GeminiDataModule(root=str(root), dataset=f"phantom{dims}d", train_mode="labeled",
                              eval_mode="cases", patch_size=[8] * dims, phantom=PhantomOptions(size=16))
    names = tuple(LABEL_NAMES[v] for v in sorted(LABEL_NAMES))  # the generator's label values 0..5
    assert dm.spatial_dims == dims
    assert dm.label_kind == "multiclass"
    assert dm.num_classes == max(LABEL_NAMES) + 1 == 6
    assert dm.class_names == names
    assert dm.patch_size == [8] * dims
    assert (dm.train_mode, dm.eval_mode) == ("labeled", "cases")
    assert not root.exists()  # nothing was generated or read
    assert dm.split is None


def test_unlabeled_datasets_have_no_num_classes(root, tmp_path):
    # a spec without labels (CAT08, PPMI): no files needed
    for name in ("cat08", "ppmi"):
        dm = GeminiDataModule(root=str(tmp_path / "absent"), dataset=name)
        assert (dm.label_kind, dm.num_classes, dm.class_names) == (None, None, ())
    # a folder of unlabeled images only
    shutil.copytree(root / "phantom2d/train/unlabeled", tmp_path / "mine/train/unlabeled")
    dm = GeminiDataModule(root=str(tmp_path), dataset="mine")
    assert dm.label_kind == "multiclass" and dm.num_classes is None
    dm.setup("fit")
    assert len(dm.train_set) == 4 * 3 and dm.num_classes is None


def test_num_classes_from_the_label_files(root, tmp_path):
    """A folder without a label table: K is the largest test label + 1; a missing root raises."""
    shutil.copytree(root / "phantom2d", tmp_path / "mine")
    for path in sorted((tmp_path / "mine/test/labeled/label").iterdir()):  # drop class 5 from the test labels
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        arr[arr == 5] = 4
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(path))
    top = max(int(_read(p).max()) for p in (tmp_path / "mine/test/labeled/label").iterdir())
    assert top == 4
    dm = GeminiDataModule(root=str(tmp_path), dataset="mine")
    assert dm.num_classes == top + 1 == 5
    # no test folder: the labeled training images say
    shutil.rmtree(tmp_path / "mine/test")
    top = max(int(_read(p).max()) for p in (tmp_path / "mine/train/labeled/label").iterdir())
    assert GeminiDataModule(root=str(tmp_path), dataset="mine").num_classes == top + 1 == 6
    with pytest.raises(DataError, match="does not exist"):
        _ = GeminiDataModule(root=str(tmp_path / "gone"), dataset="mine").num_classes


# ------------------------------------------------------------------------------ atlas_cases
def test_atlas_cases_are_whole_and_leave_the_module_as_it_was(root):
    common = dict(root=str(root), size=32, train_mode="labeled", labeled_batch_size=2, patch_size=[16, 16],
                  **SMALL)
    dm = PhantomDataModule(**common)
    dm.setup("fit")
    hparams = dict(dm.hparams)
    atlases = dm.atlas_cases()
    # the 3-shot set: the sorted labeled training files in the seed's permutation (splits.make_split)
    files = sorted(p.name.removesuffix(".nii.gz") for p in (root / "phantom2d/train/labeled/image").iterdir())
    order = np.random.default_rng(0).permutation(len(files))
    assert [a["name"] for a in atlases] == [files[i] for i in order]
    for a in atlases:
        assert set(a) == {"image", "label", "name"}
        assert a["image"].shape == (1, 32, 32) and a["image"].dtype == torch.float32  # not the 16² patch
        assert a["label"].shape == (1, 32, 32) and a["label"].dtype == torch.int64
        folder = root / "phantom2d/train/labeled"
        np.testing.assert_array_equal(a["label"][0].numpy(), _read(folder / f"label/{a['name']}.nii.gz"))
        np.testing.assert_allclose(a["image"][0].numpy(), _minmax(_read(folder / f"image/{a['name']}.nii.gz")),
                                   atol=1e-5)
    assert [a["name"] for a in dm.atlas_cases(max_cases=2)] == [a["name"] for a in atlases[:2]]
    assert dm.patch_size == [16, 16] and dict(dm.hparams) == hparams
    # training batches are still 16² crops, the same as those of a module never asked for atlases
    fresh = PhantomDataModule(**common)
    fresh.setup("fit")
    batch, expected = next(iter(dm.train_dataloader())), next(iter(fresh.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16)
    assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["label"], expected["label"])


def test_atlas_cases_before_setup_and_without_labels(root, tmp_path):
    dm = GeminiDataModule(root=str(root), dataset="phantom2d", num_labeled=1)
    assert [a["name"] for a in dm.atlas_cases()] == [dm.split["few_shot"]["1"][0].removesuffix(".nii.gz")]
    with pytest.raises(ConfigError, match="max_cases"):
        dm.atlas_cases(max_cases=0)
    with pytest.raises(ConfigError, match="no labels"):
        GeminiDataModule(root=str(tmp_path), dataset="cat08").atlas_cases()


def test_mode_and_patch_settings_are_checked():
    dm = GeminiDataModule(dataset="phantom3d")
    with pytest.raises(ConfigError, match="train_mode"):
        dm.train_mode = "pair"
    with pytest.raises(ConfigError, match="eval_mode"):
        dm.eval_mode = "case"
    with pytest.raises(ConfigError, match=r"patch_size=\[8, 8\] has 2 sizes but spatial_dims=3"):
        dm.patch_size = [8, 8]
    dm.eval_mode = "cases"
    assert (dm.train_mode, dm.eval_mode, dm.patch_size) == ("pairs", "cases", None)
