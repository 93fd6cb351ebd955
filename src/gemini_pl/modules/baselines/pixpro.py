"""PixPro (Xie et al., CVPR 2021): pixel-to-propagation consistency.

As the official code (zdaxie/PixPro: ``contrast/models/PixPro.py`` ``regression_loss``,
``featprop``, ``_momentum_update_key_encoder``; ``tools/pixpro_base_r50_400ep.sh``;
``contrast/data/transform.py`` ``aug_type == 'BYOL'``):

* online branch: backbone → projector → pixel-propagation module (PPM):
  ``y_i = Σ_j max(cos(x_i, x_j), 0)^γ · ĝ(x)_j`` with γ = 2 and ĝ one 1×1 conv whose outputs are
  L2-normalised (transform layer 1);
* target branch: the momentum encoder (backbone + projector), momentum 0.99 raised to 1 by a cosine
  over the run (``1 − (1 − m)·(cos(π k/K) + 1)/2``, K the run's steps);
* positives: pairs of feature-map cells whose centres, mapped into the original image, are closer
  than T = 0.7 × the larger of the two cells' diagonals (the views' crops are known, so this needs
  no search); loss ``−2 · mean_images(Σ_pos cos(y_i, t_j) / #pos)``, both directions;
* views: BYOL's augmentation with crops of scale 0.08–1 — brightness/contrast jitter (0.4, p 0.8),
  Gaussian blur (p 1.0 on view 1, 0.1 on view 2), solarisation (p 0.2 on view 2), horizontal flip;
* no instance branch (``--pixpro-ins-loss-weight 0.`` in the published script).

Simplified here (footnote of the Table II row): the GEMINI 2D/3D U-Net backbone (features pooled to
a ``grid``-cell map) instead of ResNet-50's 7 × 7 C5 map; projector without BatchNorm (the
network uses GroupNorm); grey-level jitter only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...nets.blocks import conv_nd
from ..core import Losses
from .common import run_steps
from .dcrl import DensePretrainBase
from .views import cell_centres

__all__ = ["PixPro", "pixel_propagation", "pixpro_loss", "positive_pairs"]


def pixel_propagation(x: torch.Tensor, gx: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """PPM: x, gx (N, C, *S) → ``Σ_j max(cos(x_i, x_j), 0)^γ · gx_j / ‖gx_j‖`` (N, C, *S)."""
    xf = F.normalize(x.flatten(2), dim=1)
    s = torch.einsum("ncp,ncq->npq", xf, xf).clamp(min=0).pow(gamma)
    return torch.einsum("npq,ncq->ncp", s, F.normalize(gx.flatten(2), dim=1)).reshape(gx.shape)


def positive_pairs(theta_1: torch.Tensor, theta_2: torch.Tensor, grid: Sequence[int], pos_ratio: float = 0.7) -> torch.Tensor:
    """(N, P, P) 1/0: cell i of view 1 and cell j of view 2 are positives when their centres in the
    image are closer than ``pos_ratio`` × the larger cell diagonal (PixPro's ``pos_mask``)."""
    c1, d1 = cell_centres(theta_1, grid)
    c2, d2 = cell_centres(theta_2, grid)
    dist = torch.cdist(c1.double(), c2.double()) / torch.maximum(d1, d2).double()[:, None, None]
    return (dist < pos_ratio).float()


def pixpro_loss(y: torch.Tensor, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``−2 · mean_n Σ_ij pos·cos(y_i, t_j) / (Σ_ij pos + 1e-6)``; y, t (N, D, P) L2-normalised."""
    logit = torch.einsum("ndp,ndq->npq", y.float(), t.float())
    return -2 * ((logit * pos).sum((1, 2)) / (pos.sum((1, 2)) + 1e-6)).mean()


class PixPro(DensePretrainBase):
    """PixPro on the GEMINI backbone.

    Args (beyond :class:`~.dcrl.DensePretrainBase`; defaults: the published script's):
        gamma: PPM sharpness γ.
        pos_ratio: the distance threshold T (in cell diagonals).
    """

    def __init__(self, *args: Any, gamma: float = 2.0, pos_ratio: float = 0.7, proj_dim: int = 256,
                 momentum: float = 0.99, crop_scale: tuple[float, float] = (0.08, 1.0),
                 blur_p: tuple[float, float] = (1.0, 0.1), solarize_p: tuple[float, float] = (0.0, 0.2), **kwargs: Any):
        super().__init__(*args, proj_dim=proj_dim, momentum=momentum, crop_scale=crop_scale, blur_p=blur_p,
                         solarize_p=solarize_p, **kwargs)
        self.ppm = conv_nd(self.hparams.spatial_dims)(proj_dim, proj_dim, 1)
        self.build_key_encoder()

    def momentum_at(self, step: int) -> float:
        """PixPro's cosine schedule from ``momentum`` to 1 over the run."""
        total = run_steps(self)
        m = float(self.hparams.momentum)
        return m if total <= 0 else 1 - (1 - m) * (math.cos(math.pi * min(step, total) / total) + 1) / 2

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        v = torch.cat([batch["view1"], batch["view2"]], 0)
        z = self.projector(self.pool(self.net.features(v)))
        y = F.normalize(pixel_propagation(z, self.ppm(z), hp.gamma).flatten(2), dim=1)
        with torch.no_grad():
            t = F.normalize(self.key("projector", self.pool(self.key("backbone", v))).flatten(2), dim=1)
        pos = positive_pairs(batch["theta1"], batch["theta2"], z.shape[2:], hp.pos_ratio).to(z.device, non_blocking=True)
        (y1, y2), (t1, t2) = y.chunk(2), t.chunk(2)
        loss = pixpro_loss(y1, t2, pos) + pixpro_loss(y2, t1, pos.transpose(1, 2))
        yield "dense", {"total": loss}
