"""Shared LightningModule base of GEMINI: the network, the GEMINI step on an unlabeled pair, the
guarded manual optimiser step, the spatial augmentation and registration validation.

Subclasses (pre-training, semi-supervised segmentation) add only their head loss in
:meth:`GeminiBase.head_loss`; the published schedule (METHOD §4) then runs per iteration:

1. GEMINI loss on the pair → backward → Adam step → zero grads;
2. head loss → backward → Adam step → zero grads;

or, with ``schedule="joint"``, one step on the sum. Steps whose loss (or gradient) is not finite
are skipped, counted and logged; ``max_consecutive_nonfinite`` skipped steps of one loss in a row stop the
run with :class:`~gemini_pl.errors.NonFiniteLossError`.

No host synchronisation inside a step: the finiteness flag stays on the device (summed over DDP
ranks, so every rank takes the same decision) and reaches the fused Adam kernel as its
``found_inf`` argument, which leaves the weights, moments and step counts untouched when it is
set — the mechanism AMP's GradScaler uses. The skip counters live on the device too and are read
on the host only at the logging cadence (``trainer.log_every_n_steps``) and at epoch end, where a
run of ``max_consecutive_nonfinite`` is reported. (An optimiser that cannot take ``found_inf``,
e.g. one restored from a checkpoint written with a non-fused Adam, falls back to one host read
per step.)

Note on step counting: Lightning's ``global_step`` counts optimiser steps, so the published
schedule advances it by 2 per iteration (1 with ``joint``); skipped steps count too (as with
AMP's GradScaler). Configs bound training in epochs × iterations (``max_epochs`` ×
``limit_train_batches``), as the paper does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from torchmetrics import MeanMetric

from ..errors import ConfigError, NonFiniteLossError
from ..losses import GeminiWeights, gemini_loss
from ..metrics import folding_percent, mean_dice
from ..nets import DEFAULT_DEFORMER_WIDTHS, DEFAULT_WIDTHS, GeminiNet
from ..spatial import apply_affine, warp
from .augmentation import draw_affine
from .cadence import at_log_step
from .optim import make_adam

log = logging.getLogger(__name__)

PAIR_METRICS = ("dice_warped", "dice_unwarped", "folding_percent")


def _nonfinite_grads(grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when any gradient holds a NaN/inf, else 0.0, as a float32 device tensor (no host read).

    One multi-tensor kernel: the check AMP's GradScaler runs before unscaling (with a scale of
    exactly 1, so the gradients keep their values bit for bit).
    """
    if not grads:
        return torch.zeros(())
    found = torch.zeros((), device=grads[0].device)
    ones = torch.ones((), device=grads[0].device)
    by_device: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:  # the kernel wants one device and dtype per call
        by_device.setdefault((g.device, g.dtype), []).append(g)
    for (device, _), group in by_device.items():
        f = found if device == found.device else torch.zeros((), device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, f, ones.to(device))
        if f is not found:
            found = torch.maximum(found, f.to(found.device))
    return found


