"""Diagnostics of dense features: how alike the features of different voxels are."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["feature_similarity"]


@torch.no_grad()
def feature_similarity(features: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of the features (N, C, *S) over all ordered voxel pairs of each image
    (self-pairs included), averaged over the batch: a scalar in [0, 1].

    Computed exactly without forming the pairs: for unit vectors ``u_p``,
    ``mean_{p,q} <u_p, u_q> = |mean_p u_p|²``. Near 1: every voxel has (nearly) the same feature
    direction — collapsed features that carry no dense information; near 0: spread out.
    """
    u = F.normalize(features.float().flatten(2), dim=1)
    return u.mean(-1).pow(2).sum(1).mean()
