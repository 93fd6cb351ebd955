"""GVSL-MIP (He et al., CVPR 2023, "Geometric visual similarity learning"): GEMINI's predecessor.

As YutingHe-list/GVSL (``PyTorch/models/gvsl.py``, ``PyTorch/Train_GVSL.py``), on one pair (A, B)
per iteration, one direction (B is registered onto A):

* A is corrupted Models-Genesis style (shuffling p 0.8, intensity p 0.9, painting p 0.9 of which
  in-painting 0.2 — :func:`~gemini_pl.augment.painting.genesis_corrupt`) *before* the spatial
  augmentation, and A, corrupt(A), B then share one random affine;
* the backbone runs on corrupt(A) and on B; its bottleneck features x5 (both images) go to the
  **affine head** (the Z-matching head's global part): ``DoubleConv(2·C5 → 256)`` → global average
  pool → four linear layers giving rotations (clamped to ±π/9), scales (1 ± 0.25), translations and
  shears (±π/18); the matrix is ``Shear · Scale · R_z · R_y · R_x`` with the translation;
* B's dense features are moved by that affine and, with A's, go to the **deformable head**
  ``DoubleConv(2·C → 16)`` → conv 3 → a displacement field φ (voxels);
* B is warped by the affine, then by φ; loss ``λ_ncc·(1 − mean local NCC²(warped B, A))``
  (window 9) ``+ λ_res·mean((H(N(corrupt A)) − A)²)`` (the restoration head H)
  ``+ λ_smooth·S(φ)``, weights 1 : 1 : 1.

Conventions: the affine is in ``F.affine_grid``'s normalised coordinates (x, y[, z] = tensor axes
reversed); the published translation (divided by the image size along the matrix row, an axis
order quirk for non-cubic volumes) is divided here by the size of the axis it moves along.
In 2D: one rotation, two scales, two translations, two shears (``Shear = [[1, tan a], [tan b, 1]]``).

Simplified here: the core's random affine replaces the published elastic + affine augmentation;
the published code's ``.cuda()`` matrix assembly (no gradient to the affine head through
``torch.FloatTensor``) is replaced by a differentiable one, so the affine head learns from the
NCC; ``detach_affine: true`` restores the published behaviour (the affine is used but not trained by the
NCC); the width of the affine head is ``affine_width`` (256 as published) and its convolution input
the backbone's bottleneck width.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...augment.corruption import CorruptionConfig
from ...augment.painting import genesis_corrupt
from ...losses import smoothness
from ...losses.similarity import local_ncc_map
from ...nets.blocks import DoubleConv, conv_nd
from ...spatial import apply_affine, warp
from ..core import GeminiModule, Losses
from .pooling import forward_with_bottleneck, global_pool

__all__ = ["GVSLPretrain", "affine_from_params", "ncc_loss"]


def ncc_loss(i: torch.Tensor, j: torch.Tensor, window: int = 9) -> torch.Tensor:
    """GVSL's ``1 − mean(cc)`` with cc the squared local NCC (window ``window``), unmasked."""
    return 1.0 - local_ncc_map(i, j, window).mean()


