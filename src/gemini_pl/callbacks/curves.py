"""Training and validation curves as PNG files, and the ``training`` section of ``report.md``.

:class:`TrainingCurves` (on by default in the ``gemini-pl`` CLI) samples the scalar metrics the
module logs — ``train/…`` every ``trainer.log_every_n_steps`` training batches, ``val/…`` after
each validation — against ``trainer.global_step`` and, at the end of ``fit`` (rank 0), draws one
line chart per metric with Pillow into ``<results_dir>/curves/<metric>.png`` (``/`` in a key
becomes ``_``) and writes the ``training`` section of ``<results_dir>/report.md``
(:mod:`gemini_pl.report`): the charts and a table of each metric's last and best value. The
samples are kept in checkpoints, so a resumed run draws its whole history.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from ..report import REPORT_NAME, image_link, write_section

__all__ = ["TrainingCurves", "line_chart"]

_SIZE = (640, 360)
_MARGIN = (70, 20, 20, 40)  # left, top, right, bottom


def line_chart(xs: list[float], ys: list[float], title: str, path: str | Path, hline: float | None = None) -> Path:
    """A line chart of ``ys`` over ``xs`` (non-finite values left out) as a PNG file: the title,
    the y range and the x range written on the axes; one point is drawn as a dot. ``hline``: a
    red horizontal line at that value (the y range is widened to show it)."""
    w, h = _SIZE
    left, top, right, bottom = _MARGIN
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(float(y))]
    draw.text((left, 4), title, fill="black")
    x0, y0, x1, y1 = left, top, w - right, h - bottom
    draw.rectangle((x0, y0, x1, y1), outline="black")
    if pts:
        xv, yv = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        xlo, xhi = float(xv.min()), float(xv.max())
        ylo, yhi = float(yv.min()), float(yv.max())
        if hline is not None and math.isfinite(hline):
            ylo, yhi = min(ylo, float(hline)), max(yhi, float(hline))
        if xhi == xlo:
            xlo, xhi = xlo - 1, xhi + 1
        if yhi == ylo:
            pad = abs(ylo) * 0.05 or 1.0
            ylo, yhi = ylo - pad, yhi + pad
        px = x0 + (xv - xlo) / (xhi - xlo) * (x1 - x0)
        py = y1 - (yv - ylo) / (yhi - ylo) * (y1 - y0)
        line = list(zip(px.tolist(), py.tolist()))
        if hline is not None and math.isfinite(hline):
            hy = y1 - (float(hline) - ylo) / (yhi - ylo) * (y1 - y0)
            draw.line([(x0, hy), (x1, hy)], fill=(210, 30, 30), width=1)
            draw.text((x1 - 110, hy - 12), f"threshold {hline:.3g}", fill=(210, 30, 30))
        if len(line) > 1:
            draw.line(line, fill=(0, 90, 200), width=2)
        for cx, cy in line if len(line) <= 50 else line[-1:]:
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=(0, 90, 200))
        draw.text((4, y0), f"{yhi:.4g}", fill="black")
        draw.text((4, y1 - 10), f"{ylo:.4g}", fill="black")
        draw.text((x0, y1 + 6), f"{xlo:g}", fill="black")
        draw.text((x1 - 60, y1 + 6), f"{xhi:g}", fill="black")
        draw.text(((x0 + x1) // 2 - 30, y1 + 22), "global step", fill="black")
    else:
        draw.text(((x0 + x1) // 2 - 40, (y0 + y1) // 2), "no finite values", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        if torch.is_tensor(value):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


class TrainingCurves(L.Callback):
    """Curves of the logged ``train/…`` and ``val/…`` metrics (see module doc).

    Args:
        results_dir: output folder (default ``<trainer.default_root_dir>/results``; the CLI fills
            it with that).
        every_n_batches: sample the training metrics every this many batches (default
            ``trainer.log_every_n_steps``).
    """

    def __init__(self, results_dir: str | None = None, every_n_batches: int | None = None) -> None:
        super().__init__()
        self.results_dir = results_dir
        self.every_n_batches = every_n_batches
        #: metric -> [(global step, value), ...]
        self.history: dict[str, list[tuple[int, float]]] = {}
        #: PNG files written at the end of the last fit
        self.files: dict[str, Path] = {}
        self._batches = 0

    @property
    def state_key(self) -> str:  # type: ignore[override]
        return "TrainingCurves"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [(int(s), float(v)) for s, v in pts] for k, pts in state_dict.get("history", {}).items()}

    def _add(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            pts = self.history.setdefault(key, [])
            if pts and pts[-1][0] == step:
                pts[-1] = (step, value)
            else:
                pts.append((step, value))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        every = self.every_n_batches or max(1, int(trainer.log_every_n_steps or 1))
        if self._batches % every == 0:
            self._add(_scalars(trainer.callback_metrics, "train/"), trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._add(_scalars(trainer.callback_metrics, "train/"), trainer.global_step)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._add(_scalars(trainer.callback_metrics, "val/"), trainer.global_step)

    def out_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.results_dir) if self.results_dir else Path(trainer.default_root_dir) / "results"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        out = self.out_dir(trainer)
        report = out / REPORT_NAME
        self.files = {}
        rows, pictures = [], []
        hlines = _thresholds(pl_module)
        for key in sorted(self.history, key=lambda k: (not k.startswith("train/"), k)):
            pts = self.history[key]
            path = line_chart([s for s, _ in pts], [v for _, v in pts], key, out / "curves" / f"{key.replace('/', '_')}.png",
                              hline=hlines.get(key))
            self.files[key] = path
            finite = [v for _, v in pts if math.isfinite(v)]
            best = (max(finite) if _higher_is_better(key) else min(finite)) if finite else math.nan
            rows.append(f"| {key} | {pts[-1][1]:.4g} | {best:.4g} | {len(pts)} |")
            pictures.append(image_link(report, path, key))
        text = ["## Training curves", "", f"{len(self.history)} metrics over {trainer.global_step} optimiser steps "
                "(value against `global_step`).", "", "| metric | last | best | points |", "|---|---|---|---|", *rows, "",
                *_collapse_lines(pl_module, self.history.get(COLLAPSE_KEY)), *pictures]
        write_section(report, "training", "\n".join(text))


def _higher_is_better(key: str) -> bool:
    name = key.rsplit("/", 1)[-1].lower()
    if name == "feature_similarity":  # 1 = collapsed features
        return False
    return any(t in name for t in ("dice", "acc", "similarity", "iou"))


#: the metric watched for feature collapse (``GeminiBase``'s ``collapse_threshold``)
COLLAPSE_KEY = "train/gemini/feature_similarity"


def _thresholds(pl_module: Any) -> dict[str, float]:
    threshold = getattr(getattr(pl_module, "collapse", None), "threshold", None)
    return {COLLAPSE_KEY: float(threshold)} if threshold is not None else {}


def _collapse_lines(pl_module: Any, pts: list[tuple[int, float]] | None) -> list[str]:
    """The report's paragraph on the collapse watch (empty without the watch or the metric)."""
    watch = getattr(pl_module, "collapse", None)
    if watch is None or watch.threshold is None or not pts:
        return []
    finite = [v for _, v in pts if math.isfinite(v)]
    peak = f"{max(finite):.3g}" if finite else "n/a"
    if watch.warned_at is not None:
        verdict = f"**collapse warning at global step {watch.warned_at}**"
    else:
        verdict = "no collapse warning"
    return [f"Feature collapse watch: `{COLLAPSE_KEY}` above {watch.threshold:.3g} for {watch.patience} logging "
            f"points in a row warns; highest value {peak}, last {pts[-1][1]:.3g}: {verdict} (red line on its chart).", ""]
