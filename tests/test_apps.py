"""gemini-pl register / segment on one's own files: any shape, spacing and direction; ITK round trip; geometry."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Compose

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from gemini_pl.apps import register as reg_app
from gemini_pl.apps import segment as seg_app
from gemini_pl.apps.checkpoint import load_model
from gemini_pl.apps.grid import Grid, image_array, model_grid
from gemini_pl.apps.prepare import network_input
from gemini_pl.data.transforms import case_transforms
from gemini_pl.metrics.jacobian import folding_percent, jacobian_determinant
from gemini_pl.modules import GeminiPretrain, Registration, Segmentation
from gemini_pl.spatial import warp


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _case(path, size, spacing, origin, direction, centre, radii, seed=0, label_path=None):
    """Write an image (and its label) whose two nested ellipsoids are defined in world (LPS) mm, so
    that images on different grids show the same anatomy."""
    grid = Grid(tuple(size), tuple(spacing), tuple(origin), tuple(np.asarray(direction).reshape(-1)))
    world = grid.voxel_world()
    d = sum(((world[i] - centre[i]) / radii[i]) ** 2 for i in range(len(size)))
    label = (d < 1).astype(np.uint8) + (d < 0.3).astype(np.uint8)
    image = label * 100.0 + np.random.default_rng(seed).normal(0, 5, label.shape)
    for arr, p, pixel in ((image, path, sitk.sitkFloat32), (label, label_path, sitk.sitkUInt8)):
        if p is None:
            continue
        img = sitk.Cast(sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose())), pixel)
        grid.stamp(img)
        sitk.WriteImage(img, str(p))
    return grid


def _save_ckpt(module, path, data: dict) -> str:
    """A checkpoint as ``gemini-pl fit`` writes it (the entries ``register``/``segment`` read)."""
    hp = {**dict(module.hparams), "_class_path": f"{type(module).__module__}.{type(module).__name__}"}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp, "datamodule_hyper_parameters": data}, path)
    return str(path)


@pytest.fixture(scope="module")
def pair3d(tmp_path_factory):
    """A 3D fixed/moving pair on different oblique grids (non-unit spacing), with labels."""
    root = tmp_path_factory.mktemp("pair3d")
    centre, radii = (2.0, -3.0, 5.0), (7.0, 5.0, 6.0)
    fixed = _case(root / "fixed.nii.gz", (12, 13, 10), (1.2, 0.9, 2.0), (-6.0, -9.0, -4.0),
                  _rotation(2, 0.35) @ _rotation(0, 0.2), centre, radii, 1, root / "fixed_label.nii.gz")
    moving = _case(root / "moving.nii.gz", (14, 11, 9), (1.0, 1.1, 2.2), (-5.0, -8.5, -3.0),
                   _rotation(2, 0.25) @ np.diag([1.0, 1.0, 1.0]), (2.8, -2.5, 5.5), radii, 2,
                   root / "moving_label.nii.gz")
    return root, fixed, moving


@pytest.fixture(scope="module")
def reg_ckpt(tmp_path_factory):
    """A Registration module with a random deformer (displacements of about a voxel), trained on
    data reoriented to RAS and resampled to 1.5 mm, with 8³ patches (so sliding windows run)."""
    torch.manual_seed(0)
    module = Registration(spatial_dims=3, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, flow_init="published")
    with torch.no_grad():
        module.net.deformer.flow.weight.mul_(0.3)  # about a voxel
    path = tmp_path_factory.mktemp("ckpt") / "reg.ckpt"
    return _save_ckpt(module, path, {"dataset": "mine", "spatial_dims": 3, "patch_size": [8, 8, 8],
                                     "preprocessing": {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5]}})


def test_register_itk_round_trip_equals_the_warped_label(tmp_path, pair3d, reg_ckpt):
    root, fixed_grid, _ = pair3d
    out = tmp_path / "out"
    code = reg_app.main(["--fixed", str(root / "fixed.nii.gz"), "--moving", str(root / "moving.nii.gz"),
                         "--ckpt", reg_ckpt, "--out", str(out), "--moving-label", str(root / "moving_label.nii.gz"),
                         "--fixed-label", str(root / "fixed_label.nii.gz"), "--device", "cpu"])
    assert code == 0
    name = "moving_to_fixed"
    fixed = sitk.ReadImage(str(root / "fixed.nii.gz"))
    field = sitk.ReadImage(str(out / f"{name}_field.nii.gz"))
    assert field.GetPixelID() == sitk.sitkVectorFloat64 and field.GetNumberOfComponentsPerPixel() == 3
    assert field.GetSize() == fixed.GetSize()
    assert np.allclose(field.GetDirection(), fixed.GetDirection(), atol=1e-6)
    assert np.abs(sitk.GetArrayFromImage(field)).max() > 1.0  # a real deformation (mm)
    warped_label = sitk.ReadImage(str(out / f"{name}_warped_label.nii.gz"))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):  # on the fixed image's grid
        assert getattr(warped_label, get)() == getattr(fixed, get)()
    # ITK applies the field and reproduces the project's warped label
    moving_label = sitk.ReadImage(str(root / "moving_label.nii.gz"))
    itk = sitk.Resample(moving_label, fixed, sitk.DisplacementFieldTransform(field), sitk.sitkNearestNeighbor, 0)
    ours, theirs = sitk.GetArrayFromImage(warped_label), sitk.GetArrayFromImage(itk)
    assert len(np.unique(ours)) == 3
    mismatch = float((ours != theirs).mean())
    assert mismatch <= 1e-3, f"{100 * mismatch:.3f} % of the voxels differ"  # only points halfway between voxels may round differently
    # the warped image: ITK's linear resampling agrees wherever the point read lies inside the moving
    # image (in the last half voxel outside, ITK reads 0 and grid_sample blends with the zero padding)
    moving = sitk.ReadImage(str(root / "moving.nii.gz"))
    itk_img = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.DisplacementFieldTransform(
        sitk.ReadImage(str(out / f"{name}_field.nii.gz"))), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    our_img = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_warped.nii.gz")))
    field = sitk.ReadImage(str(out / f"{name}_field.nii.gz"))  # (DisplacementFieldTransform took the first copy)
    u = np.moveaxis(sitk.GetArrayFromImage(field).transpose(2, 1, 0, 3), -1, 0)
    q = Grid.of(moving).index(fixed_grid.voxel_world() + u)  # where each fixed voxel reads the moving image
    inside = np.all([(q[i] >= 0) & (q[i] <= moving.GetSize()[i] - 1) for i in range(3)], axis=0).transpose()
    assert inside.mean() > 0.5
    assert np.allclose(itk_img[inside], our_img[inside], atol=1e-3)
    # the summary's Dice is that of the written files
    fixed_label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "fixed_label.nii.gz")))
    dice = np.mean([2 * ((ours == v) & (fixed_label == v)).sum() / ((ours == v).sum() + (fixed_label == v).sum()) for v in (1, 2)])
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert float(row["dice"]) == pytest.approx(100 * dice, rel=1e-5)
    jac = sitk.ReadImage(str(out / f"{name}_jacobian.nii.gz"))
    assert jac.GetSize() == fixed.GetSize()
    for png in ("overview", "grid", "jacobian"):
        assert (out / f"{name}_{png}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert f"]({name}_grid.png)" in report and f"| {name} | {float(row['folding_percent']):.3f} |" in report


def test_register_field_is_physical_lps_offset(pair3d, reg_ckpt, monkeypatch):
    """A constant φ on the model grid is the translation direction·diag(spacing)·φ (mm, LPS): ITK's
    own TranslationTransform by that offset gives the same warped label."""
    root, _, _ = pair3d
    loaded = load_model(reg_ckpt, "cpu", need="deformer")
    phi = torch.tensor([0.75, -1.25, 0.5], dtype=torch.float64)
    monkeypatch.setattr(loaded.model, "register", lambda m, f: phi.view(1, 3, 1, 1, 1).expand(1, 3, *m.shape[2:]).clone())
    fixed, moving = sitk.ReadImage(str(root / "fixed.nii.gz")), sitk.ReadImage(str(root / "moving.nii.gz"))
    label = sitk.ReadImage(str(root / "moving_label.nii.gz"))
    res = reg_app.register_pair(loaded, fixed, moving, label)
    m = res.model_grid
    assert m.spacing == pytest.approx((1.5, 1.5, 1.5))
    d = np.asarray(m.direction).reshape(3, 3)
    assert np.all(np.argmax(np.abs(d), axis=0) == [0, 1, 2]) and d[0, 0] < 0 and d[1, 1] < 0  # RAS axes in LPS
    offset = np.asarray(m.direction).reshape(3, 3) @ (np.asarray(m.spacing) * phi.numpy())
    assert np.allclose(res.displacement.numpy().reshape(3, -1), offset[:, None], atol=1e-9)
    assert res.folding_percent == 0.0 and res.sdlogj == pytest.approx(0.0, abs=1e-6)
    itk = sitk.Resample(label, fixed, sitk.TranslationTransform(3, offset.tolist()), sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(image_array(itk, np.int64), res.warped_label.numpy())


def test_register_on_one_grid_is_the_project_warp(tmp_path):
    """Fixed and moving on the model's own grid (2D, oblique, anisotropic): the written warped label
    is spatial.warp's, the Jacobian map and folding those of metrics.jacobian."""
    torch.manual_seed(1)
    module = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, flow_init="published")
    ckpt = _save_ckpt(module, tmp_path / "mip.ckpt", {"_class_path": "gemini_pl.data.PhantomDataModule",
                                                      "dataset": "phantom2d", "spatial_dims": 2})
    rot = _rotation(2, 0.5)[:2, :2]
    kw = dict(size=(20, 24), spacing=(0.7, 1.3), origin=(4.0, -2.0), direction=rot, radii=(5.0, 7.0))
    _case(tmp_path / "f.nii.gz", centre=(6.0, 10.0), seed=0, label_path=tmp_path / "fl.nii.gz", **kw)
    _case(tmp_path / "m.nii.gz", centre=(7.0, 8.5), seed=1, label_path=tmp_path / "ml.nii.gz", **kw)
    loaded = load_model(ckpt, "cpu")
    fixed, moving, label = (sitk.ReadImage(str(tmp_path / n)) for n in ("f.nii.gz", "m.nii.gz", "ml.nii.gz"))
    res = reg_app.register_pair(loaded, fixed, moving, label)
    assert res.model_grid.same_as(Grid.of(fixed))
    x_f = network_input(fixed, loaded.spec, res.model_grid)
    x_m = network_input(moving, loaded.spec, res.model_grid)
    with torch.no_grad():
        flow = module.eval().register(x_m, x_f)
    assert flow.abs().max() > 0.5
    lab = torch.from_numpy(image_array(label, np.int64))[None, None]
    expected = warp(lab, flow, mode="nearest")[0, 0]
    assert torch.equal(res.warped_label, expected)
    assert torch.allclose(res.jacobian.float(), jacobian_determinant(flow)[0], atol=1e-4)
    assert res.folding_percent == pytest.approx(float(folding_percent(flow)[0]))


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory):
    """A 3D Segmentation module (3 classes) trained on RAS-oriented data resampled to 1.5 mm, 8³ patches."""
    torch.manual_seed(0)
    module = Segmentation(spatial_dims=3, num_classes=3, widths=SMALL_WIDTHS)
    path = tmp_path_factory.mktemp("segckpt") / "seg.ckpt"
    return _save_ckpt(module, path, {"dataset": "mine", "spatial_dims": 3, "patch_size": [8, 8, 8],
                                     "preprocessing": {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5]}})


