"""Supervised segmentation transfer: the "U-Net Five" / "U-Net Full" rows, and fine-tuning after GEMINI.

:class:`Segmentation` trains :class:`~gemini_pl.nets.GeminiNet`'s backbone + head (K outputs) on
labeled images — from scratch, from a ``GeminiPretrain`` (or any gemini-pl) checkpoint, or from an
official GEMINI checkpoint (``init_from``) — optionally with the backbone frozen (linear
evaluation). The same evaluation code (:class:`SegmentationEvaluation`) serves ``GeminiSemi``.

Batches (see ``GeminiDataModule``): training ``{"image": (B, 1, *S) float, "label": ...}``
(``train_mode: labeled``); validation/test/predict whole cases ``{"image", "label", "name",
"spacing", "meta"}`` (``eval_mode: cases``). Labels: multiclass (B, 1, *S) int64 class indices
(softmax + CE/Dice loss, argmax prediction) or multilabel (B, K, *S) 0/1 (sigmoid + BCE/Dice,
prediction > 0.5) — the loss follows the dataset's label kind, not the number of dimensions.

Evaluation (METHOD §6): per foreground class Dice (background excluded) averaged per case, AVD
(SimpleITK, physical units) and HD95 (MONAI), as DDP-safe metric objects; validation logs
``val/dice`` (the ``ModelCheckpoint`` monitor), test logs ``test/dice``, ``test/avd``,
``test/hd95`` and returns per-case rows for :class:`~gemini_pl.callbacks.ResultsWriter`.
Volumes larger than ``roi_size`` (default: the data module's ``patch_size`` in 3D) are segmented
with MONAI sliding windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch

from ..errors import ConfigError
from ..inference import infer
from ..losses import sigmoid_seg_loss, softmax_seg_loss
from ..metrics import AverageHausdorffDistance, DiceScore, HausdorffDistance95, one_hot_labels
from ..nets import DEFAULT_WIDTHS, GeminiNet
from ..spatial import apply_affine
from .augmentation import draw_affine
from .batches import require_batch_keys
from .transfer import InitFromCheckpoint, TransferReport, freeze
from .cadence import at_log_step
from .optim import make_adam

log = logging.getLogger(__name__)

__all__ = ["Segmentation", "SegmentationEvaluation", "case_spacing", "case_names", "case_meta"]

LABEL_KINDS = ("auto", "multiclass", "multilabel")


# ------------------------------------------------------------------------------------------ batch helpers
def case_names(batch: dict[str, Any], n: int, key: str = "name") -> list[str]:
    """Case names of a batch (``batch[key]``), or ``case<i>`` when absent."""
    names = batch.get(key)
    if names is None:
        return [f"case{i}" for i in range(n)]
    if isinstance(names, str):
        return [names]
    return [str(x) for x in names]


def case_meta(batch: dict[str, Any], key: str = "meta") -> Any:
    return batch.get(key)


def case_spacing(batch: dict[str, Any], keys: Sequence[str] = ("spacing",), meta_keys: Sequence[str] = ("meta",)) -> Any:
    """The spacing entry of a batch (``spacing`` or ``meta["spacing"]``), as collated; ``None`` if absent."""
    for k in keys:
        if batch.get(k) is not None:
            return batch[k]
    for k in meta_keys:
        meta = batch.get(k)
        if isinstance(meta, dict) and meta.get("spacing") is not None:
            return meta["spacing"]
    return None


def _datamodule(module: L.LightningModule) -> Any:
    trainer = getattr(module, "_trainer", None)
    return getattr(trainer, "datamodule", None) if trainer is not None else None


# ------------------------------------------------------------------------------------------ evaluation
class SegmentationEvaluation:
    """Mixin: whole-case segmentation, the seg loss, and the Dice/AVD/HD95 metric objects.

    The host defines ``self.net`` (with a head of ``num_classes`` outputs) and the hyper-parameters
    ``num_classes``, ``label_kind``, ``roi_size``, ``sw_batch_size``, ``sw_overlap``, ``lambda_seg``.
    """

    result_units = {"dice": "%", "avd": "mm", "hd95": "mm"}

    # ---------------------------------------------------------------- set-up
    def setup_segmentation(self) -> None:
        hp = self.hparams
        dm = _datamodule(self)
        kind = hp.label_kind
        dm_kind = getattr(dm, "label_kind", None)
        if kind == "auto":
            kind = dm_kind or "multiclass"
        elif dm_kind is not None and dm_kind != kind:
            raise ConfigError(f"model.label_kind={kind!r} but the data's labels are {dm_kind!r}; set model.label_kind: auto")
        if kind not in ("multiclass", "multilabel"):
            raise ConfigError(f"model.label_kind must be one of {LABEL_KINDS}, got {kind!r}")
        self.label_kind = kind
        dm_classes = _safe_attr(dm, "num_classes")
        if dm_classes is not None and int(dm_classes) != int(hp.num_classes):
            raise ConfigError(
                f"model.num_classes={hp.num_classes} but the data has {dm_classes} "
                f"{'classes (background included)' if kind == 'multiclass' else 'label channels'}; set model.num_classes: {dm_classes}"
            )
        roi = hp.roi_size
        if roi is None and self.net.spatial_dims == 3:
            roi = _safe_attr(dm, "patch_size")
        self.roi_size = list(roi) if roi is not None else None
        names = _safe_attr(dm, "class_names")
        k = int(hp.num_classes)
        fg = list(range(1, k)) if kind == "multiclass" else list(range(k))
        if names is not None and len(names) == k:
            self.class_columns = [str(names[i]) for i in fg]
        else:
            self.class_columns = [str(i if kind == "multiclass" else i + 1) for i in fg]
        mc = dict(num_classes=k, label_kind=kind)
        self.val_dice = DiceScore(**mc)
        self.test_dice = DiceScore(**mc)
        self.test_avd = AverageHausdorffDistance(**mc)
        self.test_hd95 = HausdorffDistance95(**mc)

    def _ensure_segmentation(self) -> None:
        if not hasattr(self, "val_dice"):
            self.setup_segmentation()

    # ---------------------------------------------------------------- pieces
    def segment_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Head logits of a whole case, by sliding windows when it exceeds ``roi_size``."""
        return infer(self.net, image, self.roi_size, self.hparams.sw_batch_size, self.hparams.sw_overlap)

    def logits_to_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """argmax → (N, 1, *S) int64 (multiclass) or sigmoid > 0.5 → (N, K, *S) float (multilabel)."""
        if self.label_kind == "multilabel":
            return (logits > 0).float()
        return logits.argmax(dim=1, keepdim=True)

    def seg_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """``λ·(CE + Dice)`` (softmax, multiclass) or ``λ·(BCE + Dice)`` (sigmoid, multilabel), METHOD §3."""
        if self.label_kind == "multilabel":
            if label.shape[1] != logits.shape[1]:
                raise ConfigError(f"multilabel labels have {label.shape[1]} channels but the head has {logits.shape[1]}")
            return sigmoid_seg_loss(logits, label, self.hparams.lambda_seg)
        if label.shape[1] != 1:
            raise ConfigError(
                f"multiclass labels must be (B, 1, *S) class indices, got {tuple(label.shape)}; "
                "for overlapping binary masks set model.label_kind: multilabel"
            )
        return softmax_seg_loss(logits, one_hot_labels(label, logits.shape[1]), self.hparams.lambda_seg)

    # ---------------------------------------------------------------- steps
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Whole cases (a batch with ``"image"``) are segmented; other batches (registration
        pairs) go to the next class in the MRO."""
        if "image" in batch:
            self.seg_eval_step(batch, "val")
        else:
            super().validation_step(batch, batch_idx)  # type: ignore[misc]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if "image" in batch:
            return self.seg_eval_step(batch, "test")
        return super().test_step(batch, batch_idx)  # type: ignore[misc]

    def seg_eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any] | None:
        self._ensure_segmentation()
        image, label = batch["image"], batch["label"]
        n = image.shape[0]
        pred = self.logits_to_labels(self.segment_logits(image))
        if stage == "val":
            self.val_dice.update(pred, label)
            self.log("val/dice", self.val_dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
            return None
        spacing = case_spacing(batch)
        self.test_dice.update(pred, label)
        self.test_avd.update(pred, label, spacing)
        self.test_hd95.update(pred, label, spacing)
        self.log("test/dice", self.test_dice, on_step=False, on_epoch=True, batch_size=n)
        self.log("test/avd", self.test_avd, on_step=False, on_epoch=True, batch_size=n)
        self.log("test/hd95", self.test_hd95, on_step=False, on_epoch=True, batch_size=n)
        dice_rows = self.test_dice.last.cpu()
        rows = []
        for i, name in enumerate(case_names(batch, n)):
            row: dict[str, Any] = {"case": name, "dice": 100 * _nanmean(dice_rows[i])}
            row["avd"] = _nanmean(self.test_avd.last[i].cpu())
            row["hd95"] = _nanmean(self.test_hd95.last[i].cpu())
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
            "meta": case_meta(batch),
            "segmentation": pred if self.label_kind == "multilabel" else pred.to(torch.int16),
        }


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else math.nan


def _safe_attr(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    try:
        return getattr(obj, name, None)
    except Exception:  # a data module property that needs data on disk
        return None


# ------------------------------------------------------------------------------------------ module
class Segmentation(InitFromCheckpoint, SegmentationEvaluation, L.LightningModule):
    """Supervised segmentation with the GEMINI backbone + head (U-Net Five / Full, fine-tuning).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: head outputs K: classes with the background (multiclass) or label channels
            (multilabel); checked against the data module.
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        widths: backbone widths (9 values).
        lr: Adam learning rate (1e-4 in the GVSL fine-tuning protocol).
        init_from: weight file to start from: a gemini-pl checkpoint (e.g. ``GeminiPretrain``'s
            ``last.ckpt``), an official GEMINI ``.pth``, or a GeminiNet state_dict. The backbone
            must fit; the head is copied only with ``init_head`` and when its shape fits. Read
            with ``weights_only=True``; a report of loaded/missing/unexpected keys is logged.
            Ignored when training resumes from a checkpoint (``--ckpt_path``).
        init_head: also copy the head (e.g. from a ``Segmentation``/``GeminiSemi`` checkpoint).
        freeze_backbone: train the head only (linear evaluation).
        lambda_seg: weight of the segmentation loss (100 as published).
        spatial_augment: one random rotation + scale per iteration for image and label (nearest).
        rotation, scale_range, per_axis_scale: the augmentation's ranges (METHOD §5; Semi's single scale).
        roi_size: sliding-window size for evaluation; default the data module's ``patch_size`` (3D).
        sw_batch_size, sw_overlap: sliding-window batch and overlap.
        aug_seed: augmentation seed (offset by the DDP rank).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        label_kind: Literal["auto", "multiclass", "multilabel"] = "auto",
        widths: Sequence[int] = DEFAULT_WIDTHS,
        lr: float = 1e-4,
        init_from: str | None = None,
        init_head: bool = False,
        freeze_backbone: bool = False,
        lambda_seg: float = 100.0,
        spatial_augment: bool = True,
        rotation: float = math.pi / 9,
        scale_range: tuple[float, float] = (0.75, 1.25),
        per_axis_scale: bool = False,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        aug_seed: int = 0,
    ):
        super().__init__()
        if label_kind not in LABEL_KINDS:
            raise ConfigError(f"model.label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
        if num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {num_classes}")
        self.save_hyperparameters()
        self.net = GeminiNet(spatial_dims, in_channels, num_classes, widths)
        self.net.deformer = None  # segmentation has no use for it (and DDP would find it unused)
        self.label_kind = "multiclass" if label_kind == "auto" else label_kind
        self.roi_size = list(roi_size) if roi_size is not None else None
        self.transfer_report: TransferReport | None = None
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(aug_seed)

    # ---------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        dm = _datamodule(self)
        dm_dims = _safe_attr(dm, "spatial_dims")
        if dm_dims is not None and dm_dims != self.hparams.spatial_dims:
            raise ConfigError(
                f"model.spatial_dims={self.hparams.spatial_dims} but data.spatial_dims={dm_dims}; set both to the same value"
            )
        self.setup_segmentation()
        self.aug_generator.manual_seed(self.hparams.aug_seed + 1000003 * self.global_rank)
        if self.hparams.freeze_backbone:
            freeze(self.net.backbone)

    def init_optional_parts(self) -> tuple[str, ...]:
        return ("head",) if self.hparams.init_head else ()

    def configure_optimizers(self):
        return make_adam(self.parameters(), self.hparams.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gemini_segmentation"] = {"aug_generator": self.aug_generator.get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("gemini_segmentation", {})
        if "aug_generator" in state:
            self.aug_generator.set_state(state["aug_generator"])

    # ---------------------------------------------------------------- training
    def augment(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random affine for the iteration: the image bilinear, the label nearest."""
        if not self.hparams.spatial_augment:
            return image, label
        theta = draw_affine(self, image.device)
        return apply_affine(image, theta), apply_affine(label, theta, mode="nearest")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        require_batch_keys(batch, ("image", "label"), type(self).__name__, "labeled")
        self._ensure_segmentation()
        image, label = self.augment(batch["image"], batch["label"])
        loss = self.seg_loss(self.net(image), label)
        n = image.shape[0]
        self.log("train/seg", loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        if at_log_step(self._trainer, batch_idx):  # progress-bar values are read on the host (cadence.py)
            self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=n, logger=False)
        return loss

    # ---------------------------------------------------------------- evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.seg_eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.seg_eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.seg_predict_step(batch)
