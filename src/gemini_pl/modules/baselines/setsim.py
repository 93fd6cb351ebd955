"""SetSim (Wang et al., CVPR 2022): set similarity for dense self-supervised representation learning.

As the paper and its official code (DerrickWang005/SetSim.pytorch: ``setstim/framework.py``,
``setstim/matcher.py``, ``train_pretrain.sh``), built on DenseCL's two branches:

* global branch: MoCo v2 — pooled backbone features → fc-ReLU-fc → InfoNCE against a queue;
* set branch: a conv-ReLU-conv projector on the backbone's feature grid; query cells from the
  online encoder on view 1, key cells from the momentum encoder (EMA 0.999) on view 2;
* **corresponding sets**: the attention map of a view is the channel mean of its squared backbone
  features, min-max normalised per image; cells at or above ``att_threshold`` (0.7) form the view's
  set; query cell i and key cell j correspond when both are in their sets and the cosine of their
  backbone features is at least ``neg_threshold`` (0.2); cells whose centres are closer than
  ``geo_threshold`` (0.5) cell diagonals in the image (``--geometry``) correspond too;
* **cross-view nearest neighbours** (the structured neighbourhood): each query cell that has a
  corresponding cell also takes its most similar key cell as a positive;
* set loss: each query cell's mean −log-likelihood of its positives, the softmax running over its
  positive key cells and a queue of averaged dense keys (negatives); mean over the cells that have
  positives, then over images; total ``(1 − λ)·global + λ·set`` with λ = ``p_weight`` = 0.5,
  τ = 0.2, 128-d.

Simplified here (footnote of the Table II row): the GEMINI U-Net features pooled to ``grid`` cells
per axis instead of ResNet-50's 7 × 7 C5 map; queues of 512 keys (DenseCL's row: the age of the
published queue at 2 images per iteration); grey-level jitter only; the nearest-neighbour positives
are on (the paper's full method; the published script leaves ``--nearest`` off).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core import Losses
from .densecl import DenseCL
from .dcrl import info_nce
from .pixpro import positive_pairs

__all__ = ["SetSim", "attention_set", "set_positives", "set_loss"]


def attention_set(b: torch.Tensor, threshold: float = 0.7) -> torch.Tensor:
    """(N, P) 1/0: cells of backbone features b (N, C, P) whose min-max normalised attention
    (channel mean of the squared features) is at least ``threshold``."""
    a = b.float().pow(2).mean(1)
    lo, hi = a.min(-1, keepdim=True).values, a.max(-1, keepdim=True).values
    return ((a - lo) / (hi - lo + 1e-10) >= threshold).float()


@torch.no_grad()
def set_positives(b_q: torch.Tensor, b_k: torch.Tensor, att_threshold: float = 0.7, neg_threshold: float = 0.2,
                  geometry: torch.Tensor | None = None, nearest: bool = True) -> torch.Tensor:
    """SetSim's matcher: (N, P, P') 1/0 positives of query cells (backbone features b_q (N, C, P))
    among key cells (b_k (N, C, P')): both in their attention sets and cosine ≥ ``neg_threshold``;
    or'ed with ``geometry`` (N, P, P') when given; then, for every query cell with a positive, its
    most similar key cell (``nearest``)."""
    cos = torch.einsum("ncp,ncq->npq", F.normalize(b_q.float(), dim=1), F.normalize(b_k.float(), dim=1))
    mask = attention_set(b_q, att_threshold)[:, :, None] * attention_set(b_k, att_threshold)[:, None, :]
    mask = mask * (cos >= neg_threshold).float()
    if geometry is not None:
        mask = torch.maximum(mask, geometry.to(mask))
    if nearest:
        nn_mask = F.one_hot(cos.argmax(-1), cos.shape[-1]).to(mask)
        mask = torch.maximum(mask, nn_mask * (mask.sum(-1, keepdim=True) > 0).to(mask))
    return mask


def set_loss(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """SetSim's set-level loss: q (N, D, P), k (N, D, P') normalised projections, pos (N, P, P') 1/0,
    negatives (K, D). Row i: ``−Σ_j pos_ij log(e^{l_ij} / (Σ_{j'} pos_ij' e^{l_ij'} + Σ_n e^{l_in})) / Σ_j pos_ij``
    with ``l = q·k / τ``; the rows with positives averaged per image, then the images averaged."""
    l_pos = torch.einsum("ndp,ndq->npq", q.float(), k.float()) / temperature
    l_neg = torch.einsum("ndp,kd->npk", q.float(), negatives.float()) / temperature
    pos = pos.float()
    # log of the denominator: the positive key cells and the queue
    masked = l_pos.masked_fill(pos == 0, float("-inf"))
    log_den = torch.logsumexp(torch.cat([masked, l_neg], -1), -1, keepdim=True)
    log_prob = (l_pos - log_den).masked_fill(pos == 0, 0.0)
    row = -(pos * log_prob).sum(-1) / (pos.sum(-1) + 1e-8)
    rows_with_pos = (pos.sum(-1) > 0).float().sum(-1)
    return (row.sum(-1) / (rows_with_pos + 1e-8)).mean()


class SetSim(DenseCL):
    """SetSim on the GEMINI backbone (DenseCL's branches with SetSim's matcher and set loss).

    Args (beyond :class:`~.densecl.DenseCL`; ``lambda_dense`` is SetSim's ``p_weight``):
        att_threshold: attention threshold of a view's set.
        neg_threshold: smallest backbone cosine of two corresponding set cells.
        geo_threshold: geometric correspondence distance, in cell diagonals (``None``: off).
        nearest: add each matched query cell's cross-view nearest neighbour.
    """

    def __init__(self, *args: Any, att_threshold: float = 0.7, neg_threshold: float = 0.2,
                 geo_threshold: float | None = 0.5, nearest: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        e = self.embed_views(batch)
        b1, q_grid, q, b2, z2, k = e["b1"], e["q_grid"], e["q"], e["b2"], e["z2"], e["k"]
        with torch.no_grad():
            geo = None
            if hp.geo_threshold is not None:
                geo = positive_pairs(batch["theta1"], batch["theta2"], b1.shape[2:], hp.geo_threshold).to(b1.device)
            pos = set_positives(b1.flatten(2), b2.flatten(2), hp.att_threshold, hp.neg_threshold, geo, hp.nearest)
        glob = info_nce(q, k, hp.temperature, self.queue.negatives())
        dense = set_loss(q_grid, F.normalize(z2, dim=1), pos, self.queue_dense.negatives(), hp.temperature)
        self.enqueue(self.queue, k)
        self.enqueue(self.queue_dense, F.normalize(z2.mean(-1), dim=1))
        lam = hp.lambda_dense
        yield "dense", {"total": (1 - lam) * glob + lam * dense, "global_nce": glob, "set_nce": dense,
                        "positives": pos.sum((1, 2)).mean()}
