"""PNG pictures of ``test`` cases, and the ``test_pictures`` section of ``report.md``.

:class:`TestPictures` draws, for the first ``max_cases`` test cases of every process, with the
pictures of :mod:`gemini_pl.apps.pictures` (3D volumes: the slice through the labels):

* whole cases (segmentation heads): ``<case>.png`` — the image, its label and the prediction;
* registration pairs (modules with a deformer): ``<a>_to_<b>_overview.png`` — fixed (with its
  label), moving (with its label), warped moving (with the warped label) side by side;
  ``<a>_to_<b>_grid.png`` — the deformation grid over the fixed image;
  ``<a>_to_<b>_jacobian.png`` — det(I + ∇φ), folds (det ≤ 0) in black;

into ``<results_dir>/pictures/`` and, at the end of ``test`` (rank 0), lists them in the
``test_pictures`` section of ``<results_dir>/report.md`` (:mod:`gemini_pl.report`); with a W&B
logger they are also the run's images ``test/pictures`` when the data's pictures may leave the
machine (generated data, or ``--log_media true``; :mod:`.media_policy`). The pictures
are computed again from the batch (one more forward pass per drawn case, under ``no_grad``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..apps import pictures

__all__ = ["TestPictures"]

log = logging.getLogger(__name__)


def _spacing(batch: dict[str, Any], i: int, keys: tuple[str, ...]) -> list[float] | None:
    for key in keys:
        value = batch.get(key)
        if isinstance(value, dict):
            value = value.get("spacing")
        if torch.is_tensor(value) and value.dim() >= 1:
            row = value[i] if value.dim() == 2 else value
            return [float(v) for v in row]
    return None


def _label_map(label: torch.Tensor | None) -> np.ndarray | None:
    """(1, *S) class map → (*S); (K, *S) masks → (*S) with the highest channel number that is on."""
    if label is None:
        return None
    lab = label.detach().float().cpu()
    if lab.shape[0] == 1:
        return lab[0].round().numpy().astype(np.int64)
    idx = torch.arange(1, lab.shape[0] + 1).view(-1, *([1] * (lab.dim() - 1)))
    return (idx * (lab > 0.5)).amax(0).numpy().astype(np.int64)


def _names(batch: dict[str, Any], key: str, n: int) -> list[str]:
    names = batch.get(key)
    if names is None:
        return [f"case{i}" for i in range(n)]
    return [names] if isinstance(names, str) else [str(x) for x in names]


class TestPictures(L.Callback):
    """Per-case PNGs of ``test`` (see the module docstring).

    Args:
        results_dir: output folder (default ``<trainer.log_dir>/results``, or
            ``<default_root_dir>/results`` without a logger; the CLI sets ``<run>/results``).
        max_cases: cases (or pairs) drawn per process.
        log_media: also send the pictures to W&B (with a W&B logger): True, False, or None: as
            ``--log_media`` says, else only pictures of generated data (:mod:`.media_policy`).
    """

    __test__ = False  # (not a pytest class)

    def __init__(self, results_dir: str | None = None, max_cases: int = 8, log_media: bool | None = None):
        super().__init__()
        self.results_dir = results_dir
        self.max_cases = max_cases
        self.log_media = log_media
        self.files: list[Path] = []
        self._drawn = 0

    def _out_dir(self, trainer: L.Trainer) -> Path:
        if self.results_dir:
            return Path(self.results_dir)
        base = trainer.log_dir if trainer.loggers else None
        return Path(base or trainer.default_root_dir) / "results"

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.files = []
        self._drawn = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._drawn >= self.max_cases or not isinstance(batch, dict):
            return
        folder = self._out_dir(trainer) / "pictures"
        try:
            with torch.no_grad():
                if torch.is_tensor(batch.get("image")) and hasattr(pl_module, "segment_logits"):
                    self._cases(pl_module, batch, folder)
                elif torch.is_tensor(batch.get("image_a")) and hasattr(pl_module, "register_pair"):
                    self._pairs(pl_module, batch, folder)
        except Exception as exc:  # a picture never stops a test run
            log.warning("TestPictures: no pictures of this run (%s: %s)", type(exc).__name__, exc)
            self._drawn = self.max_cases

    def _cases(self, pl_module: Any, batch: dict[str, Any], folder: Path) -> None:
        image = batch["image"]
        pred = pl_module.logits_to_labels(pl_module.segment_logits(image))
        names = _names(batch, "name", image.shape[0])
        for i in range(image.shape[0]):
            if self._drawn >= self.max_cases:
                return
            self._drawn += 1
            img = image[i, 0].float().cpu().numpy()
            truth = _label_map(batch["label"][i]) if torch.is_tensor(batch.get("label")) else None
            guess = _label_map(pred[i])
            k = pictures.middle_slice(img.shape, truth if truth is not None else guess)
            self.files.append(pictures.panels_png(
                [img, img, img] if truth is not None else [img, img], ["image", "label", "prediction"] if truth is not None
                else ["image", "prediction"], folder / f"{names[i]}.png", spacing=_spacing(batch, i, ("spacing", "meta")),
                labels=[None, truth, guess] if truth is not None else [None, guess], k=k))

    def _pairs(self, pl_module: Any, batch: dict[str, Any], folder: Path) -> None:
        from ..metrics.jacobian import jacobian_determinant

        out = pl_module.register_pair(batch)
        flow = out["flow"].float()
        det = jacobian_determinant(flow).cpu().numpy()
        n = flow.shape[0]
        names_a, names_b = _names(batch, "name_a", n), _names(batch, "name_b", n)
        for i in range(n):
            if self._drawn >= self.max_cases:
                return
            self._drawn += 1
            name = f"{names_a[i]}_to_{names_b[i]}"
            fixed = batch["image_b"][i, 0].float().cpu().numpy()
            moving = batch["image_a"][i, 0].float().cpu().numpy()
            warped = out["warped_image"][i, 0].float().cpu().numpy()
            lab_f = _label_map(batch["label_b"][i]) if torch.is_tensor(batch.get("label_b")) else None
            lab_m = _label_map(batch["label_a"][i]) if torch.is_tensor(batch.get("label_a")) else None
            lab_w = _label_map(out["warped_label"][i]) if "warped_label" in out else None
            spacing = _spacing(batch, i, ("spacing_b", "meta_b", "spacing", "meta"))
            k = pictures.middle_slice(fixed.shape, lab_f)
            self.files.append(pictures.panels_png(
                [fixed, moving, warped], ["fixed", "moving", "warped"], folder / f"{name}_overview.png", spacing=spacing,
                labels=[lab_f, lab_m, lab_w], k=k))
            self.files.append(pictures.grid_png(fixed, flow[i].cpu().numpy(), folder / f"{name}_grid.png",
                                                spacing=spacing, k=k))
            self.files.append(pictures.jacobian_png(det[i], folder / f"{name}_jacobian.png", spacing=spacing, k=k))

    def _to_wandb(self, trainer: L.Trainer, files: list[Path]) -> None:
        """The pictures as the W&B images ``test/pictures`` when a W&B logger is on and the data's
        pictures may leave the machine (:func:`.media_policy.upload_media_allowed`)."""
        from .media_policy import upload_media_allowed
        from .wandb_resume import _wandb_loggers

        loggers = _wandb_loggers(trainer)
        if not loggers or not upload_media_allowed(trainer, self.log_media):
            return
        for lg in loggers:
            lg.log_image(key="test/pictures", images=[str(f) for f in files], caption=[f.stem for f in files])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        out = self._out_dir(trainer)
        files = sorted((out / "pictures").glob("*.png"))
        if not files:
            return
        try:
            from ..report import REPORT_NAME, image_link, write_section
        except ImportError:  # pragma: no cover - the report module is optional here
            return
        self._to_wandb(trainer, files)
        report = out / REPORT_NAME
        cases: dict[str, list[Path]] = {}
        for f in files:  # a pair's overview, grid and Jacobian on one line
            stem = f.stem
            for part in ("_overview", "_grid", "_jacobian"):
                stem = stem[: -len(part)] if stem.endswith(part) else stem
            cases.setdefault(stem, []).append(f)
        order = {"overview": 0, "grid": 1, "jacobian": 2}
        lines = ["## Test cases", ""]
        for stem, group in cases.items():
            group.sort(key=lambda f: order.get(f.stem.rsplit("_", 1)[-1], -1))
            lines += [f"**{stem}**", "", " ".join(image_link(report, f, f.stem) for f in group), ""]
        write_section(report, "test_pictures", "\n".join(lines))