def affine_from_params(rot: torch.Tensor, scale: torch.Tensor, trans: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """``[Shear · diag(scale) · R | trans]`` (N, nd, nd + 1) from angles (N, 1 or 3), scales (N, nd),
    translations (N, nd) and shear angles (N, 2 or 6) (3D order xy, xz, yx, yz, zx, zy)."""
    n, nd = scale.shape
    eye = torch.eye(nd, dtype=scale.dtype, device=scale.device).expand(n, nd, nd)
    c, s = torch.cos(rot), torch.sin(rot)
    if nd == 2:
        r = torch.stack([torch.stack([c[:, 0], -s[:, 0]], -1), torch.stack([s[:, 0], c[:, 0]], -1)], -2)
        off = [(0, 1), (1, 0)]
    else:
        r = eye
        for axis in (2, 1, 0):  # R_z · R_y · R_x (R_x applied first)
            i, j = [a for a in range(3) if a != axis]
            rm = eye.clone()
            sign = -1.0 if axis == 1 else 1.0  # R_y = [[c, 0, s], [0, 1, 0], [−s, 0, c]]
            rm[:, i, i], rm[:, j, j] = c[:, axis], c[:, axis]
            rm[:, i, j], rm[:, j, i] = -sign * s[:, axis], sign * s[:, axis]
            r = r @ rm
        off = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    sh = eye.clone()
    for m, (i, j) in enumerate(off):
        sh[:, i, j] = torch.tan(shear[:, m])
    mat = sh @ torch.diag_embed(scale) @ r
    return torch.cat([mat, trans[:, :, None]], -1)


class GVSLPretrain(GeminiModule):
    """GVSL on the GEMINI backbone (backbone + restoration head ``head`` + affine and deformable heads).

    Args (beyond the core): ``lambda_ncc``, ``lambda_restore``, ``lambda_smooth`` (1 : 1 : 1), ``ncc_window``,
    ``affine_width``, ``corruption`` (shuffling / intensity), ``paint_prob``, ``inpaint_rate``,
    ``detach_affine`` (no gradient through the affine matrix, as the published code).
    """

    network_parts = ("backbone", "head")

    def __init__(self, *args: Any, lambda_ncc: float = 1.0, lambda_restore: float = 1.0, lambda_smooth: float = 1.0,
                 ncc_window: int = 9, affine_width: int = 256, corruption: CorruptionConfig | None = None,
                 paint_prob: float = 0.9, inpaint_rate: float = 0.2, detach_affine: bool = False, **kwargs: Any):
        kwargs.setdefault("out_channels", kwargs.get("in_channels", 1))
        super().__init__(*args, **kwargs)
        nd, w = self.hparams.spatial_dims, self.hparams.widths
        self.corruption = corruption or CorruptionConfig(shuffle_prob=0.8, nonlinear_prob=0.9)
        self.affine_conv = DoubleConv(nd, 2 * w[4], affine_width)
        self.fc_rot = nn.Linear(affine_width, 1 if nd == 2 else 3)
        self.fc_scale = nn.Linear(affine_width, nd)
        self.fc_trans = nn.Linear(affine_width, nd)
        self.fc_shear = nn.Linear(affine_width, nd * (nd - 1))
        self.deform_conv = DoubleConv(nd, 2 * w[8], 16)
        self.out_flow = conv_nd(nd)(16, nd, 3, padding=1)

    def affine(self, g_moving: torch.Tensor, g_fixed: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """The affine (N, nd, nd + 1) that resamples the moving image onto the fixed one, from bottlenecks."""
        h = global_pool(self.affine_conv(torch.cat([g_moving, g_fixed], 1)))
        rot = self.fc_rot(h).clamp(-1, 1) * (math.pi / 9)
        scale = self.fc_scale(h).clamp(-1, 1) * 0.25 + 1
        shear = self.fc_shear(h).clamp(-1, 1) * (math.pi / 18)
        size = torch.tensor(list(reversed(spatial)), dtype=h.dtype, device=h.device)
        return affine_from_params(rot, scale, self.fc_trans(h) / size, shear)

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        x_a = batch["image_a"]
        out = dict(batch, corrupted_a=genesis_corrupt(x_a.clamp(0, 1), self.corruption, self.hparams.paint_prob,
                                                      self.hparams.inpaint_rate, self.aug_generator))
        return self.augment(out, [("image_a", "corrupted_a", "image_b")])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        x_a, x_b = batch["image_a"], batch["image_b"]
        g, f = forward_with_bottleneck(self.net.backbone, torch.cat([batch["corrupted_a"], x_b], 0))
        (g_a, g_b), (f_a, f_b) = g.chunk(2), f.chunk(2)
        theta = self.affine(g_b, g_a, tuple(x_a.shape[2:]))
        theta = theta.detach() if hp.detach_affine else theta
        flow = self.out_flow(self.deform_conv(torch.cat([apply_affine(f_b, theta), f_a], 1)))
        warped = warp(apply_affine(x_b, theta), flow)
        ncc = ncc_loss(warped, x_a, hp.ncc_window)
        res = (self.net.head(f_a).float() - x_a.float()).pow(2).mean()
        smooth = smoothness(flow)
        total = hp.lambda_ncc * ncc + hp.lambda_restore * res + hp.lambda_smooth * smooth
        yield "gvsl", {"total": total, "ncc": ncc.detach(), "restore": res.detach(), "smooth": smooth.detach()}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
