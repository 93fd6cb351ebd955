"""Contrastive losses of the global methods: NT-Xent (SimCLR) and InfoNCE with a queue (MoCo v2).

:func:`nt_xent`: the 2N views of N images, z1[i] and z2[i] the two views of image i; each view's
positive is the other view of its image, its negatives the 2N − 2 views of the other images::

    ℓ(i, j) = −log( exp(s_ij / τ) / Σ_{k ≠ i} exp(s_ik / τ) ),   s = cosine similarity,
    L = mean over the 2N anchors.

:func:`info_nce` (MoCo's form, shared with the dense baselines): each query against its key and
the rows of a queue of past keys, label 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..baselines.dcrl import info_nce

__all__ = ["info_nce", "nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent of two views z1, z2 (N, D) (normalised here); a scalar."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)
