"""The one LightningModule every gemini-pl method is built on (:class:`GeminiModule`).

The core owns what every method shares; a method is a small subclass holding only its own losses
and heads:

* **the network**: a :class:`~gemini_pl.nets.GeminiNet` (backbone, and the deformer / head when
  the method's ``network_parts`` name them);
* **the optimiser**: one Adam, constant learning rate, fused (docs/METHOD.md §4);
* **the augmentation generator** ``aug_generator``: seeded by ``aug_seed``, offset by the DDP rank,
  saved in checkpoints under one key (:data:`CHECKPOINT_KEY`), and :meth:`augment`, one random
  affine per iteration (or per group of tensors with ``affine_per_image``);
* **the guarded optimiser step** (manual optimisation for every method): a step whose loss or
  gradients are not finite is skipped on the device, counted and reported
  (:mod:`~gemini_pl.modules.guard`);
* **term logging**: every term of every loss as ``train/<loss>/<term>``, the first loss's total
  on the progress bar at the logging cadence;
* **the data contract**: ``spatial_dims`` (and, for methods that take them, ``num_classes`` and
  ``label_kind``) are checked against the data module's public properties at ``setup``; the CLI
  links them from the data config (``gemini_pl.cli``), so a config states each once.

A method implements :meth:`training_losses`, a generator of ``(name, terms)`` with
``terms["total"]`` the scalar to minimise. Under the published schedule (``schedule:
alternate``) each yielded loss is stepped before the next one is computed (so the second loss of a
GEMINI iteration sees the weights updated by the first, docs/METHOD.md §4); with
``schedule: joint`` the totals are summed into one step. Batch preparation (augmentation, views)
is :meth:`prepare_batch`, whose output dict is what :meth:`training_losses` receives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from ..errors import ConfigError
from ..nets import DEFAULT_DEFORMER_WIDTHS, DEFAULT_WIDTHS, GeminiNet
from ..spatial import apply_affine
from .augmentation import AUGMENT_SPACES, draw_affine
from .cadence import at_log_step
from .guard import NonFiniteGuard
from .optim import make_adam

__all__ = ["CHECKPOINT_KEY", "LABEL_KINDS", "GeminiModule", "check_label_kind"]

#: The checkpoint entry of the core's state (augmentation generator, skip counters).
CHECKPOINT_KEY = "gemini_pl"
#: Entries of checkpoints written by earlier versions, read when :data:`CHECKPOINT_KEY` is absent.
LEGACY_CHECKPOINT_KEYS = ("gemini", "gemini_segmentation", "gemini_registration")
#: Seed offset of each DDP rank's augmentation stream.
RANK_SEED_STRIDE = 1000003

Losses = Iterator[tuple[str, dict[str, torch.Tensor]]]

LABEL_KINDS = ("auto", "multiclass", "multilabel")


def check_label_kind(label_kind: str | None) -> str:
    """``label_kind`` as given (``None``, e.g. linked from data without labels, reads as ``auto``)."""
    kind = "auto" if label_kind is None else label_kind
    if kind not in LABEL_KINDS:
        raise ConfigError(f"model.label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
    return kind


class GeminiModule(L.LightningModule):
    """Network, optimiser, augmentation, guarded step, term logging and data contract of a method.

    Args:
        spatial_dims: 2 or 3 (linked from ``data.spatial_dims`` by the CLI).
        in_channels: image channels.
        num_classes: the data's label classes (background included) or label channels, linked from
            ``data.num_classes`` (``None``: unlabeled data); a segmentation head's outputs, and the
            classes of the registration metrics.
        label_kind: the data's ``"multiclass"`` / ``"multilabel"`` labels, linked from the data
            (``None`` / ``"auto"``: the data module's).
        out_channels: head outputs (ignored when the method has no head).
        widths: backbone widths (9 values: 5 encoder, 4 decoder levels).
        deformer_widths: deformer widths (5 values; ignored without a deformer).
        flow_init: the deformer's flow convolution starts near zero (``"small"``) or
            Kaiming-random like the other convolutions, as published (``"published"``: a random
            start of about 1–2 voxels; docs/METHOD.md §1).
        lr: Adam learning rate (constant).
        spatial_augment: one random affine per iteration (docs/METHOD.md §5).
        rotation: maximum rotation (radians) about each axis.
        scale_range: scale factor range.
        per_axis_scale: one scale factor per axis, or one for all axes.
        augment_space: ``"physical"``: rotations rigid on the image's grid (physical units when
            the batch carries its spacing, else voxel units); ``"voxel"``: rotations of
            zero-centred voxel coordinates whatever the spacing, as published (its sampling grid
            exactly); ``"normalised"``: in normalised coordinates, an option that is not the
            published behaviour (a shear plus a stretch on a non-cubic grid).
        rotation_terms: each angle is the sum of this many U(−rotation, rotation) draws (2: the
            published 2D code's composition, a triangular spread to ±2·rotation).
        affine_per_sample: one affine per batch element instead of one per iteration (the
            published 2D MIP code).
        max_consecutive_nonfinite: stop after this many skipped steps of one loss in a row (checked
            at the logging cadence, ``trainer.log_every_n_steps``, and at epoch end).
        aug_seed: seed of the augmentation generator (offset by the process rank under DDP).
    """

    #: the parts of :class:`~gemini_pl.nets.GeminiNet` the method uses (the others are dropped).
    network_parts: tuple[str, ...] = ("backbone", "deformer", "head")

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int | None = None,
        label_kind: Literal["auto", "multiclass", "multilabel"] | None = None,
        out_channels: int = 1,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
        flow_init: Literal["small", "published"] = "small",
        lr: float = 1e-4,
        spatial_augment: bool = True,
        rotation: float = math.pi / 9,
        scale_range: tuple[float, float] = (0.75, 1.25),
        per_axis_scale: bool = True,
        augment_space: Literal["physical", "voxel", "normalised"] = "physical",
        rotation_terms: int = 1,
        affine_per_sample: bool = False,
        max_consecutive_nonfinite: int = 10,
        aug_seed: int = 0,
    ):
        super().__init__()
        if not (isinstance(lr, (int, float)) and lr > 0 and lr == lr and lr != float("inf")):
            raise ConfigError(f"model.init_args.lr must be a positive number, got {lr!r}")
        if augment_space not in AUGMENT_SPACES:
            raise ConfigError(f"model.augment_space must be one of {AUGMENT_SPACES}, got {augment_space!r}")
        if spatial_dims not in (2, 3):
            raise ConfigError(
                f"model.spatial_dims must be 2 or 3, got {spatial_dims}"
                + ("; the data module could not tell its dimensionality: set data.init_args.spatial_dims" if spatial_dims is None else "")
            )
        self.save_hyperparameters()
        window = self.hparams.get("ncc_window")
        if window is not None and not (isinstance(window, int) and window >= 1 and window % 2 == 1):
            raise ConfigError(f"model.init_args.ncc_window must be an odd integer >= 1 (the LNCC box is centred on "
                              f"each voxel), got {window!r}")
        self.automatic_optimization = False
        self.net = GeminiNet(spatial_dims, in_channels, out_channels, widths, deformer_widths, flow_init=flow_init)
        for part in ("deformer", "head"):
            if part not in self.network_parts:
                setattr(self.net, part, None)  # unused parts would be unused parameters under DDP
        self.guard = NonFiniteGuard(max_consecutive_nonfinite)
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(aug_seed)

    # ----------------------------------------------------------------------------- data contract
    @property
    def datamodule(self) -> Any:
        """The trainer's data module, or ``None`` (no trainer, or data given as loaders)."""
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def setup(self, stage: str) -> None:
        dm = self.datamodule
        dm_dims = getattr(dm, "spatial_dims", None) if dm is not None else None
        if dm_dims is not None and dm_dims != self.hparams.spatial_dims:
            raise ConfigError(
                f"model.spatial_dims={self.hparams.spatial_dims} but data.spatial_dims={dm_dims}; set both to the same value"
            )
        # Methods that backpropagate several losses through different parts (the published GEMINI
        # schedule, a frozen backbone, ...) leave parameters unused in some backward passes.
        ddp_kwargs = getattr(getattr(self._trainer, "strategy", None), "_ddp_kwargs", None)
        if isinstance(ddp_kwargs, dict):
            ddp_kwargs.setdefault("find_unused_parameters", True)
        # distinct augmentation streams per DDP rank (restored from the checkpoint on resume)
        self.aug_generator.manual_seed(self.hparams.aug_seed + RANK_SEED_STRIDE * self.global_rank)

    def data_label_kind(self) -> str:
        """``model.label_kind`` when it names one, else the data module's, else ``"multiclass"``."""
        kind = check_label_kind(self.hparams.get("label_kind"))
        if kind == "auto":
            dm = self.datamodule
            kind = (getattr(dm, "label_kind", None) if dm is not None else None) or "multiclass"
        return kind

    def sliding_window(self) -> list[int] | None:
        """The evaluation window: ``model.roi_size``, else in 3D the data module's ``patch_size``
        (``None``: whole images)."""
        roi = self.hparams.get("roi_size")
        if roi is None and self.hparams.spatial_dims == 3 and self.datamodule is not None:
            roi = getattr(self.datamodule, "patch_size", None)
        return list(roi) if roi is not None else None

    #: the losses a training iteration steps, in order, for ``optimizer_states: per_loss`` (one Adam
    #: each, over all parameters: each updates what its loss has gradients for)
    step_names: tuple[str, ...] = ()

    def configure_optimizers(self):
        if self.hparams.get("optimizer_states", "shared") == "per_loss":
            return [make_adam(self.parameters(), self.hparams.lr) for _ in self.step_names]
        return make_adam(self.parameters(), self.hparams.lr)  # fused: takes the device-side skip flag

    def on_train_start(self) -> None:
        """Train at ``hparams.lr``: a run resumed with ``--ckpt_path`` restores the optimiser's state
        with the learning rate it was saved with, so a new ``model.lr`` given with the checkpoint (to
        continue at a lower rate: a step schedule by resuming) would otherwise be dropped silently."""
        lr = float(self.hparams.lr)
        restored = {g["lr"] for opt in self.trainer.optimizers for g in opt.param_groups if g["lr"] != lr}
        if not restored:
            return
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        old = ", ".join(f"{v:g}" for v in sorted(restored))
        rank_zero_warn(f"model.lr {lr:g} replaces the learning rate restored with the optimiser's state ({old})")

    # ----------------------------------------------------------------------------- checkpoints
    @property
    def nonfinite_steps(self) -> int:
        """Optimiser steps skipped so far because a loss or gradient was not finite (host read)."""
        return self.guard.total_steps()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.aug_generator.get_state()
        entry = {"aug_generator": state, **self.guard.state_dict()}
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank's stream (this hook runs on all ranks)
            gathered = trainer.strategy.all_gather(state.to(self.device))
            entry["aug_generators"] = [g.cpu() for g in gathered.reshape(trainer.world_size, -1)]
        checkpoint[CHECKPOINT_KEY] = entry

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            state = next((checkpoint[k] for k in LEGACY_CHECKPOINT_KEYS if k in checkpoint), {})
        self.guard.load_state_dict(state)
        per_rank = state.get("aug_generators") or []
        if self.global_rank < len(per_rank):  # this rank's own stream
            self.aug_generator.set_state(per_rank[self.global_rank].to(torch.uint8))
        elif "aug_generator" in state:
            self.aug_generator.set_state(state["aug_generator"])
            if self.global_rank > 0:  # a checkpoint of fewer processes: a distinct stream per rank
                self.aug_generator.manual_seed(int(torch.randint(2**62, (1,), generator=self.aug_generator))
                                               + RANK_SEED_STRIDE * self.global_rank)

    # ----------------------------------------------------------------------------- augmentation
    def augment(self, batch: Mapping[str, Any], groups: Sequence[Sequence[str]]) -> dict[str, Any]:
        """``batch`` with one random affine applied to the tensors named in ``groups``.

        One affine for the whole iteration; with the hyper-parameter ``affine_per_image`` one per
        group (drawn in group order). Keys starting with ``label`` are resampled with nearest
        neighbours, images bilinearly. Absent or ``None`` entries are skipped. Off with
        ``spatial_augment: false``.
        """
        out = dict(batch)
        if not self.hparams.spatial_augment:
            return out
        per_group = bool(self.hparams.get("affine_per_image", False))
        theta = None
        for group in groups:
            present = [k for k in group if out.get(k) is not None]
            if not present:
                continue
            if theta is None or per_group:
                first = out[present[0]]
                n = first.shape[0] if self.hparams.affine_per_sample else 1
                theta = draw_affine(self, first.device, batch=n, spatial_shape=first.shape[2:],
                                    spacing=_spacing_of(out, present[0]))
            for key in present:
                out[key] = apply_affine(out[key], theta, mode="nearest" if key.startswith("label") else "bilinear")
        return out

    # ----------------------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Check and augment a training batch; what :meth:`training_losses` receives."""
        return batch

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        """Yield ``(name, terms)`` per loss of the iteration; ``terms["total"]`` is minimised."""
        raise NotImplementedError

    def joint_step(self) -> bool:
        """Sum the iteration's losses into one optimiser step (``schedule: joint``)."""
        return self.hparams.get("schedule", "alternate") == "joint"

    def guarded_step(self, loss: torch.Tensor, name: str) -> torch.Tensor:
        """Backward + optimiser step unless the loss or the gradients are not finite (see
        :class:`~gemini_pl.modules.guard.NonFiniteGuard`); returns the device-side skip flag."""
        return self.guard.step(self, loss, name, optimizer=self.optimizer_for(name),
                               after_backward=self.after_backward_hook(name))

    def optimizer_for(self, name: str) -> Any:
        """The optimiser that steps the loss ``name`` (``None``: the module's only one)."""
        if self.hparams.get("optimizer_states", "shared") != "per_loss":
            return None
        return self.optimizers()[self.step_names.index(name)]

    def after_backward_hook(self, name: str) -> Any:
        """A callable run between the backward pass of loss ``name`` and its step, or ``None``."""
        return None

    def step_diagnostics(self) -> dict[str, torch.Tensor]:
        """Extra values to log for this iteration (called after its optimiser steps)."""
        return {}

    def watch_logged(self, logs: Mapping[str, Any]) -> None:
        """Called with the iteration's logged values on the iterations the loggers write."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if at_log_step(self._trainer, batch_idx):
            self.guard.check(self)

    def on_train_epoch_end(self) -> None:
        self.guard.check(self)

    #: whether the current training iteration is one the loggers write (diagnostics such as the
    #: feature similarity are computed only then; True outside a fit)
    logging_step: bool = True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        n = _batch_size(batch)
        self.logging_step = at_log_step(self._trainer, batch_idx)
        batch = self.prepare_batch(batch)
        logs: dict[str, torch.Tensor] = {}
        first: torch.Tensor | None = None
        if self.joint_step():
            losses = list(self.training_losses(batch))
            self.guarded_step(sum(terms["total"] for _, terms in losses), "joint")
        else:
            losses = []
            for name, terms in self.training_losses(batch):
                self.guarded_step(terms["total"], name)
                losses.append((name, terms))
        log_now, self.logging_step = self.logging_step, True
        for name, terms in losses:
            first = terms["total"] if first is None else first
            logs.update({f"train/{name}/{k}": v.detach() for k, v in terms.items() if torch.is_tensor(v)})
            logs.update({f"train/{name}/{k}": float(v) for k, v in terms.items() if not torch.is_tensor(v)})
        logs.update(self.step_diagnostics())
        logs["train/nonfinite_steps"] = self.guard.total
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)
        if log_now:
            self.watch_logged(logs)
        if first is not None and log_now:  # host read only at the cadence (decided before the optimiser steps)
            self.log("loss", first.detach(), prog_bar=True, on_step=True, batch_size=n, logger=False)


def _spacing_of(batch: Mapping[str, Any], key: str) -> torch.Tensor | None:
    """The voxel spacing of ``batch[key]``: ``spacing_<suffix>`` (``image_a`` → ``spacing_a``), else ``spacing``."""
    suffix = key.split("_", 1)[1] if "_" in key else None
    value = batch.get(f"spacing_{suffix}") if suffix else None
    value = batch.get("spacing") if value is None else value
    return value if torch.is_tensor(value) else None


def _batch_size(batch: Mapping[str, Any]) -> int:
    for key in ("image_a", "image"):
        value = batch.get(key)
        if torch.is_tensor(value):
            return int(value.shape[0])
    return 1
