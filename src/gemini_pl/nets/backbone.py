"""The backbone N: a five-level U-Net returning full-resolution dense features (docs/METHOD.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import DoubleConv, Down, Up, init_weights, pad_to_multiple

DEFAULT_WIDTHS = (32, 64, 128, 256, 512, 256, 128, 64, 32)


class UNetBackbone(nn.Module):
    """U-Net with encoder widths ``widths[:5]`` and decoder widths ``widths[5:]``.

    Input (N, in_channels, *S), any S (zero-padded symmetrically to a multiple of 16 inside and
    cropped back); output features (N, widths[-1], *S) — no projection head.
    Submodule names (``inc``, ``down1..4``, ``up1..4``) match the published checkpoints.
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, widths: Sequence[int] = DEFAULT_WIDTHS):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 9:
            raise ValueError(f"backbone widths must have 9 entries (5 encoder, 4 decoder), got {widths}")
        if any(w % 8 for w in widths):
            raise ValueError(f"backbone widths must be multiples of 8 (GroupNorm uses C/8 groups), got {widths}")
        e0, e1, e2, e3, e4, d1, d2, d3, d4 = widths
        self.spatial_dims = spatial_dims
        self.widths = widths
        self.out_channels = d4
        self.inc = DoubleConv(spatial_dims, in_channels, e0)
        self.down1 = Down(spatial_dims, e0, e1)
        self.down2 = Down(spatial_dims, e1, e2)
        self.down3 = Down(spatial_dims, e2, e3)
        self.down4 = Down(spatial_dims, e3, e4)
        self.up1 = Up(spatial_dims, e4 + e3, d1)
        self.up2 = Up(spatial_dims, d1 + e2, d2)
        self.up3 = Up(spatial_dims, d2 + e1, d3)
        self.up4 = Up(spatial_dims, d3 + e0, d4)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_multiple(x, 16)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return y[tuple(crop)]
