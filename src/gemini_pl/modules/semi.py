"""GEMINI-Semi: few-shot semi-supervised segmentation (docs/METHOD.md §3-5).

Per iteration, as published: the GEMINI step on an unlabeled pair (DHL + GSS) → Adam step, then
the segmentation step on a labeled batch → Adam step (``schedule: joint`` sums both into one
step). One random affine per iteration (one scale factor for all axes by default) is applied to
the pair, the labeled image and its label (nearest).

The segmentation loss follows the dataset's label kind: softmax + CE/Dice for one label map
(multiclass), sigmoid + BCE/Dice for overlapping binary masks (multilabel, e.g. SCR chest X-rays).

Batches (``GeminiDataModule(train_mode="pairs+labeled")``): ``{"image_a", "image_b", "image",
"label"}``. Validation on whole cases (``eval_mode: cases``) logs ``val/seg_dice``; on
registration pairs (``eval_mode: pairs``) the registration metrics (``val/reg_dice`` ...). Test:
Dice, AVD and HD95 per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..errors import ConfigError
from .batches import require_batch_keys
from .gemini import GeminiBase
from .seg_eval import SegmentationEvaluation, check_label_kind

__all__ = ["GeminiSemi"]


class GeminiSemi(SegmentationEvaluation, GeminiBase):
    """GEMINI on unlabeled pairs + supervised segmentation on a few labeled images, jointly.

    Args (beyond :class:`~gemini_pl.modules.GeminiBase`, whose ``out_channels`` is set to
    ``num_classes``; ``per_axis_scale`` defaults to False here, as published for Semi):
        num_classes: head outputs K: classes with the background (multiclass) or label channels
            (multilabel); linked from the data by the CLI.
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        lambda_seg: weight of the segmentation loss (100 as published).
        class_balanced_ce: weight of a class-balanced cross-entropy added to the supervised loss
            (beyond the paper; :func:`~gemini_pl.losses.class_balanced_ce`): every class present in
            the batch weighs the same, so a small structure keeps a gradient; 0 = the published loss.
        roi_size: sliding-window size for evaluation (default: the data module's patch in 3D).
        sw_batch_size, sw_overlap: sliding-window settings.
        avd_empty_policy: see :class:`~gemini_pl.modules.Segmentation`.
    """

    head_name = "seg"
    result_units = {**GeminiBase.result_units, **SegmentationEvaluation.result_units}

    def __init__(
        self,
        *args: Any,
        num_classes: int = 2,
        label_kind: Literal["auto", "multiclass", "multilabel"] | None = "auto",
        lambda_seg: float = 100.0,
        class_balanced_ce: float = 0.0,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        avd_empty_policy: Literal["skip_class", "unable_case"] = "skip_class",
        per_axis_scale: bool = False,
        out_channels: int | None = None,
        **kwargs: Any,
    ):
        """``out_channels`` is the head's output count and must be ``None`` or ``num_classes``."""
        kind = check_label_kind(label_kind)
        if num_classes is None or num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1 (does the data have labels?), got {num_classes}")
        if out_channels not in (None, num_classes):
            raise ConfigError(f"GeminiSemi's head has num_classes outputs; drop model.out_channels={out_channels}")
        super().__init__(*args, num_classes=num_classes, label_kind=label_kind, out_channels=num_classes,
                         per_axis_scale=per_axis_scale, **kwargs)
        self.hparams.out_channels = num_classes  # (the outer None would be recorded otherwise)
        self.label_kind = "multiclass" if kind == "auto" else kind
        self.roi_size = list(roi_size) if roi_size is not None else None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        mode = getattr(self.datamodule, "train_mode", None)
        if stage == "fit" and mode is not None and mode != "pairs+labeled":
            raise ConfigError(f"GeminiSemi trains on unlabeled pairs and labeled images: set data.train_mode: pairs+labeled (got {mode!r})")

    # ---------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One random affine for the pair, the labeled image and its label (nearest)."""
        require_batch_keys(batch, ("image_a", "image_b", "image", "label"), type(self).__name__, "pairs+labeled")
        return self.augment(batch, [("image_a",), ("image_b",), ("image", "label")])

    def head_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"total": self.seg_loss(self.net(batch["image"]), batch["label"])}
