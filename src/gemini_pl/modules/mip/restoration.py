"""The shared base of the restoration rows (Denoising, In-painting, Models Genesis).

:class:`RestorationPretrain`: each unlabeled image (both images of a training pair, as single
images) gets the core's random affine (:meth:`~gemini_pl.modules.core.GeminiModule.augment`), then
the method's corruption (:meth:`corrupt_input`); the backbone + head H (the restoration head of
GEMINI-MIP, one output channel per image channel) restores it::

    L = λ · Σ w·(H(N(corrupt(x))) − x)² / Σ w

with w = 1 everywhere (mean squared error), or the method's weight map (In-painting: the masked
boxes). The head output is linear (no sigmoid), as GEMINI-MIP's. Only the backbone is transferred
by ``Segmentation(init_from=...)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import GeminiModule, Losses

__all__ = ["RestorationPretrain", "single_images"]


def single_images(batch: dict[str, Any]) -> torch.Tensor:
    """The batch's images as one tensor (N, C, *S): ``image_a`` and ``image_b`` stacked (pairs), else ``image``."""
    if batch.get("image_b") is not None:
        return torch.cat([batch["image_a"], batch["image_b"]], 0)
    x = batch.get("image_a", batch.get("image"))
    if x is None:
        raise KeyError("a pre-training batch needs 'image_a'/'image_b' (data.train_mode: pairs) or 'image'")
    return x


class RestorationPretrain(GeminiModule):
    """Restoration pre-training. Args (beyond the core): ``lambda_restore``, the loss weight λ."""

    network_parts = ("backbone", "head")

    def __init__(self, *args: Any, lambda_restore: float = 1.0, **kwargs: Any):
        kwargs.setdefault("out_channels", kwargs.get("in_channels", 1))
        super().__init__(*args, **kwargs)

    def corrupt_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(corrupted x, loss weight map (N, 1, *S) or ``None`` for all ones)."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = self.augment({"image": single_images(batch)}, [("image",)])["image"]
        corrupted, weight = self.corrupt_input(x)
        return {"image": x, "corrupted": corrupted, "weight": weight}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        restored = self.net(batch["corrupted"].detach())
        err = (restored.float() - batch["image"].float()).pow(2)
        w = batch.get("weight")
        mse = err.mean() if w is None else (err * w).sum() / (w.expand_as(err).sum().clamp(min=1))
        yield "restore", {"total": self.hparams.lambda_restore * mse, "mse": mse.detach()}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # judged by fine-tuning
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
