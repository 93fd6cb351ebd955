"""Which backbone features the global pre-training methods see, pooled to one vector per image.

The U-Net backbone (:class:`~gemini_pl.nets.backbone.UNetBackbone`) returns full-resolution decoder
features; the global methods of Tables III/VI (Rotation, SimSiam, BYOL, SimCLR, MoCo v2,
DeepCluster) were published on classification encoders whose last feature map is globally pooled.
Two levels are offered:

* ``"encoder"`` (default): the bottleneck ``x5 = down4(…inc(x))`` (widths[4] channels, 1/16 of the
  input size per axis), the encoder alone as the papers' ResNet C5 — the pre-training cost of
  Table IX (Rotation 5.99 G, BYOL 11.98 G per step against 20.15 G for the whole 2D U-Net: ratios
  0.297 and 0.595) is that of encoder-only passes — with the published widths the encoder's forward
  FLOPs are 0.299 of the U-Net's with its head (counted by ``FlopCounterMode``; one pass per image
  for Rotation, two views for BYOL); the decoder keeps its initial weights;
* ``"decoder"``: the backbone's output (widths[8] channels, full resolution), which also trains the
  decoder.

Shapes: images (N, C_in, *S); :func:`global_pool` (N, C, *S') → (N, C).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nets.blocks import pad_to_multiple

__all__ = ["FEATURE_LEVELS", "encode", "forward_with_bottleneck", "global_pool", "level_channels", "pooled_features"]

FEATURE_LEVELS = ("encoder", "decoder")


def encode(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The bottleneck x5 (N, widths[4], *S_pad/16) of the backbone's encoder (input zero-padded to a
    multiple of 16, as the backbone's own forward pass does)."""
    x, _ = pad_to_multiple(x, 16)
    return backbone.down4(backbone.down3(backbone.down2(backbone.down1(backbone.inc(x)))))


def forward_with_bottleneck(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bottleneck x5, output features) of one backbone pass (x5 as :func:`encode` returns it)."""
    kept: list[torch.Tensor] = []
    handle = backbone.down4.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        out = backbone(x)
    finally:
        handle.remove()
    return kept[-1], out


def global_pool(t: torch.Tensor) -> torch.Tensor:
    """Global average pooling (N, C, *S) → (N, C)."""
    return t.flatten(2).mean(-1)


def check_level(level: str) -> str:
    if level not in FEATURE_LEVELS:
        raise ConfigError(f"model.feature_level must be one of {FEATURE_LEVELS}, got {level!r}")
    return level


def level_channels(widths, level: str) -> int:
    """Channels of the pooled vector: widths[4] (encoder) or widths[8] (decoder)."""
    return int(widths[4] if check_level(level) == "encoder" else widths[8])


def pooled_features(backbone: nn.Module, x: torch.Tensor, level: str = "encoder") -> torch.Tensor:
    """Globally pooled features (N, C) of ``x`` at ``level`` (``"encoder"``: x5, ``"decoder"``: output)."""
    t = encode(backbone, x) if check_level(level) == "encoder" else backbone(x)
    return global_pool(t)
