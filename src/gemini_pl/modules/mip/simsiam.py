"""SimSiam (Chen & He, CVPR 2021): a predictor and a stop-gradient, no momentum encoder.

As facebookresearch/simsiam: projector of 3 layers (Linear–BN–ReLU twice, Linear–BN; 2048-d),
predictor Linear(2048, 512)–BN–ReLU–Linear(512, 2048); loss
``½·D(p1, sg(z2)) + ½·D(p2, sg(z1))`` with ``D = −cos``; views as MoCo v2 (crops 0.2–1, jitter 0.4
p 0.8, blur p 0.5, flips).

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled) instead of ResNet-50; projector
and predictor widths scaled to the pooled width in the phantom configs; grey-level jitter only;
Adam instead of SGD; both views go through the projector in one batch (BatchNorm statistics over
the two views together).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import Losses
from .base import GlobalViewsBase
from .projector import mlp
from .regression import simsiam_loss

__all__ = ["SimSiam"]


class SimSiam(GlobalViewsBase):
    """SimSiam on the GEMINI backbone. Args (beyond :class:`~.base.GlobalViewsBase`): ``pred_hidden``."""

    def __init__(self, *args: Any, proj_hidden: list[int] | None = None, proj_dim: int = 2048, pred_hidden: int = 512,
                 proj_last_bn: bool = True, **kwargs: Any):
        super().__init__(*args, proj_hidden=[2048, 2048] if proj_hidden is None else proj_hidden, proj_dim=proj_dim,
                         proj_last_bn=proj_last_bn, **kwargs)
        self.predictor = mlp([proj_dim, pred_hidden, proj_dim])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        n = batch["view1"].shape[0]
        z = self.projector(self.embed(torch.cat([batch["view1"], batch["view2"]], 0)))
        p = self.predictor(z)
        loss = 0.5 * simsiam_loss(p[:n], z[n:]) + 0.5 * simsiam_loss(p[n:], z[:n])
        yield "simsiam", {"total": loss}
