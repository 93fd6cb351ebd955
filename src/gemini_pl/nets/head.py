"""The head H: segmentation (Semi) or restoration (MIP) on top of the backbone features (docs/METHOD.md §1)."""

from __future__ import annotations

from torch import nn

from .blocks import conv_nd, init_weights
from .norm import GroupNorm


def make_head(spatial_dims: int, in_channels: int, out_channels: int, hidden: int = 16) -> nn.Sequential:
    """``conv k3 (C→16) → GN(4) → LeakyReLU(0.2) → conv k1 (16→K)``; keys ``{0,1,3}`` as published.

    Shapes: (N, C, *S) → (N, K, *S) logits (no final activation).
    """
    conv = conv_nd(spatial_dims)
    head = nn.Sequential(
        conv(in_channels, hidden, 3, padding=1),
        GroupNorm(4, hidden),
        nn.LeakyReLU(0.2, inplace=True),
        conv(hidden, out_channels, 1),
    )
    init_weights(head)
    return head
