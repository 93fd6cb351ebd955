"""predict → NIfTI that keeps the input's spacing, origin and direction; sliding-window inference."""

from __future__ import annotations

import math

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.callbacks import NiftiPredictionWriter
from gemini_pl.callbacks.prediction_writer import affine_from_meta, write_nifti
from gemini_pl.data import GeminiDataModule
from gemini_pl.inference import infer, needs_windows, register_windows
from gemini_pl.modules import Registration, Segmentation


def _trainer(tmp_path, callbacks) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks)


def _write_case(path, array: np.ndarray, spacing, origin, direction, pixel=sitk.sitkFloat32):
    img = sitk.GetImageFromArray(array)
    img = sitk.Cast(img, pixel)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def oblique_dataset(tmp_path_factory):
    """A tiny 3D dataset in the canonical layout with anisotropic spacing, an origin and an oblique direction."""
    root = tmp_path_factory.mktemp("oblique")
    rng = np.random.default_rng(0)
    c, s = math.cos(0.4), math.sin(0.4)
    geometry = dict(spacing=(0.8, 1.1, 2.5), origin=(-12.0, 30.5, 7.25), direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    for split in ("train/labeled", "test/labeled"):
        for sub in ("image", "label"):
            (root / "oblique" / split / sub).mkdir(parents=True)
    (root / "oblique" / "train/unlabeled/image").mkdir(parents=True)
    for split, names in (("test/labeled", ["c0", "c1"]), ("train/labeled", ["t0", "t1"])):
        for name in names:
            label = np.zeros((12, 14, 16), np.uint8)  # SimpleITK array order (z, y, x)
            label[3:8, 4:10, 5:12] = 1
            label[5:7, 6:8, 7:9] = 2
            image = (label.astype(np.float32) * 300 + rng.normal(0, 20, label.shape)).astype(np.float32)
            _write_case(root / "oblique" / split / "image" / f"{name}.nii.gz", image, **geometry)
            _write_case(root / "oblique" / split / "label" / f"{name}.nii.gz", label, **geometry, pixel=sitk.sitkUInt8)
    for name in ("u0", "u1"):
        _write_case(root / "oblique" / "train/unlabeled/image" / f"{name}.nii.gz", rng.random((12, 14, 16)).astype(np.float32), **geometry)
    return root, geometry


def test_segmentation_predict_keeps_geometry(tmp_path, oblique_dataset):
    root, geometry = oblique_dataset
    dm = GeminiDataModule(root=str(root), dataset="oblique", spatial_dims=3, eval_mode="cases", train_mode="labeled")
    model = Segmentation(spatial_dims=3, num_classes=3, widths=SMALL_WIDTHS)
    writer = NiftiPredictionWriter(output_dir=str(tmp_path / "pred"))
    preds = _trainer(tmp_path, [writer]).predict(model, datamodule=dm)
    assert sorted(p.name for p in writer.written) == ["c0_segmentation.nii.gz", "c1_segmentation.nii.gz"]
    for pred, path in zip(preds, sorted(writer.written)):
        src = sitk.ReadImage(str(root / "oblique" / "test/labeled/image" / path.name.replace("_segmentation", "")))
        out = sitk.ReadImage(str(path))
        assert out.GetSize() == src.GetSize()
        assert np.allclose(out.GetSpacing(), src.GetSpacing(), atol=1e-5)
        assert np.allclose(out.GetOrigin(), src.GetOrigin(), atol=1e-4)
        assert np.allclose(out.GetDirection(), src.GetDirection(), atol=1e-5)
        assert np.allclose(out.GetSpacing(), geometry["spacing"], atol=1e-5)
        # the voxels are those of the prediction, in the input's voxel order
        assert np.array_equal(np.asarray(nib.load(str(path)).dataobj), pred["segmentation"][0, 0].numpy())


def test_registration_predict_writes_flow_warped_image_and_labels(tmp_path):
    dm = MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs")
    model = Registration(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    writer = NiftiPredictionWriter(output_dir=str(tmp_path / "pred"))
    _trainer(tmp_path, [writer]).predict(model, datamodule=dm)
    names = sorted(p.name for p in writer.written)
    assert "case0_to_case1_flow.nii.gz" in names and "case0_to_case1_warped_image.nii.gz" in names
    assert "case0_to_case1_warped_label.nii.gz" in names and len(names) == 12  # + the ITK fields (_field)
    flow = sitk.ReadImage(str(tmp_path / "pred" / "case0_to_case1_flow.nii.gz"))
    assert flow.GetNumberOfComponentsPerPixel() == 2 and flow.GetSize() == (32, 32)
    warped = sitk.ReadImage(str(tmp_path / "pred" / "case0_to_case1_warped_label.nii.gz"))
    # the fixed case's geometry (MemoryDataModule: spacing (0.8, 1.2), origin (10, 20) in nibabel's RAS)
    assert np.allclose(warped.GetSpacing(), (0.8, 1.2))
    assert np.allclose(warped.GetOrigin(), (-10.0, -20.0))  # ITK reports LPS


def test_registration_predict_writes_an_itk_field_that_reproduces_the_warped_label(tmp_path):
    """``<pair>_field.nii.gz`` is in mm (LPS) on the fixed grid: SimpleITK's DisplacementFieldTransform
    applied to the moving label (on the fixed array's geometry, as the pair is served) gives the
    written warped label."""
    dm = MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs")
    torch.manual_seed(0)
    model = Registration(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER,
                         flow_init="published")
    writer = NiftiPredictionWriter(output_dir=str(tmp_path / "pred"))
    _trainer(tmp_path, [writer]).predict(model, datamodule=dm)
    pred = tmp_path / "pred"
    field = sitk.ReadImage(str(pred / "case0_to_case1_field.nii.gz"))
    flow = sitk.ReadImage(str(pred / "case0_to_case1_flow.nii.gz"))
    assert field.GetPixelID() == sitk.sitkVectorFloat64
    # voxels → mm: spacing (0.8, 1.2) per axis, and LPS flips x and y of nibabel's RAS
    u, phi = sitk.GetArrayFromImage(field), sitk.GetArrayFromImage(flow)
    assert np.abs(phi).max() > 0.5
    assert np.allclose(u, -phi * np.array([0.8, 1.2]), atol=1e-5)
    warped = sitk.ReadImage(str(pred / "case0_to_case1_warped_label.nii.gz"))
    label_a = sitk.GetImageFromArray(dm.test_labels[0][0].numpy().T.astype(np.int16))
    label_a.CopyInformation(warped)
    itk = sitk.Resample(label_a, warped, sitk.DisplacementFieldTransform(field), sitk.sitkNearestNeighbor, 0)
    ours, theirs = sitk.GetArrayFromImage(warped), sitk.GetArrayFromImage(itk)
    assert (ours != theirs).mean() <= 1e-3 and len(np.unique(ours)) > 1


def test_affine_from_meta_forms():
    meta = {"spacing": torch.tensor([[2.0, 3.0]]), "origin": torch.tensor([[1.0, -1.0]])}
    a = affine_from_meta(meta, 0, 2)
    assert np.allclose(a, [[2, 0, 1], [0, 3, -1], [0, 0, 1]])
    assert affine_from_meta(None, 0, 2) is None
    collated = {"affine": torch.eye(4, dtype=torch.float64)[None].repeat(2, 1, 1) * 2}
    assert affine_from_meta(collated, 1, 3)[0, 0] == 2


def test_write_nifti_2d_matches_simpleitk_geometry(tmp_path):
    aff = np.array([[0.7, 0.0, 5.0], [0.0, 1.3, -2.0], [0.0, 0.0, 1.0]])
    path = write_nifti(torch.arange(12, dtype=torch.int64).reshape(1, 3, 4), aff, tmp_path / "x.nii.gz")
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == (3, 4) and np.allclose(img.GetSpacing(), (0.7, 1.3))
    assert sitk.GetArrayFromImage(img).T.tolist() == torch.arange(12).reshape(3, 4).tolist()


# ------------------------------------------------------------------------------------- sliding windows
def test_infer_whole_image_when_it_fits():
    calls = []

    def predictor(x):
        calls.append(tuple(x.shape))
        return x * 2

    x = torch.rand(1, 1, 8, 8, 8)
    assert torch.equal(infer(predictor, x, roi_size=[8, 8, 8]), x * 2)
    assert calls == [(1, 1, 8, 8, 8)]
    assert not needs_windows((8, 8, 8), None) and needs_windows((8, 9, 8), (8, 8, 8))


def test_sliding_windows_cover_a_larger_volume():
    conv = torch.nn.Conv3d(1, 3, 1)
    x = torch.rand(1, 1, 20, 12, 16)
    seen = []

    def predictor(t):
        seen.append(tuple(t.shape[2:]))
        return conv(t)

    with torch.no_grad():
        out = infer(predictor, x, roi_size=[8, 8, 8], sw_batch_size=4, overlap=0.25)
        assert out.shape == (1, 3, 20, 12, 16)
        assert set(seen) == {(8, 8, 8)}
        assert torch.allclose(out, conv(x), atol=1e-5)  # a pointwise net: windows change nothing


def test_segmentation_uses_windows_for_large_volumes(tmp_path):
    dm = MemoryDataModule(3, 16, train_mode="labeled", eval_mode="cases", patch_size=[8, 8, 8])
    model = Segmentation(spatial_dims=3, num_classes=6, widths=SMALL_WIDTHS, sw_overlap=0.0, sw_batch_size=8)
    sizes = []
    orig = model.net.forward
    model.net.forward = lambda x: sizes.append(tuple(x.shape[2:])) or orig(x)
    _trainer(tmp_path, []).validate(model, datamodule=dm)
    assert model.roi_size == [8, 8, 8] and set(sizes) == {(8, 8, 8)}


def test_register_windows_shape():
    def flow_fn(m, f):
        return torch.cat([m - f, m + f, m * f], 1)

    m, f = torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12, 12)
    with torch.no_grad():
        out = register_windows(flow_fn, m, f, roi_size=[8, 8, 8])
    assert out.shape == (1, 3, 12, 12, 12)
    assert torch.allclose(out, flow_fn(m, f), atol=1e-5)


def test_training_after_predict_on_the_same_shape(tmp_path):
    """Regression: the warp's cached identity grid, first built under inference mode (predict/test),
    must not break a later training step on the same image shape."""
    from gemini_pl.spatial import warp
    from gemini_pl.spatial.warp import _GRID_CACHE

    _GRID_CACHE.clear()
    with torch.inference_mode():
        warp(torch.rand(1, 1, 11, 13), torch.full((1, 2, 11, 13), 0.3))
    flow = torch.full((1, 2, 11, 13), 0.3, requires_grad=True)
    warp(torch.rand(1, 1, 11, 13), flow).sum().backward()
    assert flow.grad is not None
