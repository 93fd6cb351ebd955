"""GEMINI-MIP pre-training: GEMINI on unlabeled pairs + Models-Genesis-style restoration (docs/METHOD.md §3-5)."""

from __future__ import annotations

from typing import Any

import torch

from ..augment.corruption import CorruptionConfig, corrupt
from ..losses import restoration_loss
from .gemini import GeminiBase

__all__ = ["GeminiPretrain"]


class GeminiPretrain(GeminiBase):
    """GEMINI-MIP. The head restores A from a corrupted copy: ``L_res = λ_res·mean((H(N(corrupt(x_A))) − x_A)²)``.

    Args (beyond :class:`~gemini_pl.modules.GeminiBase`):
        lambda_restore: weight of the restoration loss (100 as published).
        corruption: appearance corruption settings (probabilities, block and box counts); the
            defaults follow docs/METHOD.md §5 for the module's ``spatial_dims``.
        corrupt_before_affine: corrupt A before the iteration's random affine (the restoration
            input is ``affine(corrupt(x_A))``, as the published MIP code does) instead of after it.
    """

    head_name = "restore"

    def __init__(self, *args: Any, lambda_restore: float = 100.0, corruption: CorruptionConfig | None = None,
                 corrupt_before_affine: bool = False, **kwargs: Any):
        kwargs.setdefault("out_channels", 1)
        super().__init__(*args, **kwargs)
        self.corruption = corruption or CorruptionConfig()

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.hparams.corrupt_before_affine:
            return super().prepare_batch(batch)
        batch = dict(batch, corrupted_a=corrupt(batch["image_a"], self.corruption, generator=self.aug_generator))
        return self.augment(batch, [("image_a", "corrupted_a"), ("image_b",)])

    def head_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x_a = batch["image_a"].detach()
        corrupted = batch.get("corrupted_a")
        if corrupted is None:
            corrupted = corrupt(x_a, self.corruption, generator=self.aug_generator)
        restored = self.net(corrupted.detach())
        return {"total": restoration_loss(restored, x_a, self.hparams.lambda_restore)}
