"""Dense contrastive pre-training baselines (DCRL rows): a shared base, each method adds its loss.

:class:`DensePretrainBase` gives every method:

* **two views** of each unlabeled image (:mod:`.views`): random resized crops (+ flip) as known
  affines ``theta1``, ``theta2`` and the photometric jitter of the method's paper (the crop scale,
  jitter, blur and solarisation probabilities are arguments, defaulting to MoCo v2's, which
  DenseCL and VADeR use; PixPro overrides them with BYOL's);
* a **momentum (key) encoder**: frozen copies of the online parts (:meth:`online_parts`: backbone,
  projector, and whatever head the method adds), updated by EMA in :meth:`on_train_batch_end`
  after the core's own end-of-batch work; :meth:`key` runs them without gradients;
* **queues of negatives** (:class:`FeatureQueue`): registered buffers (checkpointed, moved with the
  module), filled on the device without host reads (:meth:`enqueue`, keys gathered over DDP
  ranks), and the InfoNCE against them (:func:`info_nce`).

The online backbone is ``self.net.backbone`` (a :class:`~gemini_pl.nets.GeminiNet` without deformer
and head), so ``Segmentation(init_from=<last.ckpt>)`` fine-tunes it (the "same five-shot
fine-tuning"); the key encoder, heads and queues are not transferred. Dense losses on backbone
features pooled to a ``grid``-cell map (the papers work on a ResNet's 7 × 7 C5 map; here the
GEMINI U-Net's full-resolution features, pooled to keep the cost of all-pairs losses bounded).

Training batches: ``data.train_mode: pairs`` (both images of a pair are used as single images).
Validation: none (``limit_val_batches: 0``) — pre-training is judged by the fine-tuning.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...nets.blocks import conv_nd
from ...spatial import apply_affine
from ..core import GeminiModule
from .common import ema_update
from .views import crop_affines, photometric

__all__ = ["DensePretrainBase", "FeatureQueue", "info_nce", "projector", "rows"]


def projector(spatial_dims: int, channels: int, hidden: int, out: int) -> nn.Sequential:
    """A projection head applied per position: 1×1 conv → ReLU → 1×1 conv (on a (N, C, 1, …) map it
    is the fc → ReLU → fc of a global head)."""
    conv = conv_nd(spatial_dims)
    return nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, out, 1))


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, negatives: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of matched rows q, k (M, D), L2-normalised: row i of k is q_i's positive.

    Negatives: the other rows of k (``negatives=None``: in-batch), or the rows of ``negatives``
    (K, D) (a queue, MoCo's form: logits ``[q·k_i, q·n_1 … q·n_K] / τ``, label 0). ``weight`` (M,)
    averages the rows' losses (0: the row does not count).
    """
    if negatives is None:
        logits = q @ k.t() / temperature
        target = torch.arange(q.shape[0], device=q.device)
    else:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.t()], 1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits.float(), target, reduction="none")
    if weight is None:
        return loss.mean()
    w = weight.to(loss)
    return (w * loss).sum() / w.sum().clamp(min=1e-6)


class FeatureQueue(nn.Module):
    """A ring buffer of ``size`` L2-normalised keys of dimension ``dim`` (MoCo's queue), initialised
    with random unit vectors. Buffers: ``keys`` (size, dim) and ``ptr`` (the next slot)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        """The queued keys (a copy: the queue is updated before the backward pass)."""
        return self.keys.clone()

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (M, dim) at the pointer (wrapping; the last ``size`` if M > size) and advance
        it, on the device. Non-finite keys leave the queue unchanged (a skipped step must not poison it)."""
        size = self.keys.shape[0]
        keys = keys.detach().to(self.keys.dtype)[-size:]
        idx = (self.ptr + torch.arange(keys.shape[0], device=self.keys.device)) % size
        keys = torch.where(torch.isfinite(keys).all(), keys, self.keys.index_select(0, idx))
        self.keys.index_copy_(0, idx, keys)
        self.ptr.copy_((self.ptr + keys.shape[0]) % size)


