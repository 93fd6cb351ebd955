"""Training curves: the samples kept, the PNG line chart's geometry, the report's table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from gemini_pl.callbacks.curves import _MARGIN, _SIZE, TrainingCurves, line_chart


def test_line_chart_maps_the_range_to_the_plot_area(tmp_path):
    path = line_chart([0, 10], [2.0, 4.0], "loss", tmp_path / "c.png")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top, _SIZE[0] - right, _SIZE[1] - bottom
    blue = np.array([0, 90, 200])
    # (0, 2.0) is the lower-left corner of the plot area, (10, 4.0) the upper right; midpoint between
    for x, y in ((x0, y1), (x1, y0), ((x0 + x1) // 2, (y0 + y1) // 2)):
        assert (np.abs(img[y - 1:y + 2, x - 1:x + 2] - blue).sum(-1) == 0).any(), (x, y)
    assert (img[y1 - 5, x1 - 5] == 255).all()  # off the line: white


def test_training_curves_history_and_report(tmp_path):
    cb = TrainingCurves(results_dir=str(tmp_path), every_n_batches=2)
    trainer = SimpleNamespace(callback_metrics={}, global_step=0, log_every_n_steps=50, sanity_checking=False,
                              is_global_zero=True, default_root_dir=str(tmp_path))
    losses = [5.0, 4.0, 3.0, 2.5]
    for i, loss in enumerate(losses):
        trainer.global_step = 2 * (i + 1)
        trainer.callback_metrics = {"train/loss": torch.tensor(loss), "train/vector": torch.ones(3)}
        cb.on_train_batch_end(trainer, None, None, None, i)
    trainer.callback_metrics = {"val/seg_dice": torch.tensor(0.7), "train/loss": torch.tensor(2.5)}
    cb.on_validation_end(trainer, None)
    # every 2nd batch: steps 4 and 8; vectors are not curves
    assert cb.history == {"train/loss": [(4, 4.0), (8, 2.5)], "val/seg_dice": [(8, float(torch.tensor(0.7)))]}
    state = cb.state_dict()
    again = TrainingCurves()
    again.load_state_dict(state)
    assert again.history == cb.history
    cb.on_fit_end(trainer, None)
    assert (tmp_path / "curves" / "train_loss.png").is_file() and (tmp_path / "curves" / "val_seg_dice.png").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "| train/loss | 2.5 | 2.5 | 2 |" in report  # last, best (lowest), points
    assert "| val/seg_dice | 0.7 | 0.7 | 1 |" in report
    assert "![train/loss](curves/train_loss.png)" in report


def test_feature_similarity_chart_has_the_threshold_and_the_report_says_whether_it_warned(tmp_path):
    from gemini_pl.modules.diagnostics import CollapseWatch

    cb = TrainingCurves(results_dir=str(tmp_path), every_n_batches=1)
    trainer = SimpleNamespace(callback_metrics={}, global_step=0, log_every_n_steps=1, sanity_checking=False,
                              is_global_zero=True, default_root_dir=str(tmp_path))
    watch = CollapseWatch(threshold=0.9, patience=2)
    for i, value in enumerate([0.5, 0.95, 0.97, 0.99]):
        trainer.global_step = i + 1
        trainer.callback_metrics = {"train/gemini/feature_similarity": torch.tensor(value)}
        watch.update(value, trainer.global_step)
        cb.on_train_batch_end(trainer, None, None, None, i)
    cb.on_fit_end(trainer, SimpleNamespace(collapse=watch))
    report = (tmp_path / "report.md").read_text()
    assert "above 0.9 for 2 logging points" in report and "collapse warning at global step 3" in report
    assert "| train/gemini/feature_similarity | 0.99 | 0.5 | 4 |" in report  # best = lowest
    img = np.asarray(Image.open(tmp_path / "curves" / "train_gemini_feature_similarity.png").convert("RGB")).astype(int)
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top, _SIZE[0] - right, _SIZE[1] - bottom
    hy = round(y1 - (0.9 - 0.5) / (0.99 - 0.5) * (y1 - y0))
    red = np.array([210, 30, 30])
    assert (np.abs(img[hy - 1:hy + 2, x0 + 5] - red).sum(-1) == 0).any()
