"""PNG pictures: overlays, deformation grids, Jacobian maps with folds; per-case test pictures in report.md."""

from __future__ import annotations

import lightning as L
import numpy as np
from PIL import Image

from conftest import SMALL_DEFORMER, SMALL_WIDTHS
from downstream_data import MemoryDataModule
from gemini_pl.apps import pictures
from gemini_pl.callbacks.test_pictures import TestPictures
from gemini_pl.modules import Registration, Segmentation


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_jacobian_png_marks_folds_black_and_counts_them(tmp_path):
    det = np.ones((20, 10))
    det[2:6, 3:5] = -0.5  # 8 folded voxels of 200: 4 %
    det[12:16, 3:5] = 2.0  # growing: red
    path = pictures.jacobian_png(det, tmp_path / "j.png")
    rgb = _pixels(path)[14:]  # below the title bar
    h, w = rgb.shape[:2]
    fy, fx = h / 10, w / 20  # the slice is drawn with x to the right, y downwards
    centre = lambda x, y: rgb[int((y + 0.5) * fy), int((x + 0.5) * fx)]  # noqa: E731
    assert centre(3, 3).tolist() == [0, 0, 0]                 # fold: black
    assert centre(13, 3).tolist() == [255, 0, 0]              # det 2 (the saturation limit): red
    assert centre(8, 8).tolist() == [255, 255, 255]           # det 1: white
    assert min(h, w) >= pictures.MIN_SIZE


def test_grid_png_lines_follow_the_displacement(tmp_path):
    image = np.zeros((16, 16))
    still = _pixels(pictures.grid_png(image, np.zeros((2, 16, 16)), tmp_path / "a.png", step=4))[14:]
    shifted = np.zeros((2, 16, 16))
    shifted[1] = 2.0  # every point moved 2 voxels along y
    moved = _pixels(pictures.grid_png(image, shifted, tmp_path / "b.png", step=4))[14:]
    yellow = lambda rgb: (rgb[..., 0] > 200) & (rgb[..., 1] > 150) & (rgb[..., 2] < 50)  # noqa: E731
    rows_still = np.nonzero(yellow(still).mean(axis=1) > 0.5)[0]
    rows_moved = np.nonzero(yellow(moved).mean(axis=1) > 0.5)[0]
    scale = still.shape[0] / 16
    assert len(rows_still) == len(rows_moved) > 0
    assert np.allclose(rows_moved - rows_still, 2 * scale, atol=1)


def test_overlay_png_colours_the_labels(tmp_path):
    image = np.zeros((8, 8, 5))
    label = np.zeros((8, 8, 5), dtype=np.int64)
    label[2:6, 2:6, 3] = 1  # only slice z=3 is labeled: that slice is drawn
    path = pictures.overlay_png(image, label, tmp_path / "o.png")
    rgb = _pixels(path)
    right = rgb[14:, rgb.shape[1] // 2 + 2:]  # the "labels" panel
    colour = pictures.label_colours(1)[0]
    expect = (0.45 * colour).astype(np.uint8)  # over a black image
    hits = np.all(np.abs(right.astype(int) - expect) <= 1, axis=-1)
    assert 0.2 < hits.mean() < 0.3  # 16 of 64 voxels
    assert pictures.middle_slice(label.shape, label) == 3


def _trainer(tmp_path, cb):
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb])


def test_test_pictures_per_case_and_report(tmp_path):
    dm = MemoryDataModule(2, 32, train_mode="labeled", eval_mode="cases")
    cb = TestPictures(results_dir=str(tmp_path / "results"), max_cases=3)
    _trainer(tmp_path, cb).test(Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS), datamodule=dm)
    files = sorted(p.name for p in (tmp_path / "results" / "pictures").glob("*.png"))
    assert files == ["case0.png", "case1.png", "case2.png"]
    report = (tmp_path / "results" / "report.md").read_text()
    assert "<!-- section: test_pictures -->" in report and "](pictures/case1.png)" in report

    dm = MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs")
    cb = TestPictures(results_dir=str(tmp_path / "reg"), max_cases=2)
    model = Registration(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    _trainer(tmp_path, cb).test(model, datamodule=dm)
    files = sorted(p.name for p in (tmp_path / "reg" / "pictures").glob("*.png"))
    assert files == [f"case{a}_to_case{a + 1}_{k}.png" for a in (0, 1) for k in ("grid", "jacobian", "overview")]
    overview = Image.open(tmp_path / "reg" / "pictures" / "case0_to_case1_overview.png")
    assert overview.width > 3 * pictures.MIN_SIZE  # three panels side by side


def test_test_pictures_never_stop_a_test_run(tmp_path, caplog):
    dm = MemoryDataModule(2, 32, train_mode="labeled", eval_mode="cases")
    model = Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS)
    cb = TestPictures(results_dir=str(tmp_path / "results"))
    calls = {"n": 0}
    orig = model.logits_to_labels

    def broken(logits):  # the test step's own call works, the picture's one fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return orig(logits)

    model.logits_to_labels = broken
    results = _trainer(tmp_path, cb).test(model, datamodule=dm)
    assert "test/seg_dice" in results[0]
    assert "TestPictures: no pictures" in caplog.text and not (tmp_path / "results" / "pictures").exists()


def test_test_pictures_go_to_wandb_only_when_allowed(tmp_path, monkeypatch):
    from gemini_pl.callbacks import test_pictures as tp_mod
    from gemini_pl.callbacks import wandb_resume

    logged = []

    class FakeWandb:
        def log_image(self, key, images, **kw):
            logged.append((key, list(images)))

    monkeypatch.setattr(wandb_resume, "_wandb_loggers", lambda trainer: [FakeWandb()])
    dm = MemoryDataModule(2, 32, train_mode="labeled", eval_mode="cases")
    for allowed, expect in ((False, 0), (True, 2)):
        logged.clear()
        cb = tp_mod.TestPictures(results_dir=str(tmp_path / f"r{allowed}"), max_cases=2, log_media=allowed)
        _trainer(tmp_path, cb).test(Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS), datamodule=dm)
        assert sum(len(images) for _, images in logged) == expect
        assert all(key == "test/pictures" and all(p.endswith(".png") for p in images) for key, images in logged)
