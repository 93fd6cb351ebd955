"""Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021): restore the image from its corruption.

As MrGiovanni/ModelsGenesis (``pytorch/utils.py`` ``generate_pair``, ``pytorch/config.py``):
local pixel shuffling (p ``corruption.shuffle_prob`` = 0.5), a Bézier intensity curve
(p 0.9, flipped with p 0.5), then with p 0.9 either in-painting (p 0.2: up to 5 noise boxes of
sides 1/6–1/3) or out-painting (p 0.8: noise everywhere but 1–5 kept boxes of sides 3/7–4/7)
(:func:`~gemini_pl.augment.painting.genesis_corrupt`); the network restores the original with an
MSE loss. This is GEMINI-MIP's restoration head alone, with Models Genesis's own corruption rates.

Simplified here: the shuffling uses the project's corruption (GEMINI-MIP's fixed block size
``dim // divisor`` and block count, :mod:`~gemini_pl.augment.corruption`) instead of 10,000 blocks of
random sizes up to 1/10 of each axis; the head is linear (the published 3D U-Net ends in a sigmoid);
the core's random affine replaces the published random flips; Adam instead of SGD.
"""

from __future__ import annotations

from typing import Any

import torch

from ...augment.corruption import CorruptionConfig
from ...augment.painting import genesis_corrupt
from .restoration import RestorationPretrain

__all__ = ["ModelsGenesis"]


class ModelsGenesis(RestorationPretrain):
    """Args (beyond :class:`~.restoration.RestorationPretrain`):

    corruption: shuffling / intensity settings (its in-painting is replaced by ``paint_prob``);
        default: Models Genesis's rates (shuffle 0.5, intensity 0.9, curve flip 0.5).
    paint_prob: probability of in- or out-painting a sample.
    inpaint_rate: share of in-painting among the painted samples (the rest are out-painted).
    """

    def __init__(self, *args: Any, corruption: CorruptionConfig | None = None, paint_prob: float = 0.9,
                 inpaint_rate: float = 0.2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.corruption = corruption or CorruptionConfig(shuffle_prob=0.5, nonlinear_prob=0.9, nonlinear_flip_prob=0.5)

    def corrupt_input(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        hp = self.hparams
        return genesis_corrupt(x.clamp(0, 1), self.corruption, hp.paint_prob, hp.inpaint_rate, self.aug_generator), None
