"""VoxelMorph atlas label propagation (the "VM" row of Table II).

The registration network (:class:`~gemini_pl.modules.Registration`: backbone + deformer, masked
LNCC + smoothness, unsupervised) is trained on unlabeled pairs. A test case is segmented by
registering each labeled atlas (the few-shot labeled training images) onto it, warping the
atlases' labels (nearest) and fusing them by majority vote (ties: the lower class). Evaluation is
the segmentation evaluation of the other rows (Dice, AVD, HD95 per case; ``eval_mode: cases``).
Each atlas is registered by :meth:`register`, so ``cascade_passes`` and ``refine_steps`` apply to
every atlas (n passes: n network calls per atlas and case).

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer instead of
VoxelMorph's U-Net, trained with the masked LNCC + 0.4·smoothness of ``Registration``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...metrics import one_hot_labels
from ...spatial import warp
from ..register import Registration
from ..seg_eval import SegmentationEvaluation

__all__ = ["VMAtlas", "majority_vote"]


def majority_vote(labels: list[torch.Tensor], num_classes: int, label_kind: str = "multiclass") -> torch.Tensor:
    """Vote counts (N, K, *S) of warped atlas labels: argmax of it is the majority label
    (multiclass); for multi-label masks the result is ``votes − n/2`` (> 0 where most atlases agree)."""
    if label_kind == "multilabel":
        return torch.stack([lab.float() for lab in labels]).sum(0) - len(labels) / 2
    return torch.stack([one_hot_labels(lab, num_classes) for lab in labels]).sum(0)


class VMAtlas(SegmentationEvaluation, Registration):
    """Registration trained on unlabeled pairs; segmentation by multi-atlas label propagation.

    Args: those of :class:`~gemini_pl.modules.Registration` (``num_classes`` is required);
    ``max_atlases`` limits the atlases (default: every labeled training image). ``lambda_seg`` and
    ``class_balanced_ce`` are the shared segmentation settings, taken so that one config fits every
    Table II row; VMAtlas trains no segmentation loss and ignores them.
    """

    result_units = {**Registration.result_units, **SegmentationEvaluation.result_units}

    def __init__(self, *args: Any, max_atlases: int | None = None, lambda_seg: float = 100.0,
                 class_balanced_ce: float = 0.0, avd_empty_policy: Literal["skip_class", "unable_case"] = "skip_class", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.hparams.num_classes is None:
            raise ConfigError("VMAtlas needs model.num_classes for the label vote")
        self.atlases: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def load_atlases(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The few-shot labeled training images of the data module (whole images, no crop)."""
        dm = self.datamodule
        if dm is None:
            raise ConfigError("VMAtlas needs a data module with labeled training images (the atlases)")
        cases = dm.atlas_cases(self.hparams.max_atlases)
        return [(c["image"][None].to(self.device), c["label"][None].to(self.device)) for c in cases]

    def segment_logits(self, image: torch.Tensor) -> torch.Tensor:
        if self.atlases is None:
            self.atlases = self.load_atlases()
        warped = []
        for atlas_img, atlas_lab in self.atlases:
            a_img, a_lab = atlas_img.to(image), atlas_lab.to(image.device)
            if a_img.shape[2:] != image.shape[2:]:
                a_img = F.interpolate(a_img, size=image.shape[2:], mode="bilinear" if image.dim() == 4 else "trilinear")
                a_lab = F.interpolate(a_lab.float(), size=image.shape[2:], mode="nearest").to(atlas_lab.dtype)
            a_img, a_lab = a_img.expand(image.shape[0], *a_img.shape[1:]), a_lab.expand(image.shape[0], *a_lab.shape[1:])
            flow = self.register(a_img, image)
            warped.append(warp(a_lab.float(), flow, mode="nearest", sampling=self.hparams.sampling).round().long()
                          if self.label_kind == "multiclass" else warp(a_lab.float(), flow, mode="nearest", sampling=self.hparams.sampling))
        return majority_vote(warped, int(self.hparams.num_classes), self.label_kind)

