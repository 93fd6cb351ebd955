"""Dense contrastive pre-training baselines (DCRL rows): a shared base, each method adds its loss.

:class:`DensePretrainBase` makes two augmented views of the same image: view 1 = the image with
an intensity jitter, view 2 = a random affine of it (METHOD §5 ranges) with another jitter.
The affine is known, so view 1's dense outputs resampled by it lie on view 2's grid
(``align``), with a validity mask of the voxels that came from inside view 1. Each method
defines :meth:`pair_loss` on the two views' backbone features. The backbone is ``self.net.backbone``
(a :class:`~gemini_pl.nets.GeminiNet` without deformer and head) so that
``Segmentation(init_from=<last.ckpt>)`` fine-tunes it (the "same five-shot fine-tuning").

Training batches: ``data.train_mode: pairs`` (both images of a pair are used as single images).
Validation: none (``limit_val_batches: 0``) — pre-training is judged by the fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ...nets import DEFAULT_WIDTHS, GeminiNet
from ...nets.blocks import conv_nd
from ...spatial import apply_affine
from ..augmentation import draw_affine
from ..cadence import at_log_step
from ..optim import make_adam

__all__ = ["DensePretrainBase", "info_nce", "projector"]


def projector(spatial_dims: int, channels: int, hidden: int, out: int) -> nn.Sequential:
    """The dense projection head: 1×1 conv → ReLU → 1×1 conv."""
    conv = conv_nd(spatial_dims)
    return nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, out, 1))


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of matched rows: q, k (M, D) L2-normalised; row i of k is q_i's positive, the other
    rows its negatives. ``mean_i −log softmax(q kᵀ/τ)_ii``."""
    logits = q @ k.t() / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


class DensePretrainBase(L.LightningModule):
    """Two-view dense pre-training of the GEMINI backbone.

    Args:
        spatial_dims, in_channels, widths: the backbone (as the other rows).
        proj_dim: projection output channels.
        lr: Adam learning rate.
        grid: side of the pooled grid on which dense losses are computed (cost control).
        num_samples: sampled grid points per image for the InfoNCE losses.
        temperature: InfoNCE temperature.
        rotation, scale_range: range of the view-2 affine.
        jitter: intensity jitter (gain and bias U(−j, j)).
        aug_seed: augmentation seed.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        proj_dim: int = 64,
        lr: float = 1e-4,
        grid: int = 8,
        num_samples: int = 64,
        temperature: float = 0.2,
        rotation: float = math.pi / 9,
        scale_range: tuple[float, float] = (0.75, 1.25),
        jitter: float = 0.1,
        aug_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = GeminiNet(spatial_dims, in_channels, 1, widths)
        self.net.deformer = None
        self.net.head = None
        c = self.net.backbone.out_channels
        self.projector = projector(spatial_dims, c, max(c, proj_dim), proj_dim)
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(aug_seed)

    def configure_optimizers(self):
        return make_adam(self.parameters(), self.hparams.lr)

    # ------------------------------------------------------------------ views
    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        j = self.hparams.jitter
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        gain = 1 + (torch.rand(shape, generator=self.aug_generator) * 2 - 1) * j
        bias = (torch.rand(shape, generator=self.aug_generator) * 2 - 1) * j
        return x * gain.to(x) + bias.to(x)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(view 1, view 2, θ) with view 2 = affine_θ(x): ``apply_affine(·, θ)`` maps view 1 onto view 2."""
        theta = draw_affine(self, x.device, batch=x.shape[0], per_axis_scale=True)
        return self._jitter(x), self._jitter(apply_affine(x, theta)), theta

    def align(self, t: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """View-1 tensor resampled onto view 2's grid, and the validity mask (N, 1, *S)."""
        ones = torch.ones_like(t[:, :1])
        return apply_affine(t, theta), (apply_affine(ones, theta, mode="nearest") > 0.5).float()

    def pool(self, t: torch.Tensor) -> torch.Tensor:
        size = [min(self.hparams.grid, s) for s in t.shape[2:]]
        return F.adaptive_avg_pool2d(t, size) if t.dim() == 4 else F.adaptive_avg_pool3d(t, size)

    def sample_points(self, mask: torch.Tensor) -> torch.Tensor:
        """Flat indices (N, M) of ``num_samples`` valid points per image (with replacement where few)."""
        flat = mask.flatten(1) + 1e-6
        return torch.multinomial(flat.cpu(), self.hparams.num_samples, replacement=True,
                                 generator=self.aug_generator).to(mask.device)

    @staticmethod
    def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(N, C, *S) at flat indices (N, M) → (N·M, C)."""
        flat = t.flatten(2)
        return torch.gather(flat, 2, idx[:, None].expand(-1, flat.shape[1], -1)).transpose(1, 2).reshape(-1, flat.shape[1])

    # ------------------------------------------------------------------ step
    def pair_loss(self, f1: torch.Tensor, f2: torch.Tensor, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's loss on backbone features of view 1 and view 2 (N, C, *S)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = torch.cat([batch["image_a"], batch["image_b"]], 0) if "image_b" in batch else batch.get("image_a", batch.get("image"))
        v1, v2, theta = self.views(x)
        f1, f2 = self.net.features(torch.cat([v1, v2], 0)).chunk(2, 0)
        terms = self.pair_loss(f1, f2, theta)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=False, batch_size=x.shape[0])
        if at_log_step(self._trainer, batch_idx):  # progress-bar values are read on the host (cadence.py)
            self.log("loss", terms["total"].detach(), prog_bar=True, on_step=True, batch_size=x.shape[0], logger=False)
        return terms["total"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # pre-training: nothing to validate
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
