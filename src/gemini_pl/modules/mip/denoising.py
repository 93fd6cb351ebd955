"""Denoising (Vincent et al., ICML 2008): restore the image from additive Gaussian noise.

``corrupt(x) = x + σ·ε``, ε ~ N(0, 1) per voxel (from the module's augmentation generator), loss
the mean squared error of the restoration (:class:`~.restoration.RestorationPretrain`).

Simplified here: the denoising autoencoder is the GEMINI U-Net (backbone + restoration head)
rather than a one-hidden-layer autoencoder; σ = 0.1 on [0, 1] intensities by default (the paper
compares corruption types and levels; no level is given for this row in the GEMINI paper).
"""

from __future__ import annotations

from typing import Any

import torch

from .restoration import RestorationPretrain

__all__ = ["Denoising"]


class Denoising(RestorationPretrain):
    """Args (beyond :class:`~.restoration.RestorationPretrain`): ``noise_std`` σ."""

    def __init__(self, *args: Any, noise_std: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def corrupt_input(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        noise = torch.randn(x.shape, generator=self.aug_generator).to(x.device, x.dtype)
        return x + self.hparams.noise_std * noise, None
