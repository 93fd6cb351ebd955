"""GEMINI-Semi: few-shot semi-supervised segmentation (METHOD §3-5).

Per iteration, as published: the GEMINI step on an unlabeled pair (DHL + GSS) → Adam step, then
the segmentation step on a labeled batch → Adam step (``schedule: joint`` sums both into one
step). One random affine per iteration (one scale factor for all axes by default) is applied to
the pair, the labeled image and its label (nearest).

The segmentation loss follows the dataset's label kind: softmax + CE/Dice for one label map
(multiclass), sigmoid + BCE/Dice for overlapping binary masks (multilabel, e.g. SCR chest X-rays).

Batches (``GeminiDataModule(train_mode="pairs+labeled")``): ``{"image_a", "image_b", "image",
"label"}``. Validation: segmentation Dice on whole test cases (``eval_mode: cases``) — logged as
``val/dice`` for ``ModelCheckpoint``; given registration pairs instead (``eval_mode: pairs``) it
falls back to GEMINI's registration validation. Test: Dice, AVD and HD95 per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..spatial import apply_affine
from .augmentation import draw_affine
from .base import GeminiBase
from .batches import require_batch_keys
from .segment import LABEL_KINDS, SegmentationEvaluation, _datamodule, _safe_attr

__all__ = ["GeminiSemi"]


class GeminiSemi(SegmentationEvaluation, GeminiBase):
    """GEMINI on unlabeled pairs + supervised segmentation on a few labeled images, jointly.

    Args (beyond :class:`~gemini_pl.modules.GeminiBase`, whose ``out_channels`` is set to
    ``num_classes``; ``per_axis_scale`` defaults to False here, as published for Semi):
        num_classes: head outputs K: classes with the background (multiclass) or label channels
            (multilabel); checked against the data module.
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        lambda_seg: weight of the segmentation loss (100 as published).
        roi_size: sliding-window size for evaluation (default: the data module's patch in 3D).
        sw_batch_size, sw_overlap: sliding-window settings.
    """

    def __init__(
        self,
        *args: Any,
        num_classes: int = 2,
        label_kind: Literal["auto", "multiclass", "multilabel"] = "auto",
        lambda_seg: float = 100.0,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        per_axis_scale: bool = False,
        out_channels: int | None = None,
        **kwargs: Any,
    ):
        """``per_axis_scale`` defaults to False (one scale factor for all axes, as published for
        Semi); ``out_channels`` is the head's output count and must be ``None`` or ``num_classes``."""
        if label_kind not in LABEL_KINDS:
            raise ConfigError(f"model.label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
        if out_channels not in (None, num_classes):
            raise ConfigError(f"GeminiSemi's head has num_classes outputs; drop model.out_channels={out_channels}")
        super().__init__(*args, out_channels=num_classes, per_axis_scale=per_axis_scale, **kwargs)
        self.label_kind = "multiclass" if label_kind == "auto" else label_kind
        self.roi_size = list(roi_size) if roi_size is not None else None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.setup_segmentation()
        dm = _datamodule(self)
        mode = _safe_attr(dm, "train_mode")
        if stage == "fit" and mode is not None and mode != "pairs+labeled":
            raise ConfigError(f"GeminiSemi trains on unlabeled pairs and labeled images: set data.train_mode: pairs+labeled (got {mode!r})")

    # ---------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One random affine for the pair, the labeled image and its label (nearest)."""
        require_batch_keys(batch, ("image_a", "image_b", "image", "label"), type(self).__name__, "pairs+labeled")
        self._ensure_segmentation()
        if not self.hparams.spatial_augment:
            return batch["image_a"], batch["image_b"], batch
        draws = 3 if self.hparams.affine_per_image else 1
        thetas = [draw_affine(self, batch["image_a"].device) for _ in range(draws)]
        th_a, th_b, th_l = (thetas * 3)[:3] if draws == 1 else thetas
        x_a = apply_affine(batch["image_a"], th_a)
        x_b = apply_affine(batch["image_b"], th_b)
        out = dict(batch)
        out["image"] = apply_affine(batch["image"], th_l)
        out["label"] = apply_affine(batch["label"], th_l, mode="nearest")
        return x_a, x_b, out

    def head_loss(self, batch: dict[str, torch.Tensor], x_a: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.seg_loss(self.net(batch["image"]), batch["label"])
        return {"total": loss}

    # ---------------------------------------------------------------- evaluation
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "image" in batch:
            return self.seg_predict_step(batch)
        return super().predict_step(batch, batch_idx)
