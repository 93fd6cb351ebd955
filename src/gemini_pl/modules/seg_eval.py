"""The one segmentation path of every module with a segmentation head: loss, prediction, metrics.

:class:`SegmentationEvaluation` is a mixin for :class:`~gemini_pl.modules.core.GeminiModule`
subclasses (``Segmentation``, ``GeminiSemi``, the semi-supervised baselines, ``VMAtlas``). The host
has the hyper-parameters ``num_classes``, ``label_kind``, ``roi_size``, ``sw_batch_size``,
``sw_overlap``, ``lambda_seg``, ``class_balanced_ce`` and ``avd_empty_policy`` (``"skip_class"``: a class with an empty
prediction is left out of the case's AVD; ``"unable_case"``: the case's AVD is "unable", as the
paper reports it); :meth:`segment_logits` may be overridden (``VMAtlas`` votes
warped atlas labels instead of running a head).

Labels: multiclass (B, 1, *S) int64 class indices (softmax + CE/Dice loss, argmax prediction) or
multilabel (B, K, *S) 0/1 (sigmoid + BCE/Dice, prediction > 0.5) — the loss follows the dataset's
label kind, not the number of dimensions (docs/METHOD.md §3).

Evaluation (docs/METHOD.md §6) on whole cases ``{"image", "label", "name", "spacing", "meta"}``:
per foreground class Dice (background excluded) averaged per case, AVD (SimpleITK, physical
units) and HD95 (MONAI), as DDP-safe metric objects. Logged keys: ``val/seg_dice`` (the
``ModelCheckpoint`` monitor), ``test/seg_dice``, ``test/avd``, ``test/hd95``; per-case rows
(``case``, ``dice``, ``avd``, ``hd95``, ``dice_<class>``) go to
:class:`~gemini_pl.callbacks.ResultsWriter`. Volumes larger than ``roi_size`` (default: the data
module's ``patch_size`` in 3D) are segmented with MONAI sliding windows. Batches without
``"image"`` (registration pairs) go to the registration path of a module that has one
(``GeminiSemi``, ``VMAtlas``); any other module refuses them, naming ``data.eval_mode: cases``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError
from ..inference import infer
from ..losses import sigmoid_seg_loss, softmax_seg_loss
from ..metrics import AverageHausdorffDistance, DiceScore, HausdorffDistance95, one_hot_labels
from .batches import case_names, case_spacing
from .core import LABEL_KINDS, check_label_kind

__all__ = ["LABEL_KINDS", "SegmentationEvaluation", "check_label_kind", "nanmean"]


def nanmean(x: torch.Tensor) -> float:
    """Mean of the non-NaN entries (NaN when there are none), as a Python float."""
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else math.nan


class SegmentationEvaluation:
    """Mixin: whole-case segmentation, the seg loss, and the Dice/AVD/HD95 metric objects."""

    result_units = {"dice": "%", "avd": "mm", "hd95": "mm"}

    # ---------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        self.setup_segmentation()

    def setup_segmentation(self) -> None:
        """Resolve the label kind and the sliding window against the data module; build the metrics."""
        hp = self.hparams
        dm = self.datamodule
        kind = self.data_label_kind()
        dm_kind = getattr(dm, "label_kind", None) if dm is not None else None
        if dm_kind is not None and dm_kind != kind:
            raise ConfigError(f"model.label_kind={kind!r} but the data's labels are {dm_kind!r}; set model.label_kind: auto")
        self.label_kind = kind
        if not (math.isfinite(self.seg_balance) and self.seg_balance >= 0):
            raise ConfigError(f"model.class_balanced_ce must be a finite number >= 0 (0 = the published loss), got {self.seg_balance}")
        k = int(hp.num_classes)
        dm_classes = getattr(dm, "num_classes", None) if dm is not None else None
        if dm_classes is not None and int(dm_classes) != k:
            raise ConfigError(
                f"model.num_classes={k} but the data has {dm_classes} "
                f"{'classes (background included)' if kind == 'multiclass' else 'label channels'}; set model.num_classes: {dm_classes}"
            )
        self.roi_size = self.sliding_window()
        names = getattr(dm, "class_names", None) if dm is not None else None
        fg = list(range(1, k)) if kind == "multiclass" else list(range(k))
        if names is not None and len(names) == k:
            self.class_columns = [str(names[i]) for i in fg]
        else:
            self.class_columns = [str(i if kind == "multiclass" else i + 1) for i in fg]
        mc = dict(num_classes=k, label_kind=kind)
        self.val_seg_dice = DiceScore(**mc)
        self.test_seg_dice = DiceScore(**mc)
        self.test_avd = AverageHausdorffDistance(**mc, empty_policy=self.hparams.get("avd_empty_policy", "skip_class"))
        self.test_hd95 = HausdorffDistance95(**mc)

    def _ensure_segmentation(self) -> None:
        if not hasattr(self, "val_seg_dice"):
            self.setup_segmentation()
            self.to(self.device)

    # ---------------------------------------------------------------- pieces
    def segment_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Head logits of a whole case, by sliding windows when it exceeds ``roi_size``."""
        return infer(self.net, image, self.roi_size, self.hparams.sw_batch_size, self.hparams.sw_overlap)

    def logits_to_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """argmax → (N, 1, *S) int64 (multiclass) or sigmoid > 0.5 → (N, K, *S) float (multilabel)."""
        if self.label_kind == "multilabel":
            return (logits > 0).float()
        return logits.argmax(dim=1, keepdim=True)

    @property
    def seg_balance(self) -> float:
        """Weight of the class-balanced CE in every supervised loss (``class_balanced_ce``; 0 for hosts without it)."""
        return float(self.hparams.get("class_balanced_ce", 0.0) or 0.0)

    def seg_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """``λ·(CE + Dice)`` (softmax, multiclass) or ``λ·(BCE + Dice)`` (sigmoid, multilabel), docs/METHOD.md §3;
        ``+ λ·class_balanced_ce·CE_balanced`` when that weight is > 0."""
        self._ensure_segmentation()
        if self.label_kind == "multilabel":
            if label.shape[1] != logits.shape[1]:
                raise ConfigError(f"multilabel labels have {label.shape[1]} channels but the head has {logits.shape[1]}")
            return sigmoid_seg_loss(logits, label, self.hparams.lambda_seg, self.seg_balance)
        if label.shape[1] != 1:
            raise ConfigError(
                f"multiclass labels must be (B, 1, *S) class indices, got {tuple(label.shape)}; "
                "for overlapping binary masks set model.label_kind: multilabel"
            )
        return softmax_seg_loss(logits, one_hot_labels(label, logits.shape[1]), self.hparams.lambda_seg, self.seg_balance)

    # ---------------------------------------------------------------- steps
    def _pairs_step(self, batch: dict[str, Any]) -> None:
        """A batch of registration pairs: only a module with a registration path can evaluate it."""
        if not hasattr(self, "reg_eval_step"):
            raise ConfigError(
                f"{type(self).__name__} evaluates whole cases but got a batch of {sorted(batch)}: "
                "set data.eval_mode: cases"
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "image" in batch:
            self.seg_eval_step(batch, "val")
        else:
            self._pairs_step(batch)
            super().validation_step(batch, batch_idx)  # type: ignore[misc]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if "image" in batch:
            return self.seg_eval_step(batch, "test")
        self._pairs_step(batch)
        return super().test_step(batch, batch_idx)  # type: ignore[misc]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "image" in batch:
            return self.seg_predict_step(batch)
        self._pairs_step(batch)
        return super().predict_step(batch, batch_idx)  # type: ignore[misc]

    def seg_eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any] | None:
        """Segment whole cases, update and log the metrics; test returns per-case rows."""
        self._ensure_segmentation()
        image, label = batch["image"], batch["label"]
        n = image.shape[0]
        pred = self.logits_to_labels(self.segment_logits(image))
        if stage == "val":
            self.val_seg_dice.update(pred, label)
            self.log("val/seg_dice", self.val_seg_dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
            return None
        spacing = case_spacing(batch)
        self.test_seg_dice.update(pred, label)
        self.test_avd.update(pred, label, spacing)
        self.test_hd95.update(pred, label, spacing)
        for key, metric in (("seg_dice", self.test_seg_dice), ("avd", self.test_avd), ("hd95", self.test_hd95)):
            self.log(f"test/{key}", metric, on_step=False, on_epoch=True, batch_size=n)
        dice_rows = self.test_seg_dice.last.cpu()
        rows = []
        for i, name in enumerate(case_names(batch, n)):
            row: dict[str, Any] = {"case": name, "dice": 100 * nanmean(dice_rows[i])}
            row["avd"] = nanmean(self.test_avd.last[i].cpu())
            row["hd95"] = nanmean(self.test_hd95.last[i].cpu())
            for c, col in enumerate(self.class_columns):
                row[f"dice_{col}"] = 100 * float(dice_rows[i, c])
            rows.append(row)
        return {"cases": rows}

    def seg_predict_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._ensure_segmentation()
        image = batch["image"]
        pred = self.logits_to_labels(self.segment_logits(image))
        return {
            "name": case_names(batch, image.shape[0]),
            "meta": batch.get("meta"),
            "segmentation": pred if self.label_kind == "multilabel" else pred.to(torch.int16),
        }
