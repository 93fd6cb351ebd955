"""DenseCL (Wang et al., CVPR 2021): global + dense contrastive learning with a momentum encoder.

As the official code (WXinlong/DenseCL: ``openselfsup/models/densecl.py``, ``necks.py``
``DenseCLNeck``, ``configs/selfsup/densecl/densecl_imagenet_200ep.py``):

* queries from the online encoder on view 1, keys from the momentum encoder (EMA, m = 0.999) on
  view 2 (one direction, as MoCo);
* global branch: the globally pooled backbone features → fc-ReLU-fc head → InfoNCE of each query
  against its key and a **queue** of past keys;
* dense branch: a conv-ReLU-conv head on the backbone's feature grid; each query cell's positive is
  the key cell with the most cosine-similar *backbone* feature (correspondence from features, not
  from the geometry); negatives: a second queue holding each past key image's averaged, normalised
  dense projection;
* loss ``(1 − λ)·global + λ·dense``, λ = 0.5, τ = 0.2, 128-d projections;
* views: MoCo v2's augmentation — random resized crops of scale 0.2–1, brightness/contrast jitter
  0.4 (p 0.8), Gaussian blur σ 0.1–2 (p 0.5), horizontal flip.

Simplified here (footnote of the Table II row): the GEMINI 2D/3D U-Net backbone (its features
pooled to a ``grid``³ or ``grid``² map) instead of ResNet-50's 7 × 7 C5 map; queues of
``queue_size`` = 512 keys instead of 65,536 — 65,536 keys are 256 iterations of 256 images in the
paper; with the 2 images of an iteration here, 512 keys keep the queue's age (how stale its
negatives are) at 256 iterations, where 65,536 would hold random initial vectors for most of a
40,000-iteration run; grey-level jitter only (no hue, saturation, grey-scale).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core import Losses
from .dcrl import DensePretrainBase, FeatureQueue, info_nce, projector, rows

__all__ = ["DenseCL", "dense_nce", "match_by_similarity"]


def match_by_similarity(b2: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """For every point of b2 (N, C, P) the index (N, P) of the most cosine-similar point of b1 (N, C, P')."""
    sim = torch.einsum("ncp,ncq->npq", F.normalize(b2, dim=1), F.normalize(b1, dim=1))
    return sim.argmax(-1)


def dense_nce(q_grid: torch.Tensor, k_grid: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor,
              negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """DenseCL's dense InfoNCE: q_grid, k_grid (N, D, P) normalised projections of the query and key
    cells, q_b, k_b (N, C, P) their backbone features; each query cell's positive is the key cell of
    the most similar backbone feature, its negatives the rows of ``negatives`` (K, D)."""
    with torch.no_grad():
        match = match_by_similarity(q_b, k_b)
    k_pos = torch.gather(k_grid, 2, match[:, None].expand(-1, k_grid.shape[1], -1))
    return info_nce(rows(q_grid), rows(k_pos), temperature, negatives)


def _global_pool(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=tuple(range(2, t.dim())), keepdim=True)


class DenseCL(DensePretrainBase):
    """DenseCL on the GEMINI backbone.

    Args (beyond :class:`~.dcrl.DensePretrainBase`):
        lambda_dense: weight λ of the dense loss (the global one has 1 − λ).
        queue_size: keys in each of the two queues.
    """

    def __init__(self, *args: Any, lambda_dense: float = 0.5, queue_size: int = 512, proj_dim: int = 128,
                 temperature: float = 0.2, momentum: float = 0.999, **kwargs: Any):
        super().__init__(*args, proj_dim=proj_dim, temperature=temperature, momentum=momentum, **kwargs)
        c = self.net.backbone.out_channels
        self.global_projector = projector(self.hparams.spatial_dims, c, max(c, proj_dim), proj_dim)
        self.queue = FeatureQueue(queue_size, proj_dim)
        self.queue_dense = FeatureQueue(queue_size, proj_dim)
        self.build_key_encoder()

    def online_parts(self) -> dict[str, torch.nn.Module]:
        return {**super().online_parts(), "global_projector": self.global_projector}

    def embed_views(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Both views through the online (view1) and key (view2, no gradient) encoders.

        Returns ``b1``/``b2`` the pooled backbone grids (N, C, *g); ``q_grid`` the normalised dense
        queries (N, D, G) and ``z2`` the key projections (N, D, G), G = prod(g); ``q``/``k`` the
        normalised global embeddings (N, D).
        """
        f1 = self.net.features(batch["view1"])
        b1 = self.pool(f1)
        out = {"b1": b1, "q_grid": F.normalize(self.projector(b1).flatten(2), dim=1),
               "q": F.normalize(self.global_projector(_global_pool(f1)).flatten(1), dim=1)}
        with torch.no_grad():
            f2 = self.key("backbone", batch["view2"])
            out["b2"] = self.pool(f2)
            out["z2"] = self.key("projector", out["b2"]).flatten(2)
            out["k"] = F.normalize(self.key("global_projector", _global_pool(f2)).flatten(1), dim=1)
        return out

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        e = self.embed_views(batch)
        b1, q_grid, q, b2, z2, k = e["b1"], e["q_grid"], e["q"], e["b2"], e["z2"], e["k"]
        glob = info_nce(q, k, hp.temperature, self.queue.negatives())
        dense = dense_nce(q_grid, F.normalize(z2, dim=1), b1.detach().flatten(2), b2.flatten(2),
                          self.queue_dense.negatives(), hp.temperature)
        self.enqueue(self.queue, k)
        self.enqueue(self.queue_dense, F.normalize(z2.mean(-1), dim=1))
        lam = hp.lambda_dense
        yield "dense", {"total": (1 - lam) * glob + lam * dense, "global_nce": glob, "dense_nce": dense}
