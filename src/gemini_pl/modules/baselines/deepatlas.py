"""DeepAtlas (Xu & Niethammer, MICCAI 2019): joint registration and segmentation.

One framework, one backbone: the segmentation head and the GEMINI deformer share the backbone.
Per iteration (one optimiser step on the sum):

* supervised segmentation of the labeled sample: ``λ_sp``·(CE + Dice) (``lambda_seg``);
* registration of the unlabeled pair A → B: masked local NCC + ``λ_smooth``·smoothness;
* registration of the labeled image L → unlabeled B, with the **anatomy-consistency** loss:
  soft Dice between the warped one-hot label of L and the segmentation of B
  (``λ_a``·(1 − Dice)) — it trains the deformer and the segmenter together, the
  segmenter learning on unlabeled images through the registration.

Weights relative to the image-similarity term (weight 1, ``lambda_unsup``): ``λ_sp = 3``,
``λ_a = 2`` — the DeepAtlas framework's as implemented in MONAI's DeepAtlas tutorial
(Project-MONAI/tutorials ``deep_atlas/deep_atlas_tutorial.ipynb``: ``lambda_a = 2.0  # anatomy
loss weight``, ``lambda_sp = 3.0  # supervised segmentation loss weight``, similarity weight 1;
uncbiag/DeepAtlas does not publish its joint training, "TODO" in its README). The regulariser is
the shared diffusion smoothness with the VM row's ``λ_smooth = 0.4`` (DeepAtlas: bending energy,
whose weight does not carry over). No ramp-up (DeepAtlas has none).

Simplified here (footnote of the Table II row): one shared GEMINI backbone for the segmentation and
the registration networks (DeepAtlas: two networks), trained jointly in one step per iteration
(DeepAtlas alternates the two networks, after pre-training each); the atlas is the labeled sample
and the target an unlabeled image (DeepAtlas also registers unlabeled pairs with the anatomy loss
on predicted segmentations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...losses import registration_terms, soft_dice_loss
from ...metrics import one_hot_labels
from ...nets import DEFAULT_DEFORMER_WIDTHS
from ...nets.deformer import Deformer
from ...spatial import warp
from .common import SemiSegmentation, probabilities

__all__ = ["DeepAtlas", "anatomy_loss"]


def anatomy_loss(warped_label: torch.Tensor, seg_prob: torch.Tensor, label_kind: str = "multiclass") -> torch.Tensor:
    """1 − soft Dice of a warped one-hot (or multi-label) label and a predicted probability map
    (foreground channels only for multiclass)."""
    sl = slice(1, None) if label_kind == "multiclass" else slice(None)
    return soft_dice_loss(seg_prob[:, sl], warped_label[:, sl])


class DeepAtlas(SemiSegmentation):
    """Joint registration + segmentation with the anatomy-consistency loss.

    Args (beyond :class:`~.common.SemiSegmentation`, whose ``lambda_unsup`` scales the
    registration terms and whose ``lambda_seg`` is λ_sp; defaults: see the module docstring):
        deformer_widths: the deformer's widths.
        lambda_smooth: smoothness weight (relative to the NCC).
        lambda_anatomy: weight λ_a of the anatomy-consistency loss (1 − Dice).
        ncc_window: LNCC window.
        sampling, ncc_eps_per_voxel: the warp and LNCC variants (see :class:`~gemini_pl.modules.Registration`).
    """

    def __init__(self, *args: Any, deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS, lambda_smooth: float = 0.4,
                 lambda_anatomy: float = 2.0, ncc_window: int = 9, sampling: Literal["exact", "legacy"] = "exact",
                 ncc_eps_per_voxel: bool = True, lambda_seg: float = 3.0, lambda_unsup: float = 1.0,
                 rampup_steps: int | None = 0, **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, lambda_unsup=lambda_unsup, rampup_steps=rampup_steps, **kwargs)
        self.net.deformer = Deformer(self.hparams.spatial_dims, self.net.backbone.out_channels, deformer_widths,
                                     flow_init=self.hparams.flow_init)

    def _register(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f_m, f_f = self.net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        flow = self.net.flow(f_m, f_f)
        hp = self.hparams
        return flow, registration_terms(moving, fixed, flow, hp.ncc_window, hp.sampling, hp.ncc_eps_per_voxel)

    def unsupervised_loss(self, unlabeled: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x_a, x_b = batch["image_a"], batch["image_b"]
        _, t1 = self._register(x_a, x_b)
        # the labeled image as the atlas, registered onto the unlabeled B
        image, label = batch["image"], batch["label"]
        n = min(image.shape[0], x_b.shape[0])
        image, label, fixed = image[:n], label[:n], x_b[:n]
        if image.shape[2:] != fixed.shape[2:]:
            return {"total": t1["ncc"] + hp.lambda_smooth * t1["smooth"], **t1}
        flow, t2 = self._register(image, fixed)
        y = label.float() if self.label_kind == "multilabel" else one_hot_labels(label, hp.num_classes)
        seg_b = probabilities(self.net(fixed), self.label_kind)
        ana = anatomy_loss(warp(y, flow, sampling=hp.sampling), seg_b, self.label_kind)
        reg = t1["ncc"] + t2["ncc"] + hp.lambda_smooth * (t1["smooth"] + t2["smooth"])
        return {"total": reg + hp.lambda_anatomy * ana, "ncc": t1["ncc"] + t2["ncc"], "anatomy": ana}
