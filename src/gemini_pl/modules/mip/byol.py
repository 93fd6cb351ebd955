"""BYOL (Grill et al., NeurIPS 2020): predict the momentum network's projection of the other view.

As the paper: online = encoder → projector (Linear–BN–ReLU–Linear, 4096 hidden, 256-d) → predictor
(same form); target = momentum copy of encoder and projector, decay τ = 0.996 raised to 1 by a
cosine over the run; loss ``2 − 2·cos(p, sg(z'))`` in both directions (view 1 predicts view 2's
target and vice versa); views: crops of scale 0.08–1, jitter (p 0.8), blur (p 1.0 on view 1, 0.1
on view 2), solarisation (p 0.2 on view 2), flips.

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled) instead of ResNet-50; hidden
sizes scaled to the pooled width in the phantom configs; grey-level jitter only; Adam instead of
LARS; the target's BatchNorm uses the batch statistics of its own views (as in training mode).
"""

from __future__ import annotations

from typing import Any

import torch

from ..baselines.common import run_steps
from ..core import Losses
from .base import GlobalViewsBase, cosine_momentum
from .projector import mlp
from .regression import byol_loss

__all__ = ["BYOL"]


class BYOL(GlobalViewsBase):
    """BYOL on the GEMINI backbone.

    Args (beyond :class:`~.base.GlobalViewsBase`): ``pred_hidden``, the predictor's hidden size.
    """

    def __init__(self, *args: Any, proj_hidden: list[int] | None = None, proj_dim: int = 256, pred_hidden: int = 4096,
                 momentum: float = 0.996, crop_scale: tuple[float, float] = (0.08, 1.0),
                 blur_p: tuple[float, float] = (1.0, 0.1), solarize_p: tuple[float, float] = (0.0, 0.2), **kwargs: Any):
        super().__init__(*args, proj_hidden=[4096] if proj_hidden is None else proj_hidden, proj_dim=proj_dim,
                         momentum=momentum, crop_scale=crop_scale, blur_p=blur_p, solarize_p=solarize_p, **kwargs)
        self.predictor = mlp([proj_dim, pred_hidden, proj_dim])
        self.build_key_encoder()  # backbone + projector (the predictor has no target copy)

    def momentum_at(self, step: int) -> float:
        return cosine_momentum(self.hparams.momentum, step, run_steps(self))

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        n = batch["view1"].shape[0]
        v = torch.cat([batch["view1"], batch["view2"]], 0)
        p = self.predictor(self.projector(self.embed(v)))
        z = self.key("projector", self.key_embed(v))
        loss = byol_loss(p[:n], z[n:]) + byol_loss(p[n:], z[:n])
        yield "byol", {"total": loss}