class GeminiBase(L.LightningModule):
    """GEMINI on unlabeled pairs plus a head loss supplied by the subclass.

    Batches are dicts: training ``{"image_a", "image_b"}`` (N, C, *S) float in [0, 1] (plus what
    the subclass's head needs); validation/test ``{"image_a", "image_b", "label_a", "label_b"}``
    with integer label maps (N, 1, *S).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: head outputs (1 for restoration, classes for segmentation).
        widths: backbone widths (9 values: 5 encoder, 4 decoder levels).
        deformer_widths: deformer widths (5 values).
        lr: Adam learning rate (constant).
        schedule: ``"alternate"`` (published: two optimiser steps per iteration) or ``"joint"``.
        lambda_smooth: weight of the smoothness prior L_smo.
        lambda_gss: weight of the GSS term.
        lambda_gvs: weight of the GVS (masked LNCC) term.
        lambda_pos: weight of the positive-pair part of GSS.
        ncc_window: LNCC window per axis.
        sampling: ``"exact"`` warps (default) or ``"legacy"`` (the published align_corners quirk).
        ncc_eps_per_voxel: LNCC denominator Σ(M + 1e-6) (published 3D) or ΣM + 1e-5 (published 2D).
        spatial_augment: apply one random affine per iteration to all images of the iteration.
        rotation: maximum rotation (radians) about each axis.
        scale_range: scale factor range.
        per_axis_scale: one scale factor per axis (MIP) or one for all axes (Semi).
        affine_per_image: draw a separate affine for A and B (changes their relative deformation).
        max_consecutive_nonfinite: stop after this many skipped steps of one loss in a row (checked
            at the logging cadence, ``trainer.log_every_n_steps``, and at epoch end).
        aug_seed: seed of the augmentation generator (offset by the process rank under DDP).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
        lr: float = 1e-4,
        schedule: Literal["alternate", "joint"] = "alternate",
        lambda_smooth: float = 0.4,
        lambda_gss: float = 0.8,
        lambda_gvs: float = 1.0,
        lambda_pos: float = 0.1,
        ncc_window: int = 9,
        sampling: Literal["exact", "legacy"] = "exact",
        ncc_eps_per_voxel: bool = True,
        spatial_augment: bool = True,
        rotation: float = math.pi / 9,
        scale_range: tuple[float, float] = (0.75, 1.25),
        per_axis_scale: bool = True,
        affine_per_image: bool = False,
        max_consecutive_nonfinite: int = 10,
        aug_seed: int = 0,
    ):
        super().__init__()
        if schedule not in ("alternate", "joint"):
            raise ValueError(f"model.schedule must be 'alternate' or 'joint', got {schedule!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = GeminiNet(spatial_dims, in_channels, out_channels, widths, deformer_widths)
        self.weights = GeminiWeights(lambda_smooth, lambda_gss, lambda_gvs, lambda_pos)
        # pair-evaluation means as metric objects: synced once per epoch over DDP ranks, exact with
        # an unequal number of pairs per rank (no per-batch sync_dist averaging)
        self.pair_means = torch.nn.ModuleDict(
            {f"{stage}_{key}": MeanMetric() for stage in ("val", "test") for key in PAIR_METRICS}
        )
        # skip counters (device tensors, read on the host only at the logging cadence)
        self._nonfinite_total = torch.zeros(())
        self._consecutive_nonfinite: dict[str, torch.Tensor] = {}
        self._nonfinite_reported = 0
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(aug_seed)

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dm_dims = getattr(dm, "spatial_dims", None)
        if dm_dims is not None and dm_dims != self.hparams.spatial_dims:
            raise ConfigError(
                f"model.spatial_dims={self.hparams.spatial_dims} but data.spatial_dims={dm_dims}; set both to the same value"
            )
        # The published schedule backpropagates two losses that use different parameters (the head
        # is unused by the GEMINI loss, the deformer by the head loss): DDP must look for unused ones.
        ddp_kwargs = getattr(getattr(self._trainer, "strategy", None), "_ddp_kwargs", None)
        if isinstance(ddp_kwargs, dict):
            ddp_kwargs.setdefault("find_unused_parameters", True)
        # distinct augmentation streams per DDP rank (restored from the checkpoint on resume)
        self.aug_generator.manual_seed(self.hparams.aug_seed + 1000003 * self.global_rank)

    def configure_optimizers(self):
        return make_adam(self.parameters(), self.hparams.lr)  # fused: takes the device-side skip flag

    @property
    def nonfinite_steps(self) -> int:
        """Optimiser steps skipped so far because a loss or gradient was not finite (host read)."""
        return int(self._nonfinite_total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gemini"] = {
            "nonfinite_steps": self.nonfinite_steps,
            "consecutive_nonfinite": {k: int(v) for k, v in self._consecutive_nonfinite.items()},
            "aug_generator": self.aug_generator.get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gemini", {})
        self._nonfinite_total = torch.tensor(float(state.get("nonfinite_steps", 0)))
        self._nonfinite_reported = int(state.get("nonfinite_steps", 0))
        self._consecutive_nonfinite = {k: torch.tensor(float(v)) for k, v in state.get("consecutive_nonfinite", {}).items()}
        if "aug_generator" in state:
            self.aug_generator.set_state(state["aug_generator"])

    # ----------------------------------------------------------------------------- pieces
    def augment(self, *tensors: torch.Tensor, modes: Sequence[str] | None = None) -> list[torch.Tensor]:
        """One random affine for the iteration, applied to every tensor (labels: mode "nearest")."""
        if not self.hparams.spatial_augment:
            return list(tensors)
        modes = modes or ["bilinear"] * len(tensors)
        draws = len(tensors) if self.hparams.affine_per_image else 1
        thetas = [draw_affine(self, tensors[0].device) for _ in range(draws)]
        return [apply_affine(t, thetas[i % draws], mode=m) for i, (t, m) in enumerate(zip(tensors, modes))]

    def gemini_terms(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """All GEMINI loss terms for a batch of pairs (one backbone and one deformer call)."""
        f_a, f_b = self.net.features(torch.cat([x_a, x_b], 0)).chunk(2, 0)
        flow_ab, flow_ba = self.net.flows_both_ways(f_a, f_b)
        return gemini_loss(
            x_a, x_b, f_a, f_b, flow_ab, flow_ba, self.weights, window=self.hparams.ncc_window,
            sampling=self.hparams.sampling, eps_per_voxel=self.hparams.ncc_eps_per_voxel,
        )

    def head_loss(self, batch: dict[str, torch.Tensor], x_a: torch.Tensor) -> dict[str, torch.Tensor]:
        """The subclass's head loss; returns a dict with at least ``"total"``."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Augment the pair (subclasses may augment more tensors); returns (x_a, x_b, batch)."""
        x_a, x_b = self.augment(batch["image_a"], batch["image_b"])
        return x_a, x_b, batch

    # ----------------------------------------------------------------------------- training
    def _uses_grad_scaler(self) -> bool:
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def guarded_step(self, loss: torch.Tensor, name: str) -> torch.Tensor:
        """Backward + optimiser step unless the loss or the gradients are not finite.

        Returns the skip flag as a device tensor (1.0 skipped, 0.0 stepped) without reading it.
        The flag is summed over DDP ranks, so every rank skips the same steps. Under 16-mixed the
        GradScaler skips non-finite gradients itself; only the loss is checked here.
        """
        opt = self.optimizers()
        self.manual_backward(loss)
        bad = (~torch.isfinite(loss.detach())).float()
        scaler = self._uses_grad_scaler()
        if not scaler:
            bad = torch.maximum(bad, _nonfinite_grads([p.grad for p in self.parameters() if p.grad is not None]))
        bad = self.trainer.strategy.reduce(bad, reduce_op="sum").clamp(max=1.0)
        inner = opt.optimizer
        if scaler:
            opt.step()
        elif all(group.get("fused") for group in inner.param_groups):
            inner.found_inf = bad  # read by the fused kernel: no update where set
            try:
                opt.step()
            finally:
                del inner.found_inf
        elif float(bad) == 0:  # an optimiser without found_inf support: one host read
            opt.step()
        opt.zero_grad(set_to_none=True)
        self._count_nonfinite(name, bad)
        return bad

    def _count_nonfinite(self, name: str, bad: torch.Tensor) -> None:
        """Update the device-side counters: total skips, and the current run of skips per loss."""
        self._nonfinite_total = self._nonfinite_total.to(bad.device) + bad
        run = self._consecutive_nonfinite.get(name, torch.zeros((), device=bad.device)).to(bad.device)
        self._consecutive_nonfinite[name] = (run + 1.0) * bad  # +1 when skipped, reset to 0 otherwise

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if at_log_step(self._trainer, batch_idx):
            self.check_nonfinite()

    def on_train_epoch_end(self) -> None:
        self.check_nonfinite()

    def check_nonfinite(self) -> None:
        """Read the skip counters on the host (one synchronisation): warn about new skips and
        stop with :class:`NonFiniteLossError` after ``max_consecutive_nonfinite`` in a row."""
        if not self._consecutive_nonfinite:
            return
        names = list(self._consecutive_nonfinite)
        values = torch.stack([self._nonfinite_total.float()] + [self._consecutive_nonfinite[n].float() for n in names]).tolist()
        total, runs = int(values[0]), dict(zip(names, (int(v) for v in values[1:])))
        if total > self._nonfinite_reported:
            log.warning(
                "%d optimiser step(s) skipped for non-finite losses or gradients by global step %d (epoch %d); "
                "%d skipped so far; current runs of skips per loss: %s",
                total - self._nonfinite_reported, self.global_step, self.current_epoch, total, runs,
            )
            self._nonfinite_reported = total
        limit = self.hparams.max_consecutive_nonfinite
        for name, run in runs.items():
            if run >= limit:
                path = self._save_last_good_state()
                raise NonFiniteLossError(
                    f"{run} consecutive non-finite {name} losses, last at global step {self.global_step} "
                    f"(epoch {self.current_epoch}); the last good weights are in {path}. Lower model.lr, check "
                    f"the input data for NaN/inf, or raise model.max_consecutive_nonfinite"
                )

    def _save_last_good_state(self) -> Path:
        """Checkpoint the weights as they are (every skipped step left them untouched)."""
        folder = getattr(self.trainer.checkpoint_callback, "dirpath", None) or Path(self.trainer.default_root_dir) / "checkpoints"
        path = Path(folder) / "nonfinite-stop.ckpt"
        self.trainer.save_checkpoint(path)
        return path

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x_a, x_b, batch = self.prepare_batch(batch)
        if self.hparams.schedule == "joint":
            terms = self.gemini_terms(x_a, x_b)
            head = self.head_loss(batch, x_a)
            self.guarded_step(terms["total"] + head["total"], "joint")
        else:
            terms = self.gemini_terms(x_a, x_b)
            self.guarded_step(terms["total"], "GEMINI")
            head = self.head_loss(batch, x_a)
            self.guarded_step(head["total"], "head")
        logs = {f"train/{k}": v.detach() for k, v in terms.items()}
        logs.update({f"train/head_{k}": v.detach() for k, v in head.items()})
        logs["train/nonfinite_steps"] = self._nonfinite_total
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=x_a.shape[0])
        if at_log_step(self._trainer, batch_idx):  # progress-bar values are read on the host (cadence.py)
            self.log("loss", terms["total"].detach(), prog_bar=True, on_step=True, batch_size=x_a.shape[0], logger=False)

    # ----------------------------------------------------------------------------- evaluation
    def register_pair(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """φ = D([f_A, f_B]) for moving A and fixed B; per-pair Dice before/after warping, folding %."""
        x_a, x_b = batch["image_a"], batch["image_b"]
        f_a, f_b = self.net.features(torch.cat([x_a, x_b], 0)).chunk(2, 0)
        flow = self.net.flow(f_a, f_b)
        out = {"flow": flow, "warped_image": warp(x_a, flow, sampling=self.hparams.sampling)}
        if "label_a" in batch:
            la, lb = batch["label_a"], batch["label_b"]
            k = int(torch.maximum(la.max(), lb.max())) + 1
            warped = warp(la, flow, mode="nearest", sampling=self.hparams.sampling)
            out.update(
                warped_label=warped,
                dice_warped=mean_dice(warped, lb, k),
                dice_unwarped=mean_dice(la, lb, k),
                folding_percent=folding_percent(flow),
            )
        return out

    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str) -> None:
        out = self.register_pair(batch)
        n = batch["image_a"].shape[0]
        for key in PAIR_METRICS:
            if key in out:
                metric = self.pair_means[f"{prefix}_{key}"]
                metric.update(out[key])  # one value per pair
                self.log(f"{prefix}/{key}", metric, on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.register_pair(batch)
        return {k: v for k, v in out.items() if k in ("flow", "warped_image", "warped_label", "dice_warped")}
