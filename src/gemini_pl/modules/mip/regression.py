"""Non-contrastive regression losses: BYOL's ``2 − 2·cos`` and SimSiam's negative cosine.

Both take predictions p and targets z (N, D); the target carries no gradient (BYOL: the momentum
network's projection; SimSiam: the stop-gradient of the other view's projection).

* :func:`byol_loss` ``= mean_i (2 − 2·cos(p_i, z_i)) = mean_i ‖p̂_i − ẑ_i‖²``;
* :func:`simsiam_loss` ``D(p, z) = −mean_i cos(p_i, sg(z_i))`` (−1 at best).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["byol_loss", "simsiam_loss"]


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mean(2 − 2·cos(p, z))`` with z detached."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=1)).mean()


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``−mean(cos(p, sg(z)))``."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