class DensePretrainBase(GeminiModule):
    """Two-view dense pre-training of the GEMINI backbone with a momentum encoder.

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`'s ``spatial_dims``, ``in_channels``,
    ``widths``, ``lr``, ``max_consecutive_nonfinite``, ``aug_seed``):
        proj_dim: projection output channels.
        grid: cells per axis of the pooled map on which dense losses are computed.
        num_samples: sampled points per image (methods that sample points).
        temperature: InfoNCE temperature.
        momentum: EMA decay of the key encoder.
        crop_scale: area (volume) fraction range of a view's random resized crop.
        flip: mirror the x axis of a view with probability ½.
        brightness, contrast, jitter_p: brightness/contrast jitter strengths and probability.
        blur_p, blur_sigma: Gaussian blur probability per view (view 1, view 2) and σ range (voxels).
        solarize_p: solarisation probability per view.
    """

    network_parts = ("backbone",)

    def __init__(
        self,
        *args: Any,
        proj_dim: int = 128,
        grid: int = 8,
        num_samples: int = 64,
        temperature: float = 0.2,
        momentum: float = 0.999,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        flip: bool = True,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_p: tuple[float, float] = (0.5, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: tuple[float, float] = (0.0, 0.0),
        spatial_dims: int = 3,
        **kwargs: Any,
    ):
        super().__init__(*args, spatial_dims=spatial_dims, **kwargs)
        c = self.net.backbone.out_channels
        self.projector = projector(self.hparams.spatial_dims, c, max(c, proj_dim), proj_dim)

    # ------------------------------------------------------------------ momentum encoder
    def online_parts(self) -> dict[str, nn.Module]:
        """The online modules the key encoder copies (methods add their heads)."""
        return {"backbone": self.net.backbone, "projector": self.projector}

    def build_key_encoder(self) -> None:
        """Frozen copies of :meth:`online_parts` (call at the end of a method's ``__init__``)."""
        self.key_encoder = nn.ModuleDict({k: copy.deepcopy(m) for k, m in self.online_parts().items()})
        self.key_encoder.requires_grad_(False)

    def momentum_at(self, step: int) -> float:
        """The key encoder's EMA decay after optimiser step ``step`` (constant by default)."""
        return float(self.hparams.momentum)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        m = self.momentum_at(int(self.global_step))
        for name, online in self.online_parts().items():
            ema_update(self.key_encoder[name], online, m)

    @torch.no_grad()
    def key(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The key encoder's part ``name`` on x, without gradients."""
        return self.key_encoder[name](x)

    def enqueue(self, queue: FeatureQueue, keys: torch.Tensor) -> None:
        """Push keys (M, D) into ``queue``, gathered from every DDP rank first (as MoCo)."""
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            keys = self.all_gather(keys.detach()).flatten(0, 1)
        queue.push(keys)

    # ------------------------------------------------------------------ views
    def views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Two crops of every image with their affines (``view1``, ``view2``, ``theta1``, ``theta2``;
        the affines stay on the CPU, where the correspondences are computed)."""
        hp, g = self.hparams, self.aug_generator
        out: dict[str, torch.Tensor] = {}
        for i in (1, 2):
            theta = crop_affines(x.shape[0], hp.spatial_dims, hp.crop_scale, flip=hp.flip, generator=g)
            view = apply_affine(x, theta.to(x.device, non_blocking=True))
            out[f"view{i}"] = photometric(view, g, hp.brightness, hp.contrast, hp.jitter_p, hp.blur_p[i - 1],
                                          hp.blur_sigma, hp.solarize_p[i - 1])
            out[f"theta{i}"] = theta
        return out

    def pool(self, t: torch.Tensor) -> torch.Tensor:
        """Average-pool a dense map to ``grid`` cells per axis (fewer where the map is smaller)."""
        size = [min(self.hparams.grid, s) for s in t.shape[2:]]
        return F.adaptive_avg_pool2d(t, size) if t.dim() == 4 else F.adaptive_avg_pool3d(t, size)

    def pointwise(self, head: nn.Module, t: torch.Tensor) -> torch.Tensor:
        """A 1×1-conv head on point features (N, C, M) → (N, D, M)."""
        extra = (1,) * (self.hparams.spatial_dims - 1)
        return head(t.reshape(*t.shape, *extra)).reshape(t.shape[0], -1, t.shape[2])

    # ------------------------------------------------------------------ step
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Both images of each pair as single images, and their two views."""
        x = torch.cat([batch["image_a"], batch["image_b"]], 0) if "image_b" in batch else batch.get("image_a", batch.get("image"))
        return self.views(x)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # pre-training: nothing to validate
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None



def rows(t: torch.Tensor) -> torch.Tensor:
    """Point vectors (N, D, P) → rows (N·P, D)."""
    return t.transpose(1, 2).reshape(-1, t.shape[1])
