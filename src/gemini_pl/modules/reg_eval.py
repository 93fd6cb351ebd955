"""The one registration path of every module with a deformer: the field, the warp, the metrics.

:class:`RegistrationEvaluation` is a mixin for :class:`~gemini_pl.modules.core.GeminiModule`
subclasses whose network has a deformer (``GeminiPretrain``, ``GeminiSemi``, ``Registration``,
``VMAtlas``). φ = D([N(x_moving), N(x_fixed)]) warps the moving image onto the fixed one
(docs/METHOD.md §2, §6); with the hyper-parameter ``integration_steps > 0`` the deformer output is
a stationary velocity field integrated by scaling and squaring.

Evaluation batches are labeled pairs ``{"image_a", "image_b", "label_a", "label_b", "name_a",
"name_b"}`` (``data.eval_mode: pairs``), A moving onto B fixed. Logged keys (the same in every
module): ``val/reg_dice`` (Dice of the warped moving labels, nearest, against the fixed labels),
``val/reg_dice_unwarped`` (the same without warping), ``val/folding_percent``, ``val/sdlogj``, and
their ``test/`` counterparts plus ``test/reg_hd95`` — in physical units when the batch carries
the fixed image's spacing (``spacing_b``, ``meta_b``, ``spacing`` or ``meta``), otherwise
``test/reg_hd95_vox`` in voxels. Per-case test rows: ``case``, ``dice``, ``dice_unwarped``,
``hd95``/``hd95_vox``, ``folding``, ``sdlogj``.

The label classes come from the host's ``num_classes`` (hyper-parameter, else the data module's);
without either, from the largest label of the first evaluation batch (the maximum over DDP ranks).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch

from ..errors import ConfigError
from ..inference import needs_windows, register_windows
from ..losses import SMOOTHERS
from ..metrics import DiceScore, FoldingPercent, HausdorffDistance95, SDLogJ
from ..refinement import RefineObjective, check_refinement, refine_flow
from ..spatial import compose, integrate_velocity, warp
from ..spatial.pyramid import coarse_to_fine, feature_pyramid, pyramid_shapes
from .batches import case_names, case_spacing
from .seg_eval import nanmean

log = logging.getLogger(__name__)

__all__ = ["RegistrationEvaluation", "check_cascade", "check_cascade_levels", "check_deformation_model"]

#: metrics of the field itself, logged as ``<stage>/<name>`` (no labels needed)
_FIELD_METRICS = ("folding_percent", "sdlogj")


def check_deformation_model(integration_steps: int = 0, smoother: str = "gradient", lambda_inverse: float = 0.0,
                            lambda_jacobian: float = 0.0, pyramid_levels: int = 1, refine_steps: int = 0,
                            refine_lr: float = 0.5, refine_grid: int = 2, refine_sigma: float = 1.0,
                            refine_levels: int = 1, cascade_passes: int = 1, cascade_levels: int | None = None) -> None:
    """One-line :class:`ConfigError` naming the setting when a deformation-model switch is invalid."""
    check_cascade(cascade_passes)
    check_cascade_levels(cascade_levels)
    if int(pyramid_levels) != pyramid_levels or pyramid_levels < 1:
        raise ConfigError(f"model.pyramid_levels must be an integer >= 1 (1 = the published single level), got {pyramid_levels}")
    check_refinement(refine_steps, refine_lr, refine_grid, refine_sigma, refine_levels)
    if int(integration_steps) != integration_steps or integration_steps < 0:
        raise ConfigError(f"model.integration_steps must be an integer >= 0, got {integration_steps}")
    if smoother not in SMOOTHERS:
        raise ConfigError(f"model.smoother must be one of {SMOOTHERS}, got {smoother!r}")
    for name, value in (("lambda_inverse", lambda_inverse), ("lambda_jacobian", lambda_jacobian)):
        if not value >= 0:
            raise ConfigError(f"model.{name} must be >= 0, got {value}")


def check_cascade_levels(levels: int | None) -> None:
    """One-line :class:`ConfigError` when ``model.cascade_levels`` is neither null nor an integer >= 1."""
    if levels is not None and (isinstance(levels, bool) or int(levels) != levels or levels < 1):
        raise ConfigError("model.cascade_levels must be null (the pyramid_levels of the first pass) or an integer >= 1 "
                          f"(pyramid levels of every pass after the first), got {levels}")


def check_cascade(passes: int, name: str = "cascade_passes") -> None:
    """One-line :class:`ConfigError` when ``model.<name>`` (network passes) is not an integer >= 1."""
    if isinstance(passes, bool) or int(passes) != passes or passes < 1:
        raise ConfigError(f"model.{name} must be an integer >= 1 (1 = one network pass), got {passes}")


class RegistrationEvaluation:
    """Mixin: registration of whole images, warped labels, and the registration metric objects.

    Hyper-parameters it reads (declared by the modules with a deformer, ``GeminiBase`` and
    ``Registration``; defaults in brackets):

        integration_steps [0]: 0 = the deformer outputs a displacement; n > 0 = a velocity
            integrated by n scaling-and-squaring steps.
        pyramid_levels [1]: 1 = the published single-level deformer; n > 1 = the same deformer run
            coarse to fine on n resolutions of the features, each level refining the field of the
            coarser one (:mod:`gemini_pl.spatial.pyramid`): a capture range that grows with the image.
        refine_steps [0]: 0 = off; n > 0 = every evaluation (val, test, predict,
            ``gemini-pl register``) refines the network's field per pair with n Adam steps on the
            training objective (:mod:`gemini_pl.refinement`), with ``refine_lr`` [0.5] (voxels of
            the coarse grid per step), ``refine_grid`` [2] (the residual velocity's grid is this
            many times coarser per axis), ``refine_sigma`` [1.0] (its Gaussian smoothing, in
            voxels of that grid) and ``refine_levels`` [1] (image resolutions the steps are shared
            between, coarsest first: :func:`~gemini_pl.refinement.refine_flow`).
        cascade_passes [1]: 1 = one network pass; n > 1 = every evaluation applies the network n
            times, each pass registering the moving image warped by the fields so far onto the fixed
            one, the maps composed as T₁ ∘ T₂ ∘ … (a recursive cascade of the one trained network;
            Zhao et al., ICCV 2019, found cascades can be deepened at test time): n times the
            network's cost, before any refinement.
        cascade_levels [null]: pyramid levels of every pass after the first (null: ``pyramid_levels``);
            fewer levels make those passes cheaper (each level dropped saves the coarsest deformer
            call), the first pass keeping the full capture range; more run levels the network was
            not trained on. Evaluation only: ``train_cascade_passes`` trains every pass on
            ``pyramid_levels``.
    """

    result_units = {"dice": "%", "dice_unwarped": "%", "folding": "%", "sdlogj": "", "hd95": "mm", "hd95_vox": "voxels"}

    # ---------------------------------------------------------------- the field
    def to_displacement(self, out: torch.Tensor) -> torch.Tensor:
        """The deformer output as a displacement (integrated when it is a velocity)."""
        steps = int(self.hparams.get("integration_steps", 0))
        return integrate_velocity(out, steps, sampling=self.hparams.sampling) if steps else out

    def deformer_outputs(self, f_moving: torch.Tensor, f_fixed: torch.Tensor | list[torch.Tensor],
                         both_ways: bool = False, levels: int | None = None) -> tuple[torch.Tensor, ...]:
        """The deformer's outputs (velocity or displacement) for features (N, C, *S) of the moving and
        fixed images: ``(out_mf,)``, or ``(out_mf, out_fm)`` with ``both_ways`` (one deformer call on
        both orders). With the hyper-parameter ``pyramid_levels > 1``, coarse to fine
        (:func:`~gemini_pl.spatial.pyramid.coarse_to_fine`); ``levels`` overrides that count.
        ``f_fixed`` may also be the fixed features' levels (:func:`~gemini_pl.spatial.pyramid.feature_pyramid`,
        finest first, at least ``levels`` of them)."""
        levels = self.first_levels() if levels is None else int(levels)
        if levels == 1:
            f_fixed = f_fixed if torch.is_tensor(f_fixed) else f_fixed[0]
            return self.net.flows_both_ways(f_moving, f_fixed) if both_ways else (self.net.flow(f_moving, f_fixed),)
        f_fixed = f_fixed if torch.is_tensor(f_fixed) else f_fixed[:levels]
        out = coarse_to_fine(self.net.deformer, f_moving, f_fixed, levels, self.to_displacement,
                             velocity=int(self.hparams.get("integration_steps", 0)) > 0, sampling=self.hparams.sampling,
                             both_ways=both_ways)
        return out.chunk(2, 0) if both_ways else (out,)

    def displacements(self, f_moving: torch.Tensor, f_fixed: torch.Tensor | list[torch.Tensor],
                      both_ways: bool = False, levels: int | None = None) -> tuple[torch.Tensor, ...]:
        """:meth:`deformer_outputs` as displacements: ``(φ_mf,)`` or ``(φ_mf, φ_fm)``."""
        return tuple(self.to_displacement(out) for out in self.deformer_outputs(f_moving, f_fixed, both_ways, levels))

    #: ``(fixed, levels of N(fixed))`` while :meth:`register` runs several passes on whole images:
    #: the fixed image's features resampled to each pyramid level, computed once per
    #: pair instead of once per pass
    _fixed_features: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def flow(self, moving: torch.Tensor, fixed: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """φ warping ``moving`` onto ``fixed`` (N, ndim, *S): one backbone call on both images (on
        ``moving`` alone when :meth:`register` holds this ``fixed`` tensor's features); ``levels``:
        pyramid levels (default ``pyramid_levels``)."""
        cached = self._fixed_features
        if cached is not None and cached[0] is fixed:
            return self.displacements(self.net.features(moving), cached[1], levels=levels)[0]
        f_m, f_f = self.net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        return self.displacements(f_m, f_f, levels=levels)[0]

    def refine_objective(self) -> RefineObjective:
        """The training objective of one direction as configured (the instance optimisation's)."""
        hp = self.hparams
        return RefineObjective(window=hp.get("ncc_window", 9), lambda_smooth=hp.get("lambda_smooth", 0.4),
                               smoother=hp.get("smoother", "gradient"), lambda_jacobian=hp.get("lambda_jacobian", 0.0),
                               sampling=hp.get("sampling", "exact"), eps_per_voxel=hp.get("ncc_eps_per_voxel", True))

    def refine_settings(self) -> dict[str, Any]:
        """``{"steps", "lr", "grid", "sigma", "levels"}`` of the instance optimisation: the module's
        hyper-parameters, else the defaults (modules without them, older checkpoints)."""
        hp = self.hparams
        return {"steps": int(hp.get("refine_steps", 0)), "lr": hp.get("refine_lr", 0.5),
                "grid": hp.get("refine_grid", 2), "sigma": hp.get("refine_sigma", 1.0), "levels": hp.get("refine_levels", 1)}

    def set_refinement(self, steps: int, lr: float | None = None, grid: int | None = None,
                       sigma: float | None = None, levels: int | None = None) -> None:
        """Switch the test-time instance optimisation of :meth:`register` on (``steps > 0``) or off;
        the settings not given keep the module's."""
        given = {"steps": steps, "lr": lr, "grid": grid, "sigma": sigma, "levels": levels}
        s = {k: v if given[k] is None else given[k] for k, v in self.refine_settings().items()}
        check_refinement(s["steps"], s["lr"], s["grid"], s["sigma"], s["levels"])
        self.hparams.update(refine_steps=int(s["steps"]), refine_lr=float(s["lr"]), refine_grid=int(s["grid"]),
                            refine_sigma=float(s["sigma"]), refine_levels=int(s["levels"]))

    def cascade(self) -> int:
        """Network passes of every evaluation: the hyper-parameter ``cascade_passes``, else 1
        (modules without it, older checkpoints)."""
        return int(self.hparams.get("cascade_passes", 1))

    def set_cascade(self, passes: int, levels: int | None = None) -> None:
        """Network passes of every evaluation (the hyper-parameter ``cascade_passes``; 1 = one pass);
        ``levels``: pyramid levels of the passes after the first (``cascade_levels``; None keeps the
        module's)."""
        check_cascade(passes)
        check_cascade_levels(levels)
        self.hparams.update(cascade_passes=int(passes))
        if levels is not None:
            self.hparams.update(cascade_levels=int(levels))

    def first_levels(self) -> int:
        """Pyramid levels of the deformer (of the first pass): the hyper-parameter ``pyramid_levels``,
        else 1 (modules without it, older checkpoints)."""
        return int(self.hparams.get("pyramid_levels", 1))

    def later_levels(self) -> int:
        """Pyramid levels of the passes after the first: ``cascade_levels``, else :meth:`first_levels`."""
        levels = self.hparams.get("cascade_levels")
        return self.first_levels() if levels is None else int(levels)

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """φ for whole images, by sliding windows when they exceed ``roi_size``; with the
        hyper-parameter ``cascade_passes > 1``, that many network passes composed (the passes after
        the first with ``cascade_levels`` pyramid levels); then, with ``refine_steps > 0``, refined
        for this pair (:func:`~gemini_pl.refinement.refine_flow`)."""
        hp = self.hparams
        roi = getattr(self, "roi_size", None)
        first, later = self.first_levels(), self.later_levels()

        def one_pass(m: torch.Tensor, levels: int) -> torch.Tensor:
            return register_windows(functools.partial(self.flow, levels=levels), m, fixed, roi,
                                    hp.get("sw_batch_size", 1), hp.get("sw_overlap", 0.5))

        if self.cascade() > 1 and not needs_windows(moving.shape[2:], roi):  # every pass onto the same fixed image
            f_fixed = self.net.features(fixed)
            self._fixed_features = (fixed, feature_pyramid(f_fixed, pyramid_shapes(f_fixed.shape[2:], max(first, later))))
        try:
            flow = one_pass(moving, first)
            for _ in range(self.cascade() - 1):  # T = T_1 ∘ T_2 ∘ ... (each pass reads the last warp)
                flow = compose(flow, one_pass(warp(moving, flow, sampling=hp.sampling), later), sampling=hp.sampling)
        finally:
            self._fixed_features = None
        s = self.refine_settings()
        if s["steps"] > 0:
            start = time.perf_counter()
            flow = refine_flow(moving, fixed, flow, s["steps"], s["lr"], s["grid"], self.refine_objective(), sigma=s["sigma"],
                               levels=s["levels"])
            self.last_refine_seconds = time.perf_counter() - start  # what the refinement of this call cost
        return flow

    def register_pair(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Register A (moving) onto B (fixed): flow, warped image and (with labels) warped label."""
        moving, fixed = batch["image_a"], batch["image_b"]
        flow = self.register(moving, fixed)
        out = {"flow": flow, "warped_image": warp(moving, flow, sampling=self.hparams.sampling)}
        if batch.get("label_a") is not None:
            out["warped_label"] = warp(batch["label_a"], flow, mode="nearest", sampling=self.hparams.sampling)
        return out

    # ---------------------------------------------------------------- metrics
    def reg_label_kind(self) -> str:
        """The label kind of the evaluation labels: the module's, else the data's, else multiclass."""
        return getattr(self, "label_kind", None) or self.data_label_kind()

    def _reg_classes(self, batch: dict[str, Any]) -> int | None:
        k = self.hparams.get("num_classes")
        if k is None and self.datamodule is not None:
            k = getattr(self.datamodule, "num_classes", None)
        if k is not None or batch.get("label_a") is None:
            return k
        if self.reg_label_kind() == "multilabel":
            return int(batch["label_a"].shape[1])
        top = torch.maximum(batch["label_a"].max(), batch["label_b"].max()).float()
        if self._trainer is not None:  # every rank builds the same metrics
            top = self.trainer.strategy.reduce(top, reduce_op="max")
        log.warning("%s: num_classes not set; using %d from the first evaluation batch", type(self).__name__, int(top) + 1)
        return int(top) + 1

    def _ensure_reg_metrics(self, batch: dict[str, Any]) -> None:
        if getattr(self, "reg_metrics", None) is not None:
            return
        k = self._reg_classes(batch)
        kind = self.reg_label_kind()
        metrics: dict[str, torch.nn.Module] = {}
        for stage in ("val", "test"):
            metrics[f"{stage}_folding_percent"] = FoldingPercent()
            metrics[f"{stage}_sdlogj"] = SDLogJ()
            if k is not None:
                metrics[f"{stage}_reg_dice"] = DiceScore(num_classes=int(k), label_kind=kind)
                metrics[f"{stage}_reg_dice_unwarped"] = DiceScore(num_classes=int(k), label_kind=kind)
        if k is not None:
            metrics["test_reg_hd95"] = HausdorffDistance95(num_classes=int(k), label_kind=kind)
        self.reg_metrics = torch.nn.ModuleDict(metrics).to(self.device)

    # ---------------------------------------------------------------- steps
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.reg_eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.reg_eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.reg_predict_step(batch)

    def reg_eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any] | None:
        """Register the pairs, update and log the metrics; test returns per-case rows."""
        self._ensure_reg_metrics(batch)
        out = self.register_pair(batch)
        flow = out["flow"]
        n = flow.shape[0]
        m = self.reg_metrics
        for key in _FIELD_METRICS:
            m[f"{stage}_{key}"].update(flow)
            self.log(f"{stage}/{key}", m[f"{stage}_{key}"], on_step=False, on_epoch=True, batch_size=n)
        has_labels = "warped_label" in out and f"{stage}_reg_dice" in m
        spacing = case_spacing(batch, keys=("spacing_b", "spacing"), meta_keys=("meta_b", "meta"))
        if has_labels:
            m[f"{stage}_reg_dice"].update(out["warped_label"], batch["label_b"])
            m[f"{stage}_reg_dice_unwarped"].update(batch["label_a"], batch["label_b"])
            self.log(f"{stage}/reg_dice", m[f"{stage}_reg_dice"], on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
            self.log(f"{stage}/reg_dice_unwarped", m[f"{stage}_reg_dice_unwarped"], on_step=False, on_epoch=True, batch_size=n)
            if stage == "test":
                m["test_reg_hd95"].update(out["warped_label"], batch["label_b"], spacing)
                key = "test/reg_hd95" if spacing is not None else "test/reg_hd95_vox"
                self.log(key, m["test_reg_hd95"], on_step=False, on_epoch=True, batch_size=n)
        if stage == "val":
            return None
        names_a, names_b = case_names(batch, n, "name_a"), case_names(batch, n, "name_b")
        rows = []
        for i in range(n):
            row: dict[str, Any] = {"case": f"{names_a[i]}->{names_b[i]}"}
            if has_labels:
                row["dice"] = 100 * nanmean(m["test_reg_dice"].last[i].cpu())
                row["dice_unwarped"] = 100 * nanmean(m["test_reg_dice_unwarped"].last[i].cpu())
                # physical units only when the batch carries the fixed image's spacing
                row["hd95" if spacing is not None else "hd95_vox"] = nanmean(m["test_reg_hd95"].last[i].cpu())
            row["folding"] = float(m["test_folding_percent"].last[i, 0])
            row["sdlogj"] = float(m["test_sdlogj"].last[i, 0])
            rows.append(row)
        return {"cases": rows}

    def reg_predict_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Flow, warped image and warped label of each pair, named ``<a>_to_<b>``, on B's grid."""
        out = self.register_pair(batch)
        n = out["flow"].shape[0]
        names_a, names_b = case_names(batch, n, "name_a"), case_names(batch, n, "name_b")
        result = {
            "name": [f"{a}_to_{b}" for a, b in zip(names_a, names_b)],
            "meta": batch.get("meta_b", batch.get("meta")),
            "meta_a": batch.get("meta_a"),  # the moving array's geometry, when the batch has it (ITK fields)
            "flow": out["flow"],
            "warped_image": out["warped_image"],
        }
        if "warped_label" in out:
            wl = out["warped_label"]
            result["warped_label"] = wl if self.reg_label_kind() == "multilabel" else wl.to(torch.int16)
        return result
