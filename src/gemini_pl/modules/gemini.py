"""GEMINI's own step, shared by its two variants: DHL + GSS on an unlabeled pair (docs/METHOD.md §3-4).

:class:`GeminiBase` is :class:`~gemini_pl.modules.core.GeminiModule` with the deformer, the GEMINI
loss and the registration evaluation of held-out pairs; a variant adds its head loss in
:meth:`GeminiBase.head_loss` (restoration in ``GeminiPretrain``, segmentation in ``GeminiSemi``).
The published schedule then runs per iteration:

1. GEMINI loss on the pair → backward → Adam step → zero grads;
2. head loss → backward → Adam step → zero grads;

or, with ``schedule="joint"``, one step on the sum. Lightning's ``global_step`` counts optimiser
steps, so the published schedule advances it by 2 per iteration (1 with ``joint``); configs bound
training in epochs × iterations (``max_epochs`` × ``limit_train_batches``), as the paper does.

Training batches ``{"image_a", "image_b"}`` (N, C, *S) float in [0, 1], plus what the head needs;
logged terms ``train/gemini/{smooth,gvs,gss_pos,gss_align,gss,total}`` (plus ``inverse`` and
``neg_jacobian`` when their weights are on) and
``train/<head>/total``, and the diagnostic ``train/gemini/feature_similarity`` (mean cosine
similarity of the backbone features of A across voxel pairs: near 1 means collapsed features;
a warning is logged once when it stays above ``collapse_threshold`` for ``collapse_patience``
logging points in a row). With the two-step schedule the logging iterations also record
``train/gemini/grad_share`` and ``train/gemini/update_cosine`` (the GEMINI loss's share of the
backbone gradient, and the cosine between the GEMINI step's backbone update and the preceding
head step's; :mod:`gemini_pl.modules.diagnostics`). Evaluation: see
:class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..losses import GeminiWeights, gemini_loss
from ..metrics import feature_similarity
from .core import CHECKPOINT_KEY, GeminiModule, Losses
from .diagnostics import CollapseWatch, LossInfluence
from .reg_eval import RegistrationEvaluation, check_deformation_model

__all__ = ["GeminiBase"]


class GeminiBase(RegistrationEvaluation, GeminiModule):
    """GEMINI on unlabeled pairs plus a head loss supplied by the variant.

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`):
        schedule: ``"alternate"`` (published: two optimiser steps per iteration) or ``"joint"``.
        lambda_smooth: weight of the smoothness prior L_smo.
        lambda_gss: weight of the GSS term.
        lambda_gvs: weight of the GVS (masked LNCC) term.
        lambda_pos: weight of the positive-pair part of GSS.
        ncc_window: LNCC window per axis.
        sampling: ``"exact"`` warps (default) or ``"legacy"`` (the published align_corners quirk).
        ncc_eps_per_voxel: LNCC denominator Σ(M + 1e-6) (published 3D) or ΣM + 1e-5 (published 2D).
        affine_per_image: draw a separate affine for A and B (changes their relative deformation).
        collapse_threshold: warn (once per run) when ``train/gemini/feature_similarity`` stays
            above this value for ``collapse_patience`` logging points in a row (``None``: off).
        collapse_patience: that number of consecutive logging points.

    Balance of the two steps (beyond the paper; the defaults are the published recipe, README
    "Steering the GEMINI terms"):
        optimizer_states: ``"shared"`` (published: one Adam for both steps) or ``"per_loss"`` (one
            Adam per loss, so the head's moments do not set the GEMINI step's direction);
            needs ``schedule: alternate``.
        head_balance: ``None`` (published) or r > 0: scale the head loss in each iteration so its
            backbone gradient norm is r times the GEMINI loss's (logged
            ``train/<head>/balance_scale``); needs ``schedule: alternate``.

    Deformation model (beyond the paper; the defaults are the published DHL, README "Choosing a
    deformation model"):
        integration_steps: 0 = the deformer outputs a displacement (published); n > 0 = a
            stationary velocity field integrated by n scaling-and-squaring steps (7 is usual), in
            training and in the registration evaluation alike.
        smoother: ``"gradient"`` (published L2 gradient penalty) or ``"bending"`` (bending energy),
            weighted by ``lambda_smooth`` and logged as ``smooth``.
        lambda_inverse: weight of the inverse-consistency term ‖T_AB∘T_BA − id‖² + reverse
            (logged ``train/gemini/inverse`` when > 0).
        lambda_jacobian: weight of the penalty mean(max(0, −det J)) on both fields (logged
            ``train/gemini/neg_jacobian`` when > 0).
        pyramid_levels, refine_steps, refine_lr, refine_grid, refine_sigma, refine_levels, cascade_passes,
        cascade_levels:
            coarse-to-fine deformation, test-time instance optimisation and network passes, see
            :class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation`.
    """

    #: the name under which the head loss is stepped and logged (``train/<name>/...``)
    head_name = "head"

    def __init__(
        self,
        *args: Any,
        schedule: Literal["alternate", "joint"] = "alternate",
        lambda_smooth: float = 0.4,
        lambda_gss: float = 0.8,
        lambda_gvs: float = 1.0,
        lambda_pos: float = 0.1,
        ncc_window: int = 9,
        sampling: Literal["exact", "legacy"] = "exact",
        ncc_eps_per_voxel: bool = True,
        affine_per_image: bool = False,
        integration_steps: int = 0,
        smoother: Literal["gradient", "bending"] = "gradient",
        lambda_inverse: float = 0.0,
        lambda_jacobian: float = 0.0,
        pyramid_levels: int = 1,
        refine_steps: int = 0,
        refine_lr: float = 0.5,
        refine_grid: int = 2,
        refine_sigma: float = 1.0,
        refine_levels: int = 1,
        cascade_passes: int = 1,
        cascade_levels: int | None = None,
        collapse_threshold: float | None = 0.95,
        collapse_patience: int = 5,
        optimizer_states: Literal["shared", "per_loss"] = "shared",
        head_balance: float | None = None,
        **kwargs: Any,
    ):
        if schedule not in ("alternate", "joint"):
            raise ConfigError(f"model.schedule must be 'alternate' or 'joint', got {schedule!r}")
        if optimizer_states not in ("shared", "per_loss"):
            raise ConfigError(f"model.optimizer_states must be 'shared' or 'per_loss', got {optimizer_states!r}")
        if head_balance is not None and not (isinstance(head_balance, (int, float)) and 0 < head_balance < float("inf")):
            raise ConfigError(f"model.head_balance must be a positive number or null, got {head_balance!r}")
        if schedule == "joint" and (optimizer_states != "shared" or head_balance is not None):
            raise ConfigError("model.optimizer_states: per_loss and model.head_balance act on the two steps of "
                              "schedule: alternate; schedule: joint has one step")
        if collapse_threshold is not None and not 0 < collapse_threshold <= 1:
            raise ConfigError(f"model.collapse_threshold must be in (0, 1] or null, got {collapse_threshold!r}")
        if int(collapse_patience) < 1:
            raise ConfigError(f"model.collapse_patience must be >= 1, got {collapse_patience!r}")
        check_deformation_model(integration_steps, smoother, lambda_inverse, lambda_jacobian, pyramid_levels,
                                refine_steps, refine_lr, refine_grid, refine_sigma, refine_levels, cascade_passes,
                                cascade_levels)
        super().__init__(*args, **kwargs)
        self.weights = GeminiWeights(lambda_smooth, lambda_gss, lambda_gvs, lambda_pos, lambda_inverse, lambda_jacobian)
        self.influence = LossInfluence("gemini", self.head_name, head_balance)
        self.collapse = CollapseWatch(collapse_threshold, collapse_patience)

    # ----------------------------------------------------------------------------- pieces
    def gemini_terms(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """All GEMINI loss terms for a batch of pairs (one backbone and one deformer call)."""
        f_a, f_b = self.net.features(torch.cat([x_a, x_b], 0)).chunk(2, 0)
        flow_ab, flow_ba = self.displacements(f_a, f_b, both_ways=True)
        terms = gemini_loss(
            x_a, x_b, f_a, f_b, flow_ab, flow_ba, self.weights, window=self.hparams.ncc_window,
            sampling=self.hparams.sampling, eps_per_voxel=self.hparams.ncc_eps_per_voxel,
            smoother=self.hparams.smoother,
        )
        if self.logging_step:  # a diagnostic, not a loss term: computed when the loggers write
            terms["feature_similarity"] = feature_similarity(f_a.detach())
        return terms

    def head_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The variant's head loss on the prepared batch; returns a dict with at least ``"total"``."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One random affine for A and B (one each with ``affine_per_image``)."""
        return self.augment(batch, [("image_a",), ("image_b",)])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        yield "gemini", self.gemini_terms(batch["image_a"], batch["image_b"])
        yield self.head_name, self.head_loss(batch)

    # ----------------------------------------------------------------------------- the two steps
    @property
    def step_names(self) -> tuple[str, ...]:
        return ("gemini", self.head_name)

    def after_backward_hook(self, name: str) -> Any:
        if self.joint_step() or not self.influence.active(self.logging_step):
            return None
        measure = self.logging_step
        backbone = list(self.net.backbone.parameters())
        params = [p for p in self.parameters() if p.requires_grad]
        head_opt = self.optimizer_for(self.head_name) or self.optimizers()
        return lambda: self.influence.after_backward(name, backbone, params, head_opt.optimizer, measure)

    def step_diagnostics(self) -> dict[str, torch.Tensor]:
        return self.influence.pop_logs()

    def watch_logged(self, logs: Any) -> None:
        value = logs.get("train/gemini/feature_similarity")
        if torch.is_tensor(value):  # a host read at the logging cadence, where the loggers read anyway
            self.collapse.update(float(value), self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint.setdefault(CHECKPOINT_KEY, {}).update(self.collapse.state_dict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.collapse.load_state_dict(checkpoint.get(CHECKPOINT_KEY) or {})
