"""PixPro (Xie et al., CVPR 2021): pixel-to-propagation consistency.

An online branch (backbone + projector + pixel-propagation module, PPM) and a momentum target
branch (EMA of backbone + projector). PPM: ``y_i = Σ_j max(cos(x_i, x_j), 0)^γ · g(x_j)`` (γ = 2,
g a 1×1 conv) on the pooled grid. Loss: ``−mean cos(y, z_target)`` over corresponding points
(here: the known affine correspondence, PixPro's distance threshold at zero), both directions.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from ...nets.blocks import conv_nd
from .common import ema_update
from .dcrl import DensePretrainBase

__all__ = ["PixPro", "pixel_propagation"]


def pixel_propagation(x: torch.Tensor, gx: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """PPM: x, gx (N, C, *S) → ``Σ_j max(cos(x_i, x_j), 0)^γ gx_j`` (N, C, *S)."""
    xf = F.normalize(x.flatten(2), dim=1)
    s = torch.einsum("ncp,ncq->npq", xf, xf).clamp(min=0).pow(gamma)
    return torch.einsum("npq,ncq->ncp", s, gx.flatten(2)).reshape(gx.shape)


def _masked_neg_cos(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    cos = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1, keepdim=True)
    return -(mask * cos).sum() / mask.sum().clamp(min=1)


class PixPro(DensePretrainBase):
    def __init__(self, *args: Any, ema_decay: float = 0.99, gamma: float = 2.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        p = self.hparams.proj_dim
        self.ppm = conv_nd(self.hparams.spatial_dims)(p, p, 1)
        self.target_backbone = copy.deepcopy(self.net.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for m in (self.target_backbone, self.target_projector):
            for q in m.parameters():
                q.requires_grad_(False)

    def pair_loss(self, f1, f2, views):
        hp = self.hparams
        z1, z2 = self.pool(self.projector(f1)), self.pool(self.projector(f2))
        y1, y2 = pixel_propagation(z1, self.ppm(z1), hp.gamma), pixel_propagation(z2, self.ppm(z2), hp.gamma)
        v1, v2, theta = views["view1"], views["view2"], views["theta"]
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_backbone(torch.cat([v1, v2], 0))).chunk(2, 0)
            t1w, mask_full = self.align(t1, theta)
            t1w, t2 = self.pool(t1w), self.pool(t2)
            mask = (self.pool(mask_full) > 0.99).float()
        y1w, _ = self.align(self.upsample(y1, f1), theta)
        loss = _masked_neg_cos(self.pool(y1w), t2, mask) + _masked_neg_cos(y2, t1w, mask)
        return {"total": loss}

    def upsample(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, size=like.shape[2:], mode="nearest")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        ema_update(self.target_backbone, self.net.backbone, self.hparams.ema_decay)
        ema_update(self.target_projector, self.projector, self.hparams.ema_decay)
