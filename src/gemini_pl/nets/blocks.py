"""Building blocks shared by the backbone, the deformer and the heads (2D and 3D).

Every block is ``conv k3 p1 → GroupNorm(C/8 groups) → LeakyReLU(0.2)``; the backbone stacks two,
the deformer one (docs/METHOD.md §1). Module and index names follow the published checkpoints so that
their ``state_dict`` keys map onto ours by a prefix change only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import GroupNorm
from .pool import MaxPool2d, MaxPool3d


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def maxpool_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d`` (subclasses with a faster CPU inference, :mod:`gemini_pl.nets.pool`)."""
    return {2: MaxPool2d, 3: MaxPool3d}[_check_dims(spatial_dims)]


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``channels // 8`` groups (at least one); see :mod:`gemini_pl.nets.norm`."""
    return GroupNorm(max(1, channels // 8), channels)


class DoubleConv(nn.Module):
    """Two ``conv k3 → GN → LeakyReLU(0.2)`` units. Keys ``double_conv.{0,1,3,4}``.

    Shapes: (N, in_ch, *S) → (N, out_ch, *S).
    """

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int):
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.double_conv = nn.Sequential(
            conv(in_ch, out_ch, 3, padding=1),
            group_norm(out_ch),
            nn.LeakyReLU(0.2, inplace=True),
            conv(out_ch, out_ch, 3, padding=1),
            group_norm(out_ch),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class OneConv(nn.Module):
    """One ``conv k3 → GN → LeakyReLU(0.2)`` unit. Keys ``one_conv.{0,1}``."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int):
        super().__init__()
        self.one_conv = nn.Sequential(
            conv_nd(spatial_dims)(in_ch, out_ch, 3, padding=1),
            group_norm(out_ch),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.one_conv(x)


class Down(nn.Module):
    """Max-pool by 2 then a :class:`DoubleConv`. Keys ``maxpool_conv.1.double_conv.*``."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(maxpool_nd(spatial_dims)(2), DoubleConv(spatial_dims, in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Upsample by 2 as published: 3D trilinear ``align_corners=True``; 2D bilinear ``align_corners=False``."""
    if x.dim() == 5:
        return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class Up(nn.Module):
    """Upsample by 2, concatenate ``[skip, upsampled]`` on channels, :class:`DoubleConv`. Keys ``conv.double_conv.*``."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = DoubleConv(spatial_dims, in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, upsample2(x)], dim=1))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, list[slice]]:
    """Zero-pad every spatial axis of ``x`` (N, C, *S) symmetrically to a multiple of ``multiple``.

    Returns the padded tensor and the slices that crop the padded result back to ``S``.
    """
    spatial = x.shape[2:]
    pads: list[tuple[int, int]] = []
    crop = [slice(None), slice(None)]
    for size in spatial:
        total = (-size) % multiple
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    if not any(p for pair in pads for p in pair):
        return x, crop
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
    return F.pad(x, flat), crop


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal conv weights with zero bias, GroupNorm weight 1 and bias 0 (docs/METHOD.md §1)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
