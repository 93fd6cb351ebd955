"""DenseCL (Wang et al., CVPR 2021): global + dense contrastive learning.

The dense positives are *not* given by the geometry: each pooled point of view 2 is matched to the
most similar point of view 1 by backbone-feature cosine similarity (DenseCL's correspondence);
dense InfoNCE on the projections of the matched points, plus global InfoNCE on the pooled
projections of the two views (the other images of the batch are negatives); loss
``(1 − λ_dense)·global + λ_dense·dense`` with λ_dense 0.5. (No momentum queue.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .dcrl import DensePretrainBase, info_nce

__all__ = ["DenseCL", "match_by_similarity"]


def match_by_similarity(b2: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """For every point of b2 (N, C, P) the index (N, P) of the most cosine-similar point of b1 (N, C, P')."""
    sim = torch.einsum("ncp,ncq->npq", F.normalize(b2, dim=1), F.normalize(b1, dim=1))
    return sim.argmax(-1)


class DenseCL(DensePretrainBase):
    def __init__(self, *args: Any, lambda_dense: float = 0.5, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def pair_loss(self, f1, f2, views):
        t = self.hparams.temperature
        z1, z2 = self.pool(self.projector(f1)), self.pool(self.projector(f2))
        g1, g2 = F.normalize(z1.flatten(2).mean(-1), dim=1), F.normalize(z2.flatten(2).mean(-1), dim=1)
        glob = info_nce(g2, g1, t) if g1.shape[0] > 1 else g1.new_zeros(())
        with torch.no_grad():
            match = match_by_similarity(self.pool(f2).flatten(2), self.pool(f1).flatten(2))  # (N, P)
        idx = self.sample_points(torch.ones_like(z2[:, :1]))
        q = F.normalize(self.gather(z2, idx), dim=1)
        k = F.normalize(self.gather(z1, torch.gather(match, 1, idx)), dim=1)
        dense = info_nce(q, k, t)
        lam = self.hparams.lambda_dense
        return {"total": (1 - lam) * glob + lam * dense, "global_nce": glob, "dense_nce": dense}
