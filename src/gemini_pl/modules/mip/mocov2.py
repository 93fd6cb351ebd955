"""MoCo v2 (Chen et al., arXiv 2003.04297): InfoNCE of a query against its momentum key and a queue.

As facebookresearch/moco (``main_moco.py --mlp --moco-t 0.2 --aug-plus --cos``): the query is the
online encoder + 2-layer MLP head (hidden = the encoder's width, no BatchNorm, 128-d) on view 1, the
key the momentum encoder (EMA m = 0.999) on view 2; logits ``[q·k, q·queue] / τ`` with τ = 0.2,
label 0; the keys are enqueued after the step; views: crops of scale 0.2–1, jitter 0.4 (p 0.8),
Gaussian blur (p 0.5), flips.

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled) instead of ResNet-50 (so no
shuffled BatchNorm: the backbone uses GroupNorm); a queue of ``queue_size`` = 512 keys instead of
65,536 (the same age, 256 iterations, at the 2 images of an iteration here, as the DenseCL row);
grey-level jitter only; Adam instead of SGD with a cosine schedule.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from ..baselines.dcrl import FeatureQueue
from ..core import Losses
from .base import GlobalViewsBase
from .contrastive import info_nce

__all__ = ["MoCoV2"]


class MoCoV2(GlobalViewsBase):
    """MoCo v2 on the GEMINI backbone. Args (beyond :class:`~.base.GlobalViewsBase`): ``queue_size``."""

    def __init__(self, *args: Any, queue_size: int = 512, temperature: float = 0.2, momentum: float = 0.999,
                 proj_bn: bool = False, **kwargs: Any):
        super().__init__(*args, temperature=temperature, momentum=momentum, proj_bn=proj_bn, **kwargs)
        self.queue = FeatureQueue(queue_size, self.hparams.proj_dim)
        self.build_key_encoder()

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        q = F.normalize(self.projector(self.embed(batch["view1"])), dim=1)
        k = F.normalize(self.key("projector", self.key_embed(batch["view2"])), dim=1)
        loss = info_nce(q, k, self.hparams.temperature, self.queue.negatives())
        self.enqueue(self.queue, k)
        yield "moco", {"total": loss}
