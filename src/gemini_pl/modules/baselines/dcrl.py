"""Dense contrastive pre-training baselines (DCRL rows): a shared base, each method adds its loss.

:class:`DensePretrainBase` makes two augmented views of the same image: view 1 = the image with
an intensity jitter, view 2 = a random affine of it (docs/METHOD.md §5 ranges) with another jitter.
The affine is known, so view 1's dense outputs resampled by it lie on view 2's grid
(``align``), with a validity mask of the voxels that came from inside view 1. Each method
defines :meth:`pair_loss` on the two views' backbone features. The backbone is ``self.net.backbone``
(a :class:`~gemini_pl.nets.GeminiNet` without deformer and head) so that
``Segmentation(init_from=<last.ckpt>)`` fine-tunes it (the "same five-shot fine-tuning").

Training batches: ``data.train_mode: pairs`` (both images of a pair are used as single images).
Validation: none (``limit_val_batches: 0``) — pre-training is judged by the fine-tuning.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...nets.blocks import conv_nd
from ...spatial import apply_affine
from ..augmentation import draw_affine
from ..core import GeminiModule, Losses

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


class DensePretrainBase(GeminiModule):
    """Two-view dense pre-training of the GEMINI backbone.

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`'s ``spatial_dims``, ``in_channels``,
    ``widths``, ``lr``, ``rotation``, ``scale_range``, ``max_consecutive_nonfinite``, ``aug_seed``):
        proj_dim: projection output channels.
        grid: side of the pooled grid on which dense losses are computed (cost control).
        num_samples: sampled grid points per image for the InfoNCE losses.
        temperature: InfoNCE temperature.
        jitter: intensity jitter (gain and bias U(−j, j)).
    """

    network_parts = ("backbone",)
    #: the name under which the loss is logged (``train/<name>/...``)
    loss_name = "dense"

    def __init__(
        self,
        *args: Any,
        proj_dim: int = 64,
        grid: int = 8,
        num_samples: int = 64,
        temperature: float = 0.2,
        jitter: float = 0.1,
        spatial_dims: int = 3,
        **kwargs: Any,
    ):
        super().__init__(*args, spatial_dims=spatial_dims, **kwargs)
        c = self.net.backbone.out_channels
        self.projector = projector(self.hparams.spatial_dims, c, max(c, proj_dim), proj_dim)

    # ------------------------------------------------------------------ views
    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        j = self.hparams.jitter
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        gain = 1 + (torch.rand(shape, generator=self.aug_generator) * 2 - 1) * j
        bias = (torch.rand(shape, generator=self.aug_generator) * 2 - 1) * j
        return x * gain.to(x) + bias.to(x)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(view 1, view 2, θ) with view 2 = affine_θ(x): ``apply_affine(·, θ)`` maps view 1 onto view 2."""
        theta = draw_affine(self, x.device, batch=x.shape[0], per_axis_scale=True, spatial_shape=x.shape[2:])
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
    def pair_loss(self, f1: torch.Tensor, f2: torch.Tensor, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The method's loss on backbone features of view 1 and view 2 (N, C, *S); ``views`` holds
        ``view1``, ``view2`` (N, C, *S) and ``theta``, the affine mapping view 1 onto view 2."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Both images of each pair as single images, and their two views."""
        x = torch.cat([batch["image_a"], batch["image_b"]], 0) if "image_b" in batch else batch.get("image_a", batch.get("image"))
        v1, v2, theta = self.views(x)
        return {"view1": v1, "view2": v2, "theta": theta}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        f1, f2 = self.net.features(torch.cat([batch["view1"], batch["view2"]], 0)).chunk(2, 0)
        yield self.loss_name, self.pair_loss(f1, f2, batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # pre-training: nothing to validate
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
