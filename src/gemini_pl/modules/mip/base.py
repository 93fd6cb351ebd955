"""The shared base of the two-view global methods (SimCLR, MoCo v2, BYOL, SimSiam).

:class:`GlobalViewsBase` is :class:`~gemini_pl.modules.baselines.dcrl.DensePretrainBase` — two
random-resized-crop views of each unlabeled image with the photometric jitter of the method's paper,
a momentum (key) encoder when the method builds one, queues as buffers — with its dense 1×1
projector replaced by an MLP on the globally pooled backbone features (:mod:`.pooling`, level
``feature_level``). Both images of a training pair are used as single images.

The backbone is ``self.net.backbone``, so ``Segmentation(init_from=<last.ckpt>)`` fine-tunes it;
heads, key encoder and queues are not transferred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..baselines.dcrl import DensePretrainBase
from ..core import GeminiModule
from .pooling import level_channels, pooled_features
from .projector import mlp

__all__ = ["GlobalViewsBase", "cosine_momentum"]


def cosine_momentum(base: float, step: int, total: int) -> float:
    """BYOL's target decay ``1 − (1 − base)·(cos(π·k/K) + 1)/2`` (``base`` when K ≤ 0)."""
    if total <= 0:
        return float(base)
    return 1 - (1 - float(base)) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


class GlobalViewsBase(DensePretrainBase):
    """Two-view global pre-training on the GEMINI backbone.

    Args (beyond :class:`~gemini_pl.modules.baselines.dcrl.DensePretrainBase`'s views, ``temperature``,
    ``momentum``):
        feature_level: ``"encoder"`` (bottleneck, default) or ``"decoder"`` (backbone output), pooled.
        proj_hidden: hidden sizes of the projector (a list; ``None``: one layer of the pooled width).
        proj_dim: projector output size.
        proj_bn: BatchNorm on the projector's hidden layers; ``proj_last_bn`` on its output too.
    """

    def __init__(self, *args: Any, feature_level: Literal["encoder", "decoder"] = "encoder",
                 proj_hidden: Sequence[int] | None = None, proj_dim: int = 128, proj_bn: bool = True,
                 proj_last_bn: bool = False, **kwargs: Any):
        super().__init__(*args, proj_dim=proj_dim, **kwargs)
        c = level_channels(self.hparams.widths, feature_level)
        hidden = list(proj_hidden) if proj_hidden is not None else [c]
        self.projector = mlp([c, *hidden, proj_dim], batch_norm=proj_bn, last_bn=proj_last_bn)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled online backbone features (N, C) of images x (N, C_in, *S)."""
        return pooled_features(self.net.backbone, x, self.hparams.feature_level)

    @torch.no_grad()
    def key_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, C) of the momentum backbone, without gradients."""
        return pooled_features(self.key_encoder["backbone"], x, self.hparams.feature_level)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if hasattr(self, "key_encoder"):  # EMA of the online parts
            super().on_train_batch_end(outputs, batch, batch_idx)
        else:  # no momentum encoder (SimCLR, SimSiam)
            GeminiModule.on_train_batch_end(self, outputs, batch, batch_idx)
