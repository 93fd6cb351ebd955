"""Supervised segmentation transfer: the "U-Net Five" / "U-Net Full" rows, and fine-tuning after GEMINI.

:class:`Segmentation` trains :class:`~gemini_pl.nets.GeminiNet`'s backbone + head (K outputs) on
labeled images — from scratch, from a ``GeminiPretrain`` (or any gemini-pl) checkpoint, or from an
official GEMINI checkpoint (``init_from``) — optionally with the backbone frozen (linear
evaluation). Loss, prediction and metrics: :class:`~gemini_pl.modules.seg_eval.SegmentationEvaluation`
(``val/seg_dice``, ``test/seg_dice``, ``test/avd``, ``test/hd95``).

Batches (see ``GeminiDataModule``): training ``{"image": (B, 1, *S) float, "label": ...}``
(``train_mode: labeled``), logged as ``train/seg/total``; validation/test/predict whole cases
``{"image", "label", "name", "spacing", "meta"}`` (``eval_mode: cases``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ..errors import ConfigError
from .batches import require_batch_keys
from .core import GeminiModule, Losses
from .seg_eval import SegmentationEvaluation, check_label_kind
from .transfer import InitFromCheckpoint, freeze

__all__ = ["Segmentation"]


class Segmentation(InitFromCheckpoint, SegmentationEvaluation, GeminiModule):
    """Supervised segmentation with the GEMINI backbone + head (U-Net Five / Full, fine-tuning).

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`'s ``in_channels``, ``widths``, ``lr``,
    ``spatial_augment``, ``rotation``, ``scale_range``, ``max_consecutive_nonfinite``, ``aug_seed``):
        spatial_dims: 2 or 3 (linked from the data by the CLI).
        num_classes: head outputs K: classes with the background (multiclass) or label channels
            (multilabel); linked from the data by the CLI.
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        init_from: weight file to start from: a gemini-pl checkpoint (e.g. ``GeminiPretrain``'s
            ``last.ckpt``), an official GEMINI ``.pth``, or a GeminiNet state_dict. The backbone
            must fit; the head is copied only with ``init_head`` and when its shape fits. Read
            with ``weights_only=True``; a report of loaded/missing/unexpected keys is logged.
            Ignored when training resumes from a checkpoint (``--ckpt_path``).
        init_exclude: key prefixes (network names) not copied from ``init_from``, e.g.
            ``["backbone.up"]`` to transfer the encoder only (the decoder starts fresh).
        init_head: also copy the head (e.g. from a ``Segmentation``/``GeminiSemi`` checkpoint).
        freeze_backbone: train the head only (linear evaluation).
        lambda_seg: weight of the segmentation loss (100 as published).
        class_balanced_ce: weight of a class-balanced cross-entropy added to the supervised loss
            (beyond the paper; :func:`~gemini_pl.losses.class_balanced_ce`): every class present in
            the batch weighs the same, so a small structure keeps a gradient; 0 = the published loss.
        per_axis_scale: one scale factor per axis; default one for all axes (Semi's, docs/METHOD.md §5).
        roi_size: sliding-window size for evaluation; default the data module's ``patch_size`` (3D).
        sw_batch_size, sw_overlap: sliding-window batch and overlap.
        avd_empty_policy: ``"skip_class"`` (a class predicted empty is left out of the case's AVD)
            or ``"unable_case"`` (the case's AVD is "unable", the paper's semantics).
    """

    network_parts = ("backbone", "head")

    def __init__(
        self,
        spatial_dims: int = 3,
        num_classes: int = 2,
        label_kind: Literal["auto", "multiclass", "multilabel"] | None = "auto",
        init_from: str | None = None,
        init_exclude: Sequence[str] = (),
        init_head: bool = False,
        freeze_backbone: bool = False,
        lambda_seg: float = 100.0,
        class_balanced_ce: float = 0.0,
        per_axis_scale: bool = False,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        avd_empty_policy: Literal["skip_class", "unable_case"] = "skip_class",
        **kwargs: Any,
    ):
        kind = check_label_kind(label_kind)
        if num_classes is None or num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1 (does the data have labels?), got {num_classes}")
        super().__init__(spatial_dims=spatial_dims, num_classes=num_classes, label_kind=label_kind, out_channels=num_classes,
                         per_axis_scale=per_axis_scale, **kwargs)
        self.label_kind = "multiclass" if kind == "auto" else kind
        self.roi_size = list(roi_size) if roi_size is not None else None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.freeze_backbone:
            freeze(self.net.backbone)

    def init_optional_parts(self) -> tuple[str, ...]:
        return ("head",) if self.hparams.init_head else ()

    # ---------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One random affine for the iteration: the image bilinear, the label nearest."""
        require_batch_keys(batch, ("image", "label"), type(self).__name__, "labeled")
        return self.augment(batch, [("image", "label")])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        yield "seg", {"total": self.seg_loss(self.net(batch["image"]), batch["label"])}
