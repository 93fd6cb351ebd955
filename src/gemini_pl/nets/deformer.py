"""The deformer D: a shallow U-Net predicting a displacement field from two feature maps (docs/METHOD.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import OneConv, conv_nd, init_weights, maxpool_nd, pad_to_multiple, upsample2

DEFAULT_DEFORMER_WIDTHS = (32, 64, 64, 64, 32)

#: Initialisations of the flow conv: ``small`` (ours, N(0, ``flow_init_std``)) or ``published``.
FLOW_INITS = ("small", "published")


class _DeformerBody(nn.Module):
    """``Conv1..Conv5`` of the published deformer (keys ``ConvK.one_conv.{0,1}``)."""

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int]):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.Conv1 = OneConv(spatial_dims, in_channels, w1)
        self.Conv2 = OneConv(spatial_dims, w1, w2)
        self.Conv3 = OneConv(spatial_dims, w2, w3)
        self.Conv4 = OneConv(spatial_dims, w3 + w2, w4)
        self.Conv5 = OneConv(spatial_dims, w4 + w1, w5)
        self.pool = maxpool_nd(spatial_dims)(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.Conv1(x)
        c2 = self.Conv2(self.pool(c1))
        c3 = self.Conv3(self.pool(c2))
        c4 = self.Conv4(torch.cat([upsample2(c3), c2], dim=1))
        return self.Conv5(torch.cat([upsample2(c4), c1], dim=1))


class Deformer(nn.Module):
    """φ = D([f_A, f_B]): input (N, 2·C, *S) → displacement (N, ndim, *S) in voxel units.

    Channel i of the output displaces along spatial axis i (docs/METHOD.md §2). The input is padded to a
    multiple of 4 and the field cropped back.

    ``flow_init`` (docs/METHOD.md §1): ``"small"`` (default) starts the flow conv near zero (weights
    N(0, ``flow_init_std``), bias 0) so that training starts from the identity; ``"published"``
    gives it the Kaiming-normal init of every other conv, as the published code does (a random
    displacement of about one voxel per axis at the start; ``flow_init_std`` is then unused).
    Both draw the same number of random numbers at the same point, so the other parameters of a
    seeded model do not depend on the option.
    """

    def __init__(
        self,
        spatial_dims: int,
        feature_channels: int,
        widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
        flow_init_std: float = 1e-5,
        flow_init: str = "small",
    ):
        super().__init__()
        if flow_init not in FLOW_INITS:
            raise ValueError(f"flow_init must be one of {FLOW_INITS}, got {flow_init!r}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5:
            raise ValueError(f"deformer widths must have 5 entries, got {widths}")
        self.spatial_dims = spatial_dims
        self.flow_init = flow_init
        self.body = _DeformerBody(spatial_dims, 2 * feature_channels, widths)
        self.flow = conv_nd(spatial_dims)(widths[-1], spatial_dims, 3, padding=1)
        init_weights(self.body)
        if flow_init == "published":
            init_weights(self.flow)  # Kaiming normal (slope 0.2), bias 0: one normal_ draw, like below
        else:
            nn.init.normal_(self.flow.weight, std=flow_init_std)
            nn.init.zeros_(self.flow.bias)

    def forward(self, pair_features: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_multiple(pair_features, 4)
        return self.flow(self.body(x))[tuple(crop)]
