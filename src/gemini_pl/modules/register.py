"""Registration transfer: the GEMINI deformer on top of the backbone, fine-tuned for pairwise registration.

φ = D([N(x_moving), N(x_fixed)]) warps the moving image onto the fixed one (METHOD §2, §6). Trained
with masked local NCC (the GVS term) + ``λ_smooth``·smoothness, and optionally ``λ_dice``·(1 − soft
Dice) of the warped moving labels against the fixed labels when the training pairs carry labels.
Initialised like :class:`~gemini_pl.modules.Segmentation` (``init_from``: the backbone and the
deformer must fit).

Beyond the paper: ``integration_steps > 0`` reads the deformer output as a stationary velocity
field and integrates it by scaling and squaring (:func:`~gemini_pl.spatial.integrate_velocity`),
trading a little accuracy for near-zero folding.

Batches. Training: unlabeled pairs ``{"image_a", "image_b"}`` (``train_mode: pairs``; labels
``label_a``/``label_b`` are used when present), and/or a labeled batch ``{"image", "label"}``
(``pairs+labeled`` / ``labeled``), whose cases are paired with the next one in the batch
(i → i+1 mod B). Evaluation: labeled pairs ``{"image_a", "image_b", "label_a", "label_b",
"name_a", "name_b"}`` (``eval_mode: pairs``), A moving onto B fixed; metrics per pair: Dice of
the warped labels (nearest) and without warping, folding %, SDlogJ and HD95 — in physical units
(``hd95``) when the batch carries the fixed image's spacing (``spacing_b``, ``meta_b``,
``spacing`` or ``meta``), otherwise in voxels (``hd95_vox``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch

from ..errors import ConfigError
from ..inference import register_windows
from ..losses import masked_lncc, smoothness, soft_dice_loss
from ..metrics import DiceScore, FoldingPercent, HausdorffDistance95, SDLogJ, one_hot_labels
from ..nets import DEFAULT_DEFORMER_WIDTHS, DEFAULT_WIDTHS, GeminiNet
from ..spatial import apply_affine, integrate_velocity, validity_mask, warp
from .augmentation import draw_affine
from .segment import _datamodule, _nanmean, _safe_attr, case_names, case_spacing
from .transfer import InitFromCheckpoint, TransferReport, freeze
from .cadence import at_log_step
from .optim import make_adam

log = logging.getLogger(__name__)

__all__ = ["Registration"]


class Registration(InitFromCheckpoint, L.LightningModule):
    """Pairwise deformable registration with the GEMINI backbone + deformer.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: label classes with the background (multiclass) or label channels
            (multilabel) for the Dice metrics; ``None``: the data module's ``num_classes``.
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        widths, deformer_widths: network widths (must match ``init_from``).
        lr: Adam learning rate.
        init_from: weight file (gemini-pl checkpoint, official GEMINI ``.pth`` or GeminiNet
            state_dict); its backbone and deformer are copied (``weights_only=True``), a report is
            logged. Ignored when resuming from ``--ckpt_path``.
        freeze_backbone: train the deformer only.
        lambda_smooth: weight of the smoothness prior (0.4 as in GEMINI).
        lambda_dice: weight of the warped-label soft Dice loss (0: unsupervised).
        ncc_window, sampling, ncc_eps_per_voxel: as in GEMINI (METHOD §2-3).
        bidirectional: train A→B and B→A from one deformer call (as GEMINI does).
        integration_steps: > 0: the deformer predicts a stationary velocity field, integrated
            with this many scaling-and-squaring steps (7 is usual); 0: a displacement (published).
        spatial_augment, rotation, scale_range, per_axis_scale: one random affine per iteration
            for every image and label of the iteration (it does not change the pairs' relative
            deformation; off by default).
        roi_size, sw_batch_size, sw_overlap: sliding-window evaluation of large volumes (default
            window: the data module's ``patch_size`` in 3D).
        aug_seed: augmentation seed.
    """

    init_parts = ("backbone", "deformer")
    result_units = {"dice": "%", "dice_unwarped": "%", "folding": "%", "sdlogj": "", "hd95": "mm", "hd95_vox": "voxels"}

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int | None = None,
        label_kind: Literal["auto", "multiclass", "multilabel"] = "auto",
        widths: Sequence[int] = DEFAULT_WIDTHS,
        deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
        lr: float = 1e-4,
        init_from: str | None = None,
        freeze_backbone: bool = False,
        lambda_smooth: float = 0.4,
        lambda_dice: float = 0.0,
        ncc_window: int = 9,
        sampling: Literal["exact", "legacy"] = "exact",
        ncc_eps_per_voxel: bool = True,
        bidirectional: bool = True,
        integration_steps: int = 0,
        spatial_augment: bool = False,
        rotation: float = math.pi / 9,
        scale_range: tuple[float, float] = (0.75, 1.25),
        per_axis_scale: bool = True,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        aug_seed: int = 0,
    ):
        super().__init__()
        if integration_steps < 0:
            raise ConfigError(f"model.integration_steps must be >= 0, got {integration_steps}")
        if label_kind not in ("auto", "multiclass", "multilabel"):
            raise ConfigError(f"model.label_kind must be auto, multiclass or multilabel, got {label_kind!r}")
        self.save_hyperparameters()
        self.net = GeminiNet(spatial_dims, in_channels, 1, widths, deformer_widths)
        self.net.head = None  # registration has no head
        self.label_kind = "multiclass" if label_kind == "auto" else label_kind
        self.num_classes = num_classes
        self.roi_size = list(roi_size) if roi_size is not None else None
        self.transfer_report: TransferReport | None = None
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(aug_seed)

    # ---------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        hp = self.hparams
        dm = _datamodule(self)
        dm_dims = _safe_attr(dm, "spatial_dims")
        if dm_dims is not None and dm_dims != hp.spatial_dims:
            raise ConfigError(f"model.spatial_dims={hp.spatial_dims} but data.spatial_dims={dm_dims}; set both to the same value")
        dm_kind = _safe_attr(dm, "label_kind")
        self.label_kind = (dm_kind or "multiclass") if hp.label_kind == "auto" else hp.label_kind
        if self.num_classes is None:
            self.num_classes = _safe_attr(dm, "num_classes")
        roi = hp.roi_size
        if roi is None and hp.spatial_dims == 3:
            roi = _safe_attr(dm, "patch_size")
        self.roi_size = list(roi) if roi is not None else None
        self._build_metrics()
        self.aug_generator.manual_seed(hp.aug_seed + 1000003 * self.global_rank)
        if hp.freeze_backbone:
            freeze(self.net.backbone)

    def _build_metrics(self) -> None:
        if self.num_classes is None:
            self.val_dice = self.test_dice = self.test_dice_unwarped = self.test_hd95 = None
        else:
            mc = dict(num_classes=int(self.num_classes), label_kind=self.label_kind)
            self.val_dice = DiceScore(**mc)
            self.test_dice = DiceScore(**mc)
            self.test_dice_unwarped = DiceScore(**mc)
            self.test_hd95 = HausdorffDistance95(**mc)
        self.val_folding = FoldingPercent()
        self.test_folding = FoldingPercent()
        self.test_sdlogj = SDLogJ()

    def configure_optimizers(self):
        return make_adam(self.parameters(), self.hparams.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gemini_registration"] = {"aug_generator": self.aug_generator.get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("gemini_registration", {})
        if "aug_generator" in state:
            self.aug_generator.set_state(state["aug_generator"])

    # ---------------------------------------------------------------- the field
    def to_displacement(self, out: torch.Tensor) -> torch.Tensor:
        """The deformer output as a displacement (integrated when it is a velocity)."""
        steps = self.hparams.integration_steps
        return integrate_velocity(out, steps, sampling=self.hparams.sampling) if steps else out

    def flow(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """φ warping ``moving`` onto ``fixed`` (N, ndim, *S): one backbone call on both images."""
        f_m, f_f = self.net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        return self.to_displacement(self.net.flow(f_m, f_f))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self.flow(moving, fixed)

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """φ for whole images, by sliding windows when they exceed ``roi_size``."""
        return register_windows(self.flow, moving, fixed, self.roi_size, self.hparams.sw_batch_size, self.hparams.sw_overlap)

    # ---------------------------------------------------------------- training
    def _training_pairs(self, batch: dict[str, Any]) -> list[tuple[torch.Tensor, ...]]:
        """(moving, fixed, label_moving | None, label_fixed | None) sets of the batch."""
        pairs = []
        if "image_a" in batch:
            pairs.append((batch["image_a"], batch["image_b"], batch.get("label_a"), batch.get("label_b")))
        if "image" in batch and batch["image"].shape[0] >= 2:
            img, lab = batch["image"], batch.get("label")
            roll = lambda t: None if t is None else torch.roll(t, -1, dims=0)  # noqa: E731
            pairs.append((img, roll(img), lab, roll(lab)))
        if not pairs:
            raise ConfigError(
                f"Registration trains on pairs {{'image_a', 'image_b'}} or on labeled batches of at least 2 cases, got "
                f"keys {sorted(batch)} (batch size {batch['image'].shape[0] if 'image' in batch else 0}); "
                "set data.train_mode: pairs (or labeled with labeled_batch_size >= 2)"
            )
        return pairs

    def _augment(self, tensors: list[torch.Tensor | None], modes: list[str]) -> list[torch.Tensor | None]:
        if not self.hparams.spatial_augment:
            return tensors
        ref = next(t for t in tensors if t is not None)
        theta = draw_affine(self, ref.device)
        return [None if t is None else apply_affine(t, theta, mode=m) for t, m in zip(tensors, modes)]

    def _label_onehot(self, label: torch.Tensor) -> torch.Tensor:
        if self.label_kind == "multilabel":
            return label.float()
        k = int(self.num_classes) if self.num_classes is not None else int(label.max()) + 1
        return one_hot_labels(label, max(k, 2))

    def pair_loss(self, moving, fixed, label_m=None, label_f=None) -> dict[str, torch.Tensor]:
        hp = self.hparams
        f_m, f_f = self.net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        if hp.bidirectional:
            out_mf, out_fm = self.net.flows_both_ways(f_m, f_f)
            sets = [(moving, fixed, label_m, label_f, self.to_displacement(out_mf)),
                    (fixed, moving, label_f, label_m, self.to_displacement(out_fm))]
        else:
            sets = [(moving, fixed, label_m, label_f, self.to_displacement(self.net.flow(f_m, f_f)))]
        terms = {"ncc": moving.new_zeros(()), "smooth": moving.new_zeros(())}
        use_dice = hp.lambda_dice > 0 and label_m is not None and label_f is not None
        if use_dice:
            terms["dice"] = moving.new_zeros(())
        for m, f, lm, lf, flow in sets:
            mask = validity_mask(flow, sampling=hp.sampling)
            warped = warp(m, flow, sampling=hp.sampling)
            terms["ncc"] = terms["ncc"] + masked_lncc(warped, f, mask, window=hp.ncc_window, eps_per_voxel=hp.ncc_eps_per_voxel)
            terms["smooth"] = terms["smooth"] + smoothness(flow)
            if use_dice:
                ym, yf = self._label_onehot(lm), self._label_onehot(lf)
                wm = warp(ym, flow, sampling=hp.sampling)
                sl = slice(1, None) if self.label_kind == "multiclass" else slice(None)
                terms["dice"] = terms["dice"] + soft_dice_loss(wm[:, sl], yf[:, sl])
        total = terms["ncc"] + hp.lambda_smooth * terms["smooth"]
        if use_dice:
            total = total + hp.lambda_dice * terms["dice"]
        terms["total"] = total
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pairs = self._training_pairs(batch)
        sums: dict[str, torch.Tensor] = {}
        for moving, fixed, lm, lf in pairs:
            moving, fixed, lm, lf = self._augment([moving, fixed, lm, lf], ["bilinear", "bilinear", "nearest", "nearest"])
            for k, v in self.pair_loss(moving, fixed, lm, lf).items():
                sums[k] = sums.get(k, 0) + v / len(pairs)
        n = pairs[0][0].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in sums.items()}, on_step=True, on_epoch=False, batch_size=n)
        if at_log_step(self._trainer, batch_idx):  # progress-bar values are read on the host (cadence.py)
            self.log("loss", sums["total"].detach(), prog_bar=True, on_step=True, batch_size=n, logger=False)
        return sums["total"]

    # ---------------------------------------------------------------- evaluation
    def register_pair(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Register A (moving) onto B (fixed): flow, warped image and (with labels) warped labels."""
        moving, fixed = batch["image_a"], batch["image_b"]
        flow = self.register(moving, fixed)
        out = {"flow": flow, "warped_image": warp(moving, flow, sampling=self.hparams.sampling)}
        if batch.get("label_a") is not None:
            out["warped_label"] = warp(batch["label_a"], flow, mode="nearest", sampling=self.hparams.sampling)
        return out

    def _ensure_metrics(self, batch: dict[str, Any]) -> None:
        if not hasattr(self, "val_folding"):
            self._build_metrics()
        if self.val_dice is None and batch.get("label_a") is not None:
            if self.label_kind == "multilabel":
                self.num_classes = int(batch["label_a"].shape[1])
            else:
                top = torch.maximum(batch["label_a"].max(), batch["label_b"].max()).float()
                if self._trainer is not None:  # every rank builds the same metrics (max over the DDP ranks)
                    top = self.trainer.strategy.reduce(top, reduce_op="max")
                self.num_classes = int(top) + 1
                log.warning("Registration: num_classes not set; using %d from the first evaluation batch", self.num_classes)
            self._build_metrics()
            self.to(self.device)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any] | None:
        self._ensure_metrics(batch)
        out = self.register_pair(batch)
        flow = out["flow"]
        n = flow.shape[0]
        has_labels = "warped_label" in out and self.val_dice is not None
        if stage == "val":
            self.val_folding.update(flow)
            self.log("val/folding_percent", self.val_folding, on_step=False, on_epoch=True, batch_size=n)
            if has_labels:
                self.val_dice.update(out["warped_label"], batch["label_b"])
                self.log("val/dice", self.val_dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
            return None
        self.test_folding.update(flow)
        self.test_sdlogj.update(flow)
        self.log("test/folding_percent", self.test_folding, on_step=False, on_epoch=True, batch_size=n)
        self.log("test/sdlogj", self.test_sdlogj, on_step=False, on_epoch=True, batch_size=n)
        spacing = case_spacing(batch, keys=("spacing_b", "spacing"), meta_keys=("meta_b", "meta"))
        if has_labels:
            self.test_dice.update(out["warped_label"], batch["label_b"])
            self.test_dice_unwarped.update(batch["label_a"], batch["label_b"])
            self.test_hd95.update(out["warped_label"], batch["label_b"], spacing)
            self.log("test/dice", self.test_dice, on_step=False, on_epoch=True, batch_size=n)
            self.log("test/dice_unwarped", self.test_dice_unwarped, on_step=False, on_epoch=True, batch_size=n)
            self.log("test/hd95" if spacing is not None else "test/hd95_vox", self.test_hd95, on_step=False, on_epoch=True, batch_size=n)
        names_a, names_b = case_names(batch, n, "name_a"), case_names(batch, n, "name_b")
        rows = []
        for i in range(n):
            row: dict[str, Any] = {"case": f"{names_a[i]}->{names_b[i]}"}
            if has_labels:
                row["dice"] = 100 * _nanmean(self.test_dice.last[i].cpu())
                row["dice_unwarped"] = 100 * _nanmean(self.test_dice_unwarped.last[i].cpu())
                # physical units only when the batch carries the fixed image's spacing
                row["hd95" if spacing is not None else "hd95_vox"] = _nanmean(self.test_hd95.last[i].cpu())
            row["folding"] = float(self.test_folding.last[i, 0])
            row["sdlogj"] = float(self.test_sdlogj.last[i, 0])
            rows.append(row)
        return {"cases": rows}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self.register_pair(batch)
        n = out["flow"].shape[0]
        names_a, names_b = case_names(batch, n, "name_a"), case_names(batch, n, "name_b")
        result = {
            "name": [f"{a}_to_{b}" for a, b in zip(names_a, names_b)],
            "meta": batch.get("meta_b", batch.get("meta")),
            "flow": out["flow"],
            "warped_image": out["warped_image"],
        }
        if "warped_label" in out:
            wl = out["warped_label"]
            result["warped_label"] = wl if self.label_kind == "multilabel" else wl.to(torch.int16)
        return result