def test_network_input_is_what_the_data_module_serves(pair3d, seg_ckpt):
    """The image a new file becomes (grid and intensities) is the training transforms' (MONAI
    Orientationd + Spacingd + intensity), up to interpolation at the border."""
    root, _, _ = pair3d
    loaded = load_model(seg_ckpt, "cpu", need="head")
    image = sitk.ReadImage(str(root / "moving.nii.gz"))
    grid = model_grid(Grid.of(image), "RAS", (1.5, 1.5, 1.5))
    ours = network_input(image, loaded.spec, grid)[0, 0]
    served = Compose(case_transforms(loaded.spec, 3, labeled=False), map_items=False)({"image": str(root / "moving.nii.gz"), "name": "m"})
    assert tuple(served["image"].shape[1:]) == tuple(ours.shape)
    aff = served["meta"]["affine"].numpy().copy()
    aff[:2] *= -1  # RAS -> LPS
    assert np.allclose(aff[:3, :3], grid.matrix, atol=1e-5) and np.allclose(aff[:3, 3], grid.origin, atol=1e-4)
    inner = (slice(1, -1),) * 3
    assert torch.allclose(ours[inner], served["image"][0][inner], atol=1e-5)  # (the border voxels: extrapolation differs)


def test_segment_writes_labels_on_each_inputs_grid(tmp_path, pair3d, seg_ckpt, monkeypatch):
    root, _, _ = pair3d
    from gemini_pl.inference import needs_windows

    for name in ("fixed", "moving"):  # the images exceed the training patch on the model's grid: sliding windows
        grid = model_grid(Grid.of(sitk.ReadImage(str(root / f"{name}.nii.gz"))), "RAS", (1.5, 1.5, 1.5))
        assert needs_windows(grid.shape, [8, 8, 8])
    out = tmp_path / "seg"
    assert seg_app.main(["--ckpt", seg_ckpt, "--input", str(root / "fixed.nii.gz"), str(root / "moving.nii.gz"),
                         "--out", str(out), "--device", "cpu"]) == 0
    for name in ("fixed", "moving"):
        src = sitk.ReadImage(str(root / f"{name}.nii.gz"))
        seg = sitk.ReadImage(str(out / f"{name}_seg.nii.gz"))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(seg, get)() == getattr(src, get)(), get
        assert (out / f"{name}_overlay.png").stat().st_size > 1000
        # volumes.csv: voxels of each class × the voxel volume of the written file
        arr = sitk.GetArrayFromImage(seg)
        row = next(r for r in csv.DictReader(open(out / "volumes.csv")) if r["case"] == name)
        voxel = float(np.prod(src.GetSpacing()))
        for c in (1, 2):
            assert float(row[f"{c}_mm3"]) == pytest.approx((arr == c).sum() * voxel)
    report = (out / "report.md").read_text()
    assert "](fixed_overlay.png)" in report and "| moving |" in report


