"""PC-Reg-RT (He et al., JBHI 2021): perception–correspondence decoupling and reverse teaching.

As the official code (YutingHe-list/PC-Reg-RT, ``pytorch/semi_pcreg.py``, ``train_iterator_stage2``):

* **perception–correspondence decoupling**: the segmenter S perceives the regions of interest; the
  registration network R only establishes correspondence between them. R takes *region images*
  ``r = onehot(S(x))[fg] · x`` (one channel per foreground class, :func:`region_images`) of the
  moving and the fixed image and is trained with ``Σ_k NCC(r_m,k ∘ φ, r_f,k) + S(φ)``
  (:func:`perception_ncc`, one NCC per region channel), S's perception without gradient;
* **reverse teaching**: with φ detached, a labeled image L and an unlabeled image U aligned to each
  other teach S: L → U gives ``seg(x_L ∘ φ)`` vs ``y_L ∘ φ`` and ``0.5·seg(x_U)`` vs ``y_L ∘ φ``;
  U → L gives the anchor ``seg(x_L)`` vs ``y_L`` and ``0.5·seg(x_U ∘ φ)`` vs ``y_L`` (the
  official weights: 1 and 0.5).

Both directions of the L ↔ U pair each iteration (the official code draws one labeled–unlabeled or
unlabeled–unlabeled pair with a random order); ``reg`` is stepped before ``seg``, as the code does.

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer (K − 1 input
channels) and U-Net instead of PC-Reg's U-Nets; masked LNCC per region; the shared CE + Dice
(official: CE) for the segmenter; the labeled image's perception is its label (official: S's
prediction); one stage (the official stage 1, S trained on the labels alone first, is not run);
no unlabeled–unlabeled pairs.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ...errors import ConfigError
from ...losses import smoothness, warped_ncc
from ...spatial import validity_mask, warp
from .lrls import RegSegBase, foreground

__all__ = ["PCRegRT", "perception_ncc", "region_images"]


def region_images(image: torch.Tensor, masks: torch.Tensor, label_kind: str = "multiclass") -> torch.Tensor:
    """``masks[fg] · image``: image (N, 1, *S) times the foreground channels of 0/1 masks (N, K, *S)."""
    return foreground(masks.float(), label_kind) * image.float()


def perception_ncc(moving_regions: torch.Tensor, fixed_regions: torch.Tensor, flow: torch.Tensor, window: int = 9,
                   sampling: str = "exact", eps_per_voxel: bool = True) -> torch.Tensor:
    """``Σ_k NCC_M(r_m,k ∘ φ, r_f,k)`` over the region channels (N, K', *S), masked LNCC each."""
    mask = validity_mask(flow, sampling=sampling)
    total = moving_regions.new_zeros(())
    for k in range(moving_regions.shape[1]):
        total = total + warped_ncc(moving_regions[:, k:k + 1], fixed_regions[:, k:k + 1], flow, mask, window, sampling,
                                   eps_per_voxel)
    return total


class PCRegRT(RegSegBase):
    """Perception (S) – correspondence (R on region images) with reverse teaching.

    Args (beyond :class:`~.lrls.RegSegBase`): ``lambda_rt`` the weight of the taught terms on the
    unlabeled side (0.5 as the official code).
    """

    def __init__(self, *args: Any, num_classes: int = 2, label_kind: Literal["auto", "multiclass", "multilabel"] | None = "auto",
                 reg_in_channels: int | None = None, lambda_rt: float = 0.5, **kwargs: Any):
        regions = num_classes if label_kind == "multilabel" else num_classes - 1
        #: input channels of the registration network (one per foreground class, or per label)
        self.region_channels = int(reg_in_channels) if reg_in_channels is not None else max(1, regions)
        super().__init__(*args, num_classes=num_classes, label_kind=label_kind, reg_in_channels=self.region_channels,
                         **kwargs)

    def perception(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """Region images of ``image``: from its label where given, else from S's hard prediction (no gradient)."""
        if label is None:
            with torch.no_grad():
                pred = self.logits_to_labels(self.net(image))
            label = pred
        return region_images(image, self.onehot(label), self.label_kind)

    def reg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x_l, x_u = batch["image"], batch["image_a"]
        r_l, r_u = self.perception(x_l, batch["label"]), self.perception(x_u)
        if r_l.shape[1] != self.region_channels:
            raise ConfigError(f"PCRegRT's registration network takes {self.region_channels} region channels but the labels give "
                              f"{r_l.shape[1]}; set model.label_kind to the data's label kind")
        lu, ul = self.register_both(r_l, r_u)
        kw = dict(window=hp.ncc_window, sampling=hp.sampling, eps_per_voxel=hp.ncc_eps_per_voxel)
        ncc = perception_ncc(r_l, r_u, lu, **kw) + perception_ncc(r_u, r_l, ul, **kw)
        smooth = smoothness(lu) + smoothness(ul)
        batch["cache"].update(lu=lu.detach(), ul=ul.detach())
        return {"total": ncc + hp.lambda_smooth * smooth, "ncc": ncc, "smooth": smooth}

    def seg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x_l, y_l, x_u = batch["image"], batch["label"], batch["image_a"]
        lu, ul = batch["cache"]["lu"], batch["cache"]["ul"]
        w_img, w_lab = warp(x_l, lu, sampling=hp.sampling), self.warp_label(y_l, lu)
        anchor = self.seg_loss(self.net(x_l), y_l)
        warped_l = self.seg_loss(self.net(w_img), w_lab)
        taught_u = self.seg_loss(self.net(x_u), w_lab)
        warped_u = self.seg_loss(self.net(warp(x_u, ul, sampling=hp.sampling)), y_l)
        total = anchor + warped_l + hp.lambda_rt * (taught_u + warped_u)
        return {"total": total, "anchor": anchor, "warped_l": warped_l, "taught_u": taught_u, "warped_u": warped_u}
