"""In-painting (Pathak et al., CVPR 2016, context encoders): restore masked boxes from their context.

Per image, 1 to ``max_boxes`` random boxes (sides a fraction ``box_size`` of each axis; box j + 1
is added with probability ``box_prob``) are filled with the image's mean intensity; the loss is
the mean squared error over the masked voxels only (the context encoder's reconstruction loss).

Simplified here: no adversarial loss (the paper's joint loss adds one, weight 0.001); the
encoder–decoder is the GEMINI U-Net (backbone + restoration head), whose skip connections the
paper's bottleneck design has not; random boxes rather than the paper's "random region" masks.
"""

from __future__ import annotations

from typing import Any

import torch

from ...augment.painting import box_mask, random_boxes
from .restoration import RestorationPretrain

__all__ = ["Inpainting"]


class Inpainting(RestorationPretrain):
    """Args (beyond :class:`~.restoration.RestorationPretrain`): ``max_boxes``, ``box_prob``, ``box_size``."""

    def __init__(self, *args: Any, max_boxes: int = 3, box_prob: float = 0.5,
                 box_size: tuple[float, float] = (0.25, 0.5), **kwargs: Any):
        super().__init__(*args, **kwargs)

    def corrupt_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        spatial = tuple(x.shape[2:])
        starts, sizes, active = random_boxes(x.shape[0], spatial, hp.max_boxes, tuple(hp.box_size), hp.box_prob,
                                             1, self.aug_generator)
        mask = box_mask(spatial, starts, sizes, active, x.device)
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return torch.where(mask, mean.expand_as(x), x), mask.to(x.dtype)