def test_segment_maps_back_without_flips(tmp_path, pair3d, seg_ckpt, monkeypatch):
    """A head that labels bright voxels (class 1 above 0.25, class 2 above 0.75 of the preprocessed
    intensities) must give, on the input's own grid, the labels of the input's own voxels — any
    flipped or permuted axis in the resampling there and back would not."""
    root, _, _ = pair3d
    loaded = load_model(seg_ckpt, "cpu", need="head")

    def logits(x):
        return torch.cat([torch.zeros_like(x), 40 * (x - 0.25), 40 * (2 * x - 1.25)], dim=1)

    monkeypatch.setattr(loaded.model, "segment_logits", logits)
    image = sitk.ReadImage(str(root / "moving.nii.gz"))
    seg = seg_app.segment_image(loaded, image)
    truth = image_array(sitk.ReadImage(str(root / "moving_label.nii.gz")), np.int64)
    assert tuple(seg.labels.shape) == truth.shape
    agree = float((seg.labels.numpy() == truth).mean())
    assert agree > 0.9, agree


def test_register_refuses_a_checkpoint_without_deformer(tmp_path, pair3d, seg_ckpt, capsys):
    root, _, _ = pair3d
    code = reg_app.main(["--fixed", str(root / "fixed.nii.gz"), "--moving", str(root / "moving.nii.gz"),
                         "--ckpt", seg_ckpt, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Segmentation" in err[0] and "deformer" in err[0]


def test_help_lists_register_and_segment(capsys):
    from gemini_pl.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "register" in out and "segment" in out


def test_register_folders_of_pairs_any_format_and_semi_checkpoint(tmp_path):
    """Folders of .nrrd / .mha pairs matched by sorted name, a GeminiSemi checkpoint, through the
    gemini-pl entry point."""
    from gemini_pl.cli import main
    from gemini_pl.modules import GeminiSemi

    torch.manual_seed(2)
    module = GeminiSemi(spatial_dims=2, num_classes=3, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    ckpt = _save_ckpt(module, tmp_path / "semi.ckpt", {"dataset": "mine", "spatial_dims": 2, "preprocessing": {"spacing": [1.0, 1.0]}})
    for sub in ("fixed", "moving"):
        (tmp_path / sub).mkdir()
    kw = dict(spacing=(0.8, 1.2), direction=_rotation(2, -0.3)[:2, :2], radii=(5.0, 6.0))
    for i, name in enumerate(("a", "b")):
        _case(tmp_path / "fixed" / f"{name}.nrrd", size=(18, 16), origin=(0.0, 1.0), centre=(6.0, 9.0), seed=i, **kw)
        _case(tmp_path / "moving" / f"{name}2.mha", size=(15, 20), origin=(1.0, 0.0), centre=(6.5, 8.0), seed=9 + i, **kw)
    with pytest.raises(SystemExit) as exc:
        main(["register", "--fixed", str(tmp_path / "fixed"), "--moving", str(tmp_path / "moving"), "--ckpt", ckpt,
              "--out", str(tmp_path / "out"), "--suffix", ".mha", "--no-pictures"])
    assert exc.value.code == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert [r["pair"] for r in rows] == ["a2_to_a", "b2_to_b"]
    for r in rows:
        out = sitk.ReadImage(str(tmp_path / "out" / f"{r['pair']}_warped.mha"))
        fixed = sitk.ReadImage(r["fixed"])
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(out, get)() == getattr(fixed, get)()
    assert not list((tmp_path / "out").glob("*.png"))


def test_register_pairs_must_match(tmp_path, pair3d, reg_ckpt, capsys):
    root, _, _ = pair3d
    (tmp_path / "two").mkdir()
    (tmp_path / "three").mkdir()
    for i in range(2):
        sitk.WriteImage(sitk.ReadImage(str(root / "fixed.nii.gz")), str(tmp_path / "two" / f"f{i}.nii.gz"))
    for i in range(3):
        sitk.WriteImage(sitk.ReadImage(str(root / "moving.nii.gz")), str(tmp_path / "three" / f"m{i}.nii.gz"))
    assert reg_app.main(["--fixed", str(tmp_path / "two"), "--moving", str(tmp_path / "three"), "--ckpt", reg_ckpt,
                         "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "2 fixed images but 3 moving images" in err and len(err.strip().splitlines()) == 1


def test_segment_multilabel_2d_folder(tmp_path):
    """A multilabel head: one 0/1 file per channel on each input's grid (a folder of .mha files),
    areas in mm² per channel."""
    torch.manual_seed(3)
    module = Segmentation(spatial_dims=2, num_classes=2, label_kind="multilabel", widths=SMALL_WIDTHS)
    ckpt = _save_ckpt(module, tmp_path / "ml.ckpt", {"dataset": "mine", "spatial_dims": 2, "preprocessing": {"resize": [16, 16]}})
    (tmp_path / "in").mkdir()
    _case(tmp_path / "in" / "x.mha", size=(21, 17), spacing=(0.6, 0.9), origin=(3.0, 2.0),
          direction=_rotation(2, 0.7)[:2, :2], centre=(8.0, 5.0), radii=(4.0, 3.0))
    assert seg_app.main(["--ckpt", ckpt, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    src = sitk.ReadImage(str(tmp_path / "in" / "x.mha"))
    row = next(csv.DictReader(open(tmp_path / "out" / "volumes.csv")))
    for c in ("1", "2"):
        seg = sitk.ReadImage(str(tmp_path / "out" / f"x_seg_{c}.nii.gz"))
        assert seg.GetSize() == src.GetSize()
        assert np.allclose(seg.GetSpacing(), src.GetSpacing()) and np.allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-5)
        assert np.allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)  # (a NIfTI stores single precision)
        arr = sitk.GetArrayFromImage(seg)
        assert set(np.unique(arr)) <= {0, 1}
        assert float(row[f"{c}_mm2"]) == pytest.approx(arr.sum() * 0.6 * 0.9)
    assert (tmp_path / "out" / "x_overlay.png").is_file()


def test_slab_by_slab_equals_whole(pair3d, reg_ckpt, seg_ckpt, monkeypatch):
    """Large volumes are composed a slab of planes at a time: the same result as in one piece."""
    from gemini_pl.apps import grid as grid_mod

    root, _, _ = pair3d
    fixed, moving = sitk.ReadImage(str(root / "fixed.nii.gz")), sitk.ReadImage(str(root / "moving.nii.gz"))
    label = sitk.ReadImage(str(root / "moving_label.nii.gz"))
    fixed_label = sitk.ReadImage(str(root / "fixed_label.nii.gz"))
    loaded, seg_loaded = load_model(reg_ckpt, "cpu"), load_model(seg_ckpt, "cpu", need="head")
    whole = reg_app.register_pair(loaded, fixed, moving, label, fixed_label)
    seg_whole = seg_app.segment_image(seg_loaded, moving)
    assert len(list(grid_mod.slabs(fixed.GetSize(), max_voxels=400))) == 5  # 156 voxels a plane: 2 planes a slab
    monkeypatch.setattr(reg_app, "slabs", lambda shape: grid_mod.slabs(shape, max_voxels=400))
    monkeypatch.setattr(seg_app, "slabs", lambda shape: grid_mod.slabs(shape, max_voxels=400))
    parts = reg_app.register_pair(loaded, fixed, moving, label, fixed_label)
    for key in ("displacement", "warped", "warped_label", "jacobian"):
        assert torch.equal(getattr(parts, key), getattr(whole, key)), key
    assert parts.dice == whole.dice and parts.dice_unwarped == whole.dice_unwarped
    assert torch.equal(seg_app.segment_image(seg_loaded, moving).labels, seg_whole.labels)


def test_segment_writes_the_datasets_file_values(tmp_path, pair3d, monkeypatch):
    """--label-values file: class indices mapped back through the dataset's label table (MM-WHS:
    class 1 is stored as 205 ...)."""
    from gemini_pl.data.specs.whs_ct import LABEL_TABLE

    root, _, _ = pair3d
    module = Segmentation(spatial_dims=3, num_classes=8, widths=SMALL_WIDTHS)
    ckpt = _save_ckpt(module, tmp_path / "whs.ckpt", {"dataset": "whs_ct", "spatial_dims": 3})

    def logits(self, x):  # class 1 where bright, class 7 elsewhere
        bright = (x > x.mean()).float()
        out = torch.zeros(x.shape[0], 8, *x.shape[2:])
        out[:, 1:2], out[:, 7:8] = 10 * bright, 10 * (1 - bright)
        return out

    from gemini_pl.modules.seg_eval import SegmentationEvaluation

    monkeypatch.setattr(SegmentationEvaluation, "segment_logits", logits)  # (the head every segmenter shares)
    assert seg_app.main(["--ckpt", ckpt, "--input", str(root / "fixed.nii.gz"), "--out", str(tmp_path / "o"),
                         "--label-values", "file", "--no-pictures", "--device", "cpu"]) == 0
    values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "fixed_seg.nii.gz")))).tolist())
    inverse = {c: v for v, c in sorted(LABEL_TABLE.items(), reverse=True)}  # first file value of each class
    assert values == {inverse[1], inverse[7]}
    header = next(csv.reader(open(tmp_path / "o" / "volumes.csv")))
    assert len(header) == 2 + 7  # case, image, 7 foreground classes by name


