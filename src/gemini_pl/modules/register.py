"""Registration transfer: the GEMINI deformer on top of the backbone, fine-tuned for pairwise registration.

φ = D([N(x_moving), N(x_fixed)]) warps the moving image onto the fixed one (docs/METHOD.md §2, §6).
Trained with the registration loss of :mod:`gemini_pl.losses.registration` (masked local NCC, the
GVS term, + ``λ_smooth``·smoothness) in both directions, and optionally ``λ_dice``·(1 − soft Dice)
of the warped moving labels against the fixed labels when the training pairs carry labels.
Initialised like :class:`~gemini_pl.modules.Segmentation` (``init_from``: the backbone and the
deformer must fit).

Beyond the paper: ``integration_steps > 0`` reads the deformer output as a stationary velocity
field and integrates it by scaling and squaring (:func:`~gemini_pl.spatial.integrate_velocity`),
trading a little accuracy for near-zero folding; ``smoother: bending``, ``lambda_inverse`` and
``lambda_jacobian`` are the other switches of the deformation model shared with GEMINI's DHL
(:class:`~gemini_pl.modules.GeminiBase`), logged as ``train/reg/{inverse,neg_jacobian}`` when on.

Batches. Training: unlabeled pairs ``{"image_a", "image_b"}`` (``train_mode: pairs``; labels
``label_a``/``label_b`` are used when present), and/or a labeled batch ``{"image", "label"}``
(``pairs+labeled`` / ``labeled``), whose cases are paired with the next one in the batch
(i → i+1 mod B); logged as ``train/reg/{ncc,smooth,dice,total}``. Evaluation:
:class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..losses import registration_terms, regulariser, soft_dice_loss, topology_terms
from ..metrics import one_hot_labels
from ..spatial import compose, warp
from .core import GeminiModule, Losses, check_label_kind
from .reg_eval import RegistrationEvaluation, check_cascade, check_deformation_model
from .transfer import InitFromCheckpoint, freeze

__all__ = ["Registration"]

PAIR_KEYS = ("moving", "fixed", "label_m", "label_f")


class Registration(InitFromCheckpoint, RegistrationEvaluation, GeminiModule):
    """Pairwise deformable registration with the GEMINI backbone + deformer.

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`'s ``in_channels``, ``widths``,
    ``deformer_widths`` (both must match ``init_from``), ``lr``, ``rotation``, ``scale_range``,
    ``per_axis_scale``, ``max_consecutive_nonfinite``, ``aug_seed``):
        spatial_dims: 2 or 3 (linked from the data by the CLI).
        num_classes: label classes with the background (multiclass) or label channels
            (multilabel) for the Dice metrics; ``None``: the data module's (linked by the CLI).
        label_kind: ``"auto"`` (the data module's), ``"multiclass"`` or ``"multilabel"``.
        init_from: weight file (gemini-pl checkpoint, official ``.pth`` or GeminiNet state_dict);
            backbone and deformer are copied.
        init_exclude: key prefixes (network names) not copied from ``init_from`` (e.g. ``["backbone.up"]``).
        freeze_backbone: train the deformer only.
        lambda_smooth: smoothness weight (0.4 as in GEMINI's DHL).
        lambda_dice: weight of the auxiliary label Dice term (0: unsupervised).
        ncc_window: LNCC window per axis.
        sampling: ``"exact"`` or ``"legacy"`` warps (the published align_corners quirk).
        ncc_eps_per_voxel: LNCC denominator variant (see :func:`~gemini_pl.losses.masked_lncc`).
        bidirectional: train on φ_AB and φ_BA (one deformer, inputs swapped), as GEMINI does.
        integration_steps: 0 = displacement (published); > 0 = velocity integrated with this many
            scaling-and-squaring steps (7 is the usual choice).
        smoother: ``"gradient"`` (published) or ``"bending"`` (bending energy) as ``smooth``.
        lambda_inverse: weight of the inverse-consistency term (needs ``bidirectional``).
        lambda_jacobian: weight of the penalty on non-positive Jacobian determinants.
        pyramid_levels, refine_steps, refine_lr, refine_grid, refine_sigma, refine_levels, cascade_passes,
        cascade_levels:
            coarse-to-fine deformation, test-time instance optimisation and network passes, see
            :class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation`.
        train_cascade_passes: network passes per pair in training (1: one pass, as published); K > 1
            trains the network as a recursive cascade of K passes end to end (Zhao et al., ICCV 2019):
            the losses of the composed map, the smoothness of every pass's field
            (:meth:`training_flows`); about K times the step's cost. Evaluation applies
            ``cascade_passes`` passes, set on its own.
        spatial_augment: one random affine per iteration for every image and label of a pair (it
            does not change the pair's relative deformation; off by default).
        roi_size, sw_batch_size, sw_overlap: sliding-window evaluation of large volumes (default
            window: the data module's ``patch_size`` in 3D).
    """

    init_parts = ("backbone", "deformer")
    network_parts = ("backbone", "deformer")

    def __init__(
        self,
        spatial_dims: int = 3,
        num_classes: int | None = None,
        label_kind: Literal["auto", "multiclass", "multilabel"] | None = "auto",
        init_from: str | None = None,
        init_exclude: Sequence[str] = (),
        freeze_backbone: bool = False,
        lambda_smooth: float = 0.4,
        lambda_dice: float = 0.0,
        ncc_window: int = 9,
        sampling: Literal["exact", "legacy"] = "exact",
        ncc_eps_per_voxel: bool = True,
        bidirectional: bool = True,
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
        train_cascade_passes: int = 1,
        spatial_augment: bool = False,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.5,
        **kwargs: Any,
    ):
        check_deformation_model(integration_steps, smoother, lambda_inverse, lambda_jacobian, pyramid_levels,
                                refine_steps, refine_lr, refine_grid, refine_sigma, refine_levels, cascade_passes,
                                cascade_levels)
        check_cascade(train_cascade_passes, "train_cascade_passes")
        if lambda_inverse > 0 and not bidirectional:
            raise ConfigError("model.lambda_inverse > 0 needs model.bidirectional: true (the term compares both directions)")
        kind = check_label_kind(label_kind)
        super().__init__(spatial_dims=spatial_dims, num_classes=num_classes, label_kind=label_kind,
                         spatial_augment=spatial_augment, **kwargs)
        self.label_kind = "multiclass" if kind == "auto" else kind
        self.roi_size = list(roi_size) if roi_size is not None else None

    # ---------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.label_kind = self.data_label_kind()
        self.roi_size = self.sliding_window()
        if self.hparams.freeze_backbone:
            freeze(self.net.backbone)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self.flow(moving, fixed)

    # ---------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch's registration pairs as ``{"pairs": [{"moving", "fixed", "label_m", "label_f"}, ...]}``,
        each augmented with one random affine."""
        pairs = []
        if "image_a" in batch:
            pairs.append(dict(zip(PAIR_KEYS, (batch["image_a"], batch["image_b"], batch.get("label_a"), batch.get("label_b")))))
        if "image" in batch and batch["image"].shape[0] >= 2:
            img, lab = batch["image"], batch.get("label")
            roll = lambda t: None if t is None else torch.roll(t, -1, dims=0)  # noqa: E731
            pairs.append(dict(zip(PAIR_KEYS, (img, roll(img), lab, roll(lab)))))
        if not pairs:
            raise ConfigError(
                f"Registration trains on pairs {{'image_a', 'image_b'}} or on labeled batches of at least 2 cases, got "
                f"keys {sorted(batch)} (batch size {batch['image'].shape[0] if 'image' in batch else 0}); "
                "set data.train_mode: pairs (or labeled with labeled_batch_size >= 2)"
            )
        return {"pairs": [self.augment(p, [PAIR_KEYS]) for p in pairs]}

    def label_classes(self, *labels: torch.Tensor) -> int:
        """The number of label channels: ``model.num_classes``, else the data module's (both known
        without reading a tensor), else one more than the largest value among ``labels`` (a host
        read, the same count for every label given, so that a pair's one-hot maps match)."""
        k = self.hparams.num_classes
        if k is None and self.datamodule is not None:
            k = getattr(self.datamodule, "num_classes", None)
        if k is None:
            k = int(torch.stack([t.max() for t in labels]).max()) + 1
        return max(int(k), 2)

    def _label_onehot(self, label: torch.Tensor, classes: int | None = None) -> torch.Tensor:
        """``(B, 1, *S)`` integer labels → ``(B, K, *S)`` one-hot (multilabel: the channels as floats);
        ``classes``: K (default :meth:`label_classes` of this label alone)."""
        if self.label_kind == "multilabel":
            return label.float()
        return one_hot_labels(label, classes if classes is not None else self.label_classes(label))

    def training_flows(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """The training maps of one pair: ``(flows, fields)``, one entry per direction (moving → fixed,
        then, with ``bidirectional``, fixed → moving).

        ``flows[d]`` (N, ndim, *S) is the displacement of direction d; ``fields[d]`` lists the
        displacement each network pass predicted. With ``train_cascade_passes = K > 1`` the network
        is a recursive cascade trained end to end: pass k registers the source warped by the
        composed map of passes 1…k−1 onto the target, φ ← compose(φ, φ_k) (T = T₁ ∘ … ∘ T_K, the
        map of :meth:`register` with ``cascade_passes = K``), gradients flowing through the warps
        into the earlier passes. K = 1: ``fields[d] == [flows[d]]``, the published single pass.
        """
        hp = self.hparams
        f_m, f_f = self.net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        flows = list(self.displacements(f_m, f_f, both_ways=hp.bidirectional))
        fields = [[phi] for phi in flows]
        passes = int(hp.get("train_cascade_passes", 1))
        if passes == 1:
            return flows, fields
        sources, targets = [moving, fixed][:len(flows)], torch.cat([f_f, f_m][:len(flows)], 0)
        for _ in range(passes - 1):  # all directions in one network call
            phi = torch.cat(flows, 0)
            f_w = self.net.features(warp(torch.cat(sources, 0), phi, sampling=hp.sampling))
            step = self.displacements(f_w, targets)[0]
            flows = list(compose(phi, step, sampling=hp.sampling).chunk(len(sources), 0))
            for d, part in enumerate(step.chunk(len(sources), 0)):
                fields[d].append(part)
        return flows, fields

    def pair_loss(self, moving, fixed, label_m=None, label_f=None) -> dict[str, torch.Tensor]:
        """``{"ncc", "smooth", ["dice"], ["inverse"], ["neg_jacobian"], "total"}`` of one pair, summed over
        both directions: the NCC, Dice and topology terms of each direction's map, the smoothness of
        every network pass's field (:meth:`training_flows`)."""
        hp = self.hparams
        flows, fields = self.training_flows(moving, fixed)
        sets = [(moving, fixed, label_m, label_f, flows[0])]
        if hp.bidirectional:
            sets.append((fixed, moving, label_f, label_m, flows[1]))
        terms = {"ncc": moving.new_zeros(()), "smooth": moving.new_zeros(())}
        use_dice = hp.lambda_dice > 0 and label_m is not None and label_f is not None
        if use_dice:
            terms["dice"] = moving.new_zeros(())
        for (m, f, lm, lf, flow), passes in zip(sets, fields):
            one = registration_terms(m, f, flow, hp.ncc_window, hp.sampling, hp.ncc_eps_per_voxel, hp.smoother)
            terms["ncc"] = terms["ncc"] + one["ncc"]
            smooth = one["smooth"] if len(passes) == 1 else sum(regulariser(phi, hp.smoother) for phi in passes)
            terms["smooth"] = terms["smooth"] + smooth
            if use_dice:
                k = self.label_classes(lm, lf)
                wm, yf = warp(self._label_onehot(lm, k), flow, sampling=hp.sampling), self._label_onehot(lf, k)
                sl = slice(1, None) if self.label_kind == "multiclass" else slice(None)
                terms["dice"] = terms["dice"] + soft_dice_loss(wm[:, sl], yf[:, sl])
        total = terms["ncc"] + hp.lambda_smooth * terms["smooth"]
        if use_dice:
            total = total + hp.lambda_dice * terms["dice"]
        extra, extra_total = topology_terms(sets[0][4], sets[1][4] if len(sets) > 1 else None,
                                            hp.lambda_inverse, hp.lambda_jacobian, hp.sampling)
        if extra:
            terms.update(extra)
            total = total + extra_total
        terms["total"] = total
        return terms

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        pairs = batch["pairs"]
        sums: dict[str, torch.Tensor] = {}
        for p in pairs:
            for k, v in self.pair_loss(*(p[key] for key in PAIR_KEYS)).items():
                sums[k] = sums.get(k, 0) + v / len(pairs)
        yield "reg", sums
