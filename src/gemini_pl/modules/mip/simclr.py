"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views of each image.

As the paper (and google-research/simclr ``run.py`` defaults): views are random resized crops of
scale 0.08–1 with flips, colour jitter of strength 0.8 (p 0.8) and Gaussian blur (p 0.5); the
backbone's pooled features go through a 2-layer MLP projector with BatchNorm (hidden = the pooled
width, 128-d output); loss NT-Xent with τ = 0.1, every other view in the batch a negative.

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled, ``feature_level``) instead of
ResNet-50; grey-level jitter only (brightness/contrast, no hue/saturation/grey-scale); the batch is
the two images of a training pair (4 views, 2 negatives per anchor) instead of 4096 images; no
LARS (the project's Adam).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import Losses
from .base import GlobalViewsBase
from .contrastive import nt_xent

__all__ = ["SimCLR"]


class SimCLR(GlobalViewsBase):
    """SimCLR on the GEMINI backbone (args: :class:`~.base.GlobalViewsBase`)."""

    def __init__(self, *args: Any, temperature: float = 0.1, crop_scale: tuple[float, float] = (0.08, 1.0),
                 brightness: float = 0.8, contrast: float = 0.8, blur_p: tuple[float, float] = (0.5, 0.5), **kwargs: Any):
        super().__init__(*args, temperature=temperature, crop_scale=crop_scale, brightness=brightness,
                         contrast=contrast, blur_p=blur_p, **kwargs)

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        n = batch["view1"].shape[0]
        z = self.projector(self.embed(torch.cat([batch["view1"], batch["view2"]], 0)))
        z1, z2 = z[:n], z[n:]
        yield "simclr", {"total": nt_xent(z1, z2, self.hparams.temperature)}