def test_segment_refuses_an_atlas_segmenter(tmp_path, capsys):
    from gemini_pl.modules import VMAtlas

    module = VMAtlas(spatial_dims=2, num_classes=3, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    ckpt = _save_ckpt(module, tmp_path / "vm.ckpt", {"dataset": "mine", "spatial_dims": 2})
    assert seg_app.main(["--ckpt", ckpt, "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VMAtlas" in err[0] and "gemini-pl test" in err[0]


def test_register_one_atlas_with_its_label_for_a_folder(tmp_path, pair3d, reg_ckpt):
    """One fixed image (an atlas) and its label for a folder of moving images with their labels."""
    root, _, _ = pair3d
    for sub in ("m", "ml"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        sitk.WriteImage(sitk.ReadImage(str(root / "moving.nii.gz")), str(tmp_path / "m" / f"c{i}.nii.gz"))
        sitk.WriteImage(sitk.ReadImage(str(root / "moving_label.nii.gz")), str(tmp_path / "ml" / f"c{i}.nii.gz"))
    assert reg_app.main(["--fixed", str(root / "fixed.nii.gz"), "--fixed-label", str(root / "fixed_label.nii.gz"),
                         "--moving", str(tmp_path / "m"), "--moving-label", str(tmp_path / "ml"), "--ckpt", reg_ckpt,
                         "--out", str(tmp_path / "o"), "--no-pictures", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "summary.csv")))
    assert [r["pair"] for r in rows] == ["c0_to_fixed", "c1_to_fixed"]
    assert rows[0]["dice"] == rows[1]["dice"] != ""  # the same pair twice


def test_register_refine_improves_the_networks_map_and_prints_its_cost(tmp_path, pair3d, reg_ckpt, capsys):
    """``--refine 40``: the random deformer's field refined per pair raises the warped-label Dice,
    and each pair's line is followed by the refinement's step count and seconds."""
    root, _, _ = pair3d
    dice = {}
    for steps in (0, 40):
        out = tmp_path / f"r{steps}"
        assert reg_app.main(["--fixed", str(root / "fixed.nii.gz"), "--fixed-label", str(root / "fixed_label.nii.gz"),
                             "--moving", str(root / "moving.nii.gz"), "--moving-label", str(root / "moving_label.nii.gz"),
                             "--ckpt", reg_ckpt, "--out", str(out), "--no-pictures", "--device", "cpu",
                             "--refine", str(steps), "--refine-lr", "0.2"]) == 0
        dice[steps] = float(next(csv.DictReader(open(out / "summary.csv")))["dice"])
    printed = capsys.readouterr().out
    assert printed.count("refinement: 40 steps, ") == 1 and " s\n" in printed
    assert dice[40] > dice[0] + 1.0, dice


def test_register_help_names_the_refinement(capsys):
    with pytest.raises(SystemExit):
        reg_app.main(["--help"])
    out = capsys.readouterr().out
    assert "--refine STEPS" in out and "--refine-levels N" in out and "--cascade PASSES" in out
    assert "--cascade-levels N" in out


def test_register_cascade_is_used_and_checked(tmp_path, pair3d, reg_ckpt, capsys):
    """``--cascade 2`` reaches the module (another field, so another Dice, than one pass; the
    two-pass field itself is checked by hand in ``test_pyramid_refine.py``) and is said once;
    ``--cascade 0`` is a one-line error naming the setting, exit status 2."""
    root, _, _ = pair3d
    args = ["--fixed", str(root / "fixed.nii.gz"), "--fixed-label", str(root / "fixed_label.nii.gz"),
            "--moving", str(root / "moving.nii.gz"), "--moving-label", str(root / "moving_label.nii.gz"),
            "--ckpt", reg_ckpt, "--no-pictures", "--device", "cpu"]
    dice = {}
    for passes in (1, 2):
        assert reg_app.main([*args, "--out", str(tmp_path / f"c{passes}"), "--cascade", str(passes)]) == 0
        dice[passes] = float(next(csv.DictReader(open(tmp_path / f"c{passes}" / "summary.csv")))["dice"])
    assert capsys.readouterr().out.count("2 network passes per pair") == 1
    assert dice[1] != dice[2]
    assert reg_app.main([*args, "--out", str(tmp_path / "c0"), "--cascade", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cascade_passes must be an integer >= 1" in err[0]


def test_register_cascade_levels_is_used_and_checked(tmp_path, pair3d, reg_ckpt, capsys):
    """``--cascade 2 --cascade-levels 2`` runs the second pass on a two-level pyramid (the
    checkpoint has one level): another field than ``--cascade 2``, said once; ``--cascade-levels 0``
    is a one-line error naming the setting, exit status 2; with one pass it is said to do nothing."""
    root, _, _ = pair3d
    args = ["--fixed", str(root / "fixed.nii.gz"), "--fixed-label", str(root / "fixed_label.nii.gz"),
            "--moving", str(root / "moving.nii.gz"), "--moving-label", str(root / "moving_label.nii.gz"),
            "--ckpt", reg_ckpt, "--no-pictures", "--device", "cpu", "--cascade", "2"]
    dice = {}
    for levels in (None, 2):
        extra = [] if levels is None else ["--cascade-levels", str(levels)]
        assert reg_app.main([*args, "--out", str(tmp_path / f"l{levels}"), *extra]) == 0
        dice[levels] = float(next(csv.DictReader(open(tmp_path / f"l{levels}" / "summary.csv")))["dice"])
    assert capsys.readouterr().out.count("the passes after the first with 2 pyramid level(s)") == 1
    assert dice[None] != dice[2]
    assert reg_app.main([*args, "--out", str(tmp_path / "l0"), "--cascade-levels", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.cascade_levels must be null" in err[0]
    assert reg_app.main([*args, "--out", str(tmp_path / "one"), "--cascade", "1", "--cascade-levels", "2"]) == 0
    assert "--cascade-levels has no effect with one network pass" in capsys.readouterr().out


def test_register_refine_levels_is_used_and_checked(tmp_path, pair3d, reg_ckpt, capsys):
    """``--refine-levels 2`` shares the steps between two resolutions (named in the pair's line);
    ``--refine-levels 0`` is a one-line error naming the setting, exit status 2."""
    root, _, _ = pair3d
    args = ["--fixed", str(root / "fixed.nii.gz"), "--moving", str(root / "moving.nii.gz"), "--ckpt", reg_ckpt,
            "--no-pictures", "--device", "cpu", "--refine", "4"]
    assert reg_app.main([*args, "--out", str(tmp_path / "a"), "--refine-levels", "2"]) == 0
    assert "refinement: 4 steps on 2 resolutions, " in capsys.readouterr().out
    assert reg_app.main([*args, "--out", str(tmp_path / "b"), "--refine-levels", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refine_levels must be an integer >= 1" in err[0]
