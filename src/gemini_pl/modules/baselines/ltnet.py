"""LT-Net (Wang et al., CVPR 2020): label transfer by learning reversible voxel-wise correspondence.

Atlas-based segmentation with a forward–backward cycle. Per iteration the labeled sample is the
atlas ``x_a`` (label ``y_a``) and an unlabeled image ``x_u`` the target:

* **forward correspondence** φ = R(x_a, x_u) (atlas onto target), the warped atlas
  ``x' = x_a ∘ φ``: masked LNCC(x', x_u) + smoothness;
* **backward correspondence** from the *warped* atlas back to the atlas, φ' = R(x', x_a), and
  ``x'' = x' ∘ φ'`` (+ smoothness of φ'), supervised by the cycle alone:
* the **cycle-consistency supervision** this enables (:func:`cycle_terms`): the image cycle
  ``mean|x'' − x_a|`` (L1; the backward correspondence's similarity), the label cycle
  ``1 − Dice((y_a ∘ φ) ∘ φ', y_a)`` (the atlas label carried there and back, soft Dice of the
  bilinearly warped one-hot label, foreground channels), and the correspondence cycle
  ``mean |φ' + warp(φ, φ')|²`` (the displacement of the round trip ``x'' = x_a ∘ (φ' + warp(φ, φ'))``,
  zero for a reversible pair).

One registration network R (backbone + deformer) gives both correspondences. A test case is
segmented by transferring the labels of every labeled atlas (forward correspondence) and fusing
them by majority vote, as the VM row (:class:`~.vm_atlas.VMAtlas`).

Weights: forward similarity 1, smoothness ``λ_smooth = 0.4`` (the VM row's, both fields), image
and label cycles 1, correspondence cycle 0.1 (voxel² units). These relative weights are this
implementation's choice: the published values could not be checked here. A second LNCC between
``x''`` and ``x_a`` is left out: with both fields starting near zero it pulls φ back to the
identity as hard as the forward similarity pushes it (on the phantoms the registration then never
left the identity); the L1 image cycle is that similarity.

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer instead of LT-Net's
registration network; masked LNCC as the similarity; the cycle weights above; one unlabeled target
per iteration.
"""

from __future__ import annotations

from typing import Any

import torch

from ...losses import registration_terms, smoothness
from ...spatial import warp
from ..batches import require_batch_keys
from ..core import Losses
from .lrls import label_dice_loss
from .vm_atlas import VMAtlas

__all__ = ["LTNet", "cycle_terms"]

LT_KEYS = ("image", "label", "image_a")


def cycle_terms(atlas: torch.Tensor, atlas_onehot: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor,
                label_kind: str = "multiclass", sampling: str = "exact") -> dict[str, torch.Tensor]:
    """LT-Net's cycle terms of an atlas (N, C, *S) with its label channels (N, K, *S), the forward
    field ``fwd`` (atlas → target) and the backward field ``bwd`` (warped atlas → atlas), (N, ndim, *S):
    ``{"cyc_image": mean|x'' − x_a|, "cyc_label": 1 − Dice(y'', y_a), "cyc_flow": mean((bwd + warp(fwd, bwd))²)}``."""
    back = warp(warp(atlas, fwd, sampling=sampling), bwd, sampling=sampling)
    y_back = warp(warp(atlas_onehot, fwd, sampling=sampling), bwd, sampling=sampling)
    return {
        "cyc_image": (back - atlas.float()).abs().mean(),
        "cyc_label": label_dice_loss(y_back, atlas_onehot, label_kind),
        "cyc_flow": (bwd.float() + warp(fwd, bwd, sampling=sampling)).pow(2).mean(),
    }


class LTNet(VMAtlas):
    """Forward + backward correspondence with cycle consistency; multi-atlas label transfer at test.

    Args (beyond :class:`~.vm_atlas.VMAtlas`; defaults: see the module docstring):
        lambda_cyc_image, lambda_cyc_label, lambda_cyc_flow: weights of the three cycle terms.
    """

    def __init__(self, *args: Any, lambda_cyc_image: float = 1.0, lambda_cyc_label: float = 1.0,
                 lambda_cyc_flow: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The atlas (labeled sample) and the target (unlabeled ``image_a``), one random affine for all."""
        require_batch_keys(batch, LT_KEYS, type(self).__name__, "pairs+labeled")
        out = self.augment(batch, [LT_KEYS])
        n = min(out["image"].shape[0], out["image_a"].shape[0])
        return {k: out[k][:n] for k in LT_KEYS}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        atlas, target = batch["image"], batch["image_a"]
        f_a, f_t = self.net.features(torch.cat([atlas, target], 0)).chunk(2, 0)
        fwd = self.net.flow(f_a, f_t)
        warped = warp(atlas, fwd, sampling=hp.sampling)
        bwd = self.net.flow(self.net.features(warped), f_a)
        t_f = registration_terms(atlas, target, fwd, hp.ncc_window, hp.sampling, hp.ncc_eps_per_voxel)
        cyc = cycle_terms(atlas, self._label_onehot(batch["label"]), fwd, bwd, self.label_kind, hp.sampling)
        ncc, smooth = t_f["ncc"], t_f["smooth"] + smoothness(bwd)
        total = (ncc + hp.lambda_smooth * smooth + hp.lambda_cyc_image * cyc["cyc_image"]
                 + hp.lambda_cyc_label * cyc["cyc_label"] + hp.lambda_cyc_flow * cyc["cyc_flow"])
        yield "reg", {"total": total, "ncc": ncc, "smooth": smooth, **cyc}
