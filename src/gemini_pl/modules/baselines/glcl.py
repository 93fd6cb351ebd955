"""GLCL (Chaitanya et al., NeurIPS 2020): contrastive learning of global and local features.

As the paper and its official code (krishnabits001/domain_specific_cl: ``models.py``
``encoder_pretrain_net`` / ``decoder_pretrain_net``, ``train_model/pretr_*.py``):

* **stage 1, global**: the encoder's bottleneck, globally pooled, through dense layers g1 → an
  NT-Xent (SimCLR) loss over the batch: the two augmented views of an image are positives, every
  other embedding of the batch a negative (temperature ``temp_fac`` = 0.1);
* **stage 2, local**: the encoder frozen, the decoder + 1×1-conv layers g2 give a feature map; at
  fixed local regions (3 × 3 windows at 13 positions in 2D: the 3 × 3 grid of corners / edge
  centres / centre plus the 4 quarter points) each region's flattened features through one dense
  layer (``wgt_en``) → a region embedding; two intensity-augmented versions of the same image keep
  the regions aligned: the same region of the other version is the positive, the other regions of
  both versions the negatives; the loss averages both directions;
* then the whole network is fine-tuned on the few labeled images (``finetune_five``).

The two stages run one after the other within one pre-training run: the first ``global_fraction``
of its steps stage 1, the rest stage 2.

Simplified here (footnote of the Table II row): the GEMINI U-Net (bottleneck = its fifth encoder
level, decoder output pooled to ``grid`` cells per axis); the random strategy G_R for positives
(each image its own class): the domain-specific strategies G_D / L_D need volumes split into
partitions of corresponding 2D slices, which whole 3D volumes and single 2D images do not have;
every other region of both versions is a negative (the code picks 5 of them); in 3D the region
grid is 27 + 8 positions; grey-level jitter for the intensity augmentation.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...nets.blocks import pad_to_multiple
from ..core import Losses
from .common import run_steps
from .dcrl import DensePretrainBase, projector
from .views import photometric

__all__ = ["GLCL", "local_region_starts", "nt_xent", "region_embeddings", "unet_decode", "unet_encode"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent of matched rows z1, z2 (M, D) (normalised here): row i of each is the
    other's positive, the other 2M − 2 rows negatives; mean over the 2M rows."""
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    m = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * m, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
    return F.cross_entropy(sim, target)


def local_region_starts(grid: int, nd: int, size: int = 3) -> list[tuple[int, ...]]:
    """Start indices (tensor order) of GLCL's local regions of ``size`` cells per axis on a map of
    ``grid`` cells per axis: every combination of {0, m/2, m} and of {m/4, 3m/4} per axis, m = grid − size
    (13 regions in 2D, 35 in 3D; duplicates removed, order kept)."""
    m = grid - size
    if m < 0:
        raise ValueError(f"GLCL: a map of {grid} cells per axis is smaller than a {size}-cell region; raise model.grid")
    outer = [0, m // 2, m]
    inner = [m // 4, (3 * m) // 4]
    starts = list(itertools.product(outer, repeat=nd)) + list(itertools.product(inner, repeat=nd))
    return list(dict.fromkeys(starts))


def region_embeddings(fmap: torch.Tensor, starts: list[tuple[int, ...]], size: int = 3) -> torch.Tensor:
    """Flattened ``size``-cell windows of fmap (N, D, *G) at ``starts``: (N, R, D·size^nd)."""
    out = []
    for s in starts:
        window = fmap[(slice(None), slice(None), *(slice(i, i + size) for i in s))]
        out.append(window.flatten(1))
    return torch.stack(out, 1)


def unet_encode(backbone: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[slice]]:
    """The encoder levels [x1 … x5] of a :class:`~gemini_pl.nets.UNetBackbone` and the crop that
    undoes its padding (the backbone's forward, split in two)."""
    x, crop = pad_to_multiple(x, 16)
    x1 = backbone.inc(x)
    x2 = backbone.down1(x1)
    x3 = backbone.down2(x2)
    x4 = backbone.down3(x3)
    return [x1, x2, x3, x4, backbone.down4(x4)], crop


def unet_decode(backbone: nn.Module, levels: list[torch.Tensor], crop: list[slice]) -> torch.Tensor:
    """The decoder of a :class:`~gemini_pl.nets.UNetBackbone` on encoder levels: features (N, C, *S)."""
    x1, x2, x3, x4, x5 = levels
    y = backbone.up4(backbone.up3(backbone.up2(backbone.up1(x5, x4), x3), x2), x1)
    return y[tuple(crop)]


class GLCL(DensePretrainBase):
    """Global then local contrastive pre-training of the GEMINI U-Net (see the module doc).

    Args (beyond :class:`~.dcrl.DensePretrainBase`; ``self.projector`` is g2):
        global_fraction: share of the run's steps spent on the global stage.
        region_size: cells per axis of a local region.
        temperature: NT-Xent temperature of both stages.
    """

    def __init__(self, *args: Any, global_fraction: float = 0.5, region_size: int = 3, proj_dim: int = 128,
                 temperature: float = 0.1, **kwargs: Any):
        super().__init__(*args, proj_dim=proj_dim, temperature=temperature, **kwargs)
        nd = self.hparams.spatial_dims
        e4 = self.net.backbone.widths[4]
        self.global_projector = projector(nd, e4, e4, proj_dim)                            # g1
        self.region_head = nn.Linear(proj_dim * region_size**nd, proj_dim, bias=False)    # the dense layer on a region

    def online_parts(self) -> dict[str, nn.Module]:
        return {}   # no momentum encoder

    def global_stage(self) -> bool:
        """Stage 1 (global) while the step is within ``global_fraction`` of the run (alternating
        steps when the run has no known length)."""
        total = run_steps(self)
        step = int(self.global_step)
        if total <= 0:
            return step % 2 == 0
        return step < self.hparams.global_fraction * total

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = torch.cat([batch["image_a"], batch["image_b"]], 0) if "image_b" in batch else batch.get("image_a", batch.get("image"))
        if self.global_stage():
            return {"stage": "global", **self.views(x)}
        hp, g = self.hparams, self.aug_generator
        jitter = [photometric(x, g, hp.brightness, hp.contrast, hp.jitter_p, hp.blur_p[i], hp.blur_sigma, hp.solarize_p[i])
                  for i in (0, 1)]
        return {"stage": "local", "version1": jitter[0], "version2": jitter[1]}

    def global_loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        n = view1.shape[0]
        levels, _ = unet_encode(self.net.backbone, torch.cat([view1, view2], 0))
        pooled = levels[-1].mean(dim=tuple(range(2, levels[-1].dim())), keepdim=True)
        z = self.global_projector(pooled).flatten(1)
        return nt_xent(z[:n], z[n:], self.hparams.temperature)

    def local_loss(self, version1: torch.Tensor, version2: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        n = version1.shape[0]
        with torch.no_grad():   # the encoder is frozen in stage 2
            levels, crop = unet_encode(self.net.backbone, torch.cat([version1, version2], 0))
        fmap = self.projector(self.pool(unet_decode(self.net.backbone, levels, crop)))
        starts = local_region_starts(min(fmap.shape[2:]), hp.spatial_dims, hp.region_size)
        e = self.region_head(region_embeddings(fmap, starts, hp.region_size))   # (2N, R, D)
        return torch.stack([nt_xent(e[i], e[n + i], hp.temperature) for i in range(n)]).mean()

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        if batch["stage"] == "global":
            yield "global", {"total": self.global_loss(batch["view1"], batch["view2"])}
        else:
            yield "local", {"total": self.local_loss(batch["version1"], batch["version2"])}
