"""VADeR (Pinheiro et al., NeurIPS 2020): view-agnostic dense representations.

Pixel-level contrastive learning on an encoder-decoder (the paper: ResNet-50 + an FPN-style
decoder; here the GEMINI U-Net, whose decoder output is the dense representation), built on MoCo:

* two views of an image whose pixel correspondence is known (here: two random resized crops, so a
  point of their overlap is seen by both — :func:`~.views.overlap_points`);
* queries: the online encoder + projection head on view 1 at ``num_samples`` matching pixels per
  image; keys: the **momentum encoder** (EMA, m = 0.999) on view 2 at the same image points;
* InfoNCE of each query against its matching key and a **queue** of negatives — pixel embeddings of
  earlier key images (τ = 0.07, 128-d, MoCo's values); the keys are enqueued after each step;
* views: MoCo v2's augmentation (crops of scale 0.2–1, brightness/contrast jitter, blur, flip).

Simplified here (footnote of the Table II row): the GEMINI 2D/3D U-Net instead of ResNet-50 + FPN;
no MoCo initialisation of the encoder; a queue of ``queue_size`` = 32,768 pixel keys — 256
iterations × 2 images × 64 points, the age of MoCo's 65,536-key queue at its batch of 256;
``num_samples`` pixels per image; grey-level jitter only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core import Losses
from .dcrl import DensePretrainBase, FeatureQueue, info_nce, rows
from .views import gather_points, overlap_points

__all__ = ["VADeR"]


class VADeR(DensePretrainBase):
    """VADeR on the GEMINI backbone.

    Args (beyond :class:`~.dcrl.DensePretrainBase`): ``queue_size``, keys in the queue of negatives.
    """

    def __init__(self, *args: Any, queue_size: int = 32768, proj_dim: int = 128, temperature: float = 0.07,
                 momentum: float = 0.999, **kwargs: Any):
        super().__init__(*args, proj_dim=proj_dim, temperature=temperature, momentum=momentum, **kwargs)
        self.queue = FeatureQueue(queue_size, proj_dim)
        self.build_key_encoder()

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        u1, u2, valid = overlap_points(batch["theta1"], batch["theta2"], hp.num_samples, self.aug_generator)
        f1 = self.net.features(batch["view1"])
        q = F.normalize(self.pointwise(self.projector, gather_points(f1, u1)), dim=1)   # (N, D, M)
        with torch.no_grad():
            f2 = self.key("backbone", batch["view2"])
            k = F.normalize(self.pointwise(self.key_encoder["projector"], gather_points(f2, u2)), dim=1)
        valid = valid.to(f1.device, non_blocking=True)
        loss = info_nce(rows(q), rows(k), hp.temperature, self.queue.negatives(), valid.repeat_interleave(hp.num_samples))
        self.enqueue(self.queue, rows(k))
        yield "dense", {"total": loss, "overlap": valid.mean()}
