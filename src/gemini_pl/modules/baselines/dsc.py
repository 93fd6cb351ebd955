"""DSC-PM (Li et al., ACM MM 2021, "Dense Semantic Contrast for Self-Supervised Visual Representation
Learning"): dense semantic contrast, the prototype-mapping variant.

DSC learns at three granularities with a momentum encoder (MoCo v2 style), all from two views of
each image:

* **instance**: pooled backbone features → fc-ReLU-fc → InfoNCE against a queue (MoCo v2);
* **pixel, intra-image relations** ("pixel neighbours from multiple views"): a query cell of view 1
  takes as positives the key cells of view 2 that show the same image region (cell centres closer
  than ``pos_ratio`` cell diagonals, known from the crops) and its ``num_neighbours`` most similar key
  cells by backbone feature; multi-positive InfoNCE against those and a queue of averaged dense keys
  (:func:`~.setsim.set_loss`);
* **semantic, inter-image relations** (DSC-PM): ``num_prototypes`` learnable prototypes shared by
  every image; the key cells of the whole batch are mapped onto them by an equipartitioned
  (Sinkhorn–Knopp) soft assignment (:func:`prototype_targets`). Two terms: each query cell is
  trained to map to the prototype assignment of its corresponding key cells (pixel-to-prototype,
  softmax over the prototypes, temperature ``proto_temperature``, :func:`prototype_loss`), and the
  mapping's classes drive a cross-image pixel contrast — the key cells of the mini-batch in the
  query cell's class are its positives, all other key cells its negatives (:func:`semantic_contrast`),
  "pixels of the same semantic class more similar than those of different classes in one
  mini-batch".

Total ``(1 − λ)·instance + λ·pixel + λ_sem·(prototype + semantic contrast)``.

No official code was published; the losses follow the paper's description as summarised above, and
the weights (λ = 0.5 as DenseCL, λ_sem = 0.5), the Sinkhorn settings (ε = 0.05, 3 iterations, as
SwAV) and ``num_prototypes`` are this implementation's choices (footnote of the Table II row). Also
simplified: the GEMINI U-Net features pooled to ``grid`` cells per axis instead of ResNet-50's C5
map; queues of 512 keys; grey-level jitter only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Losses
from .dcrl import info_nce, rows
from .densecl import DenseCL
from .pixpro import positive_pairs
from .setsim import set_loss

__all__ = ["DSCPM", "neighbour_positives", "prototype_loss", "prototype_targets", "semantic_contrast", "sinkhorn"]


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equipartitioned soft assignment (B, K) of B rows to K prototypes from their scores (B, K)
    (SwAV's Sinkhorn–Knopp: every prototype gets B/K of the mass, every row sums to 1)."""
    q = torch.exp((scores.float() - scores.float().max()) / epsilon).t()   # (K, B)
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True).clamp(min=1e-30) / k
        q = q / q.sum(0, keepdim=True).clamp(min=1e-30) / b
    return (q * b).t()


@torch.no_grad()
def neighbour_positives(b_q: torch.Tensor, b_k: torch.Tensor, geometry: torch.Tensor, num_neighbours: int = 1) -> torch.Tensor:
    """(N, P, P') 1/0: the geometric correspondences (N, P, P') or'ed with each query cell's
    ``num_neighbours`` most cosine-similar key cells by backbone features b_q (N, C, P), b_k (N, C, P')."""
    cos = torch.einsum("ncp,ncq->npq", F.normalize(b_q.float(), dim=1), F.normalize(b_k.float(), dim=1))
    top = cos.topk(min(num_neighbours, cos.shape[-1]), dim=-1).indices
    nn_mask = torch.zeros_like(cos).scatter_(-1, top, 1.0)
    return torch.maximum(nn_mask, geometry.to(nn_mask))


@torch.no_grad()
def prototype_targets(k: torch.Tensor, prototypes: torch.Tensor, pos: torch.Tensor, epsilon: float = 0.05,
                      iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prototype mapping of key cells k (N, D, P') (normalised) onto prototypes (K, D): the
    Sinkhorn assignment of the cosines of all key cells of the batch, codes (N, P', K) (SwAV's
    convention); each query cell's target (N, P, K), the codes averaged over its corresponding key
    cells pos (N, P, P'); and which query cells have one (N, P) 1/0."""
    c = F.normalize(prototypes.float(), dim=1)
    n, d, _ = k.shape
    codes = sinkhorn(k.float().transpose(1, 2).reshape(-1, d) @ c.t(), epsilon, iterations).reshape(n, k.shape[2], -1)
    w = pos.float()
    target = torch.einsum("npq,nqk->npk", w, codes) / w.sum(-1, keepdim=True).clamp(min=1e-8)
    return codes, target, (w.sum(-1) > 0).float()


def prototype_loss(q: torch.Tensor, k: torch.Tensor, prototypes: torch.Tensor, pos: torch.Tensor,
                   temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Pixel-to-prototype contrast: q (N, D, P) query, k (N, D, P') key cells (normalised),
    prototypes (K, D), pos (N, P, P') the corresponding key cells of each query cell; targets from
    :func:`prototype_targets`; loss ``−Σ_c target_c log softmax(q·prototypes / τ)_c``, mean over the
    query cells with a correspondence."""
    _, target, has = prototype_targets(k, prototypes, pos, epsilon, iterations)
    c = F.normalize(prototypes.float(), dim=1)
    logp = F.log_softmax(torch.einsum("ndp,kd->npk", q.float(), c) / temperature, -1)
    per_cell = -(target * logp).sum(-1)
    return (per_cell * has).sum() / has.sum().clamp(min=1.0)


def semantic_contrast(q: torch.Tensor, k: torch.Tensor, q_class: torch.Tensor, k_class: torch.Tensor,
                      valid: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Cross-image pixel contrast by pseudo-class: query rows q (M, D) against every key row of the
    batch k (M', D) (normalised); the key rows of the query's class (q_class (M,), k_class (M',)) are
    its positives, all others negatives: ``−mean_pos log(e^{l_ij} / Σ_j' e^{l_ij'})``, l = q·k / τ;
    mean over the valid rows (M,) 1/0 that have a positive."""
    logits = q.float() @ k.float().t() / temperature
    log_prob = logits - torch.logsumexp(logits, -1, keepdim=True)
    pos = (q_class[:, None] == k_class[None, :]).float()
    row = -(pos * log_prob).sum(-1) / pos.sum(-1).clamp(min=1.0)
    use = valid.float() * (pos.sum(-1) > 0).float()
    return (row * use).sum() / use.sum().clamp(min=1.0)


class DSCPM(DenseCL):
    """DSC-PM on the GEMINI backbone (see the module doc).

    Args (beyond :class:`~.densecl.DenseCL`; ``lambda_dense`` weighs the pixel loss):
        lambda_semantic: weight of the pixel-to-prototype loss.
        num_prototypes: prototypes K.
        num_neighbours: cross-view feature neighbours per query cell.
        pos_ratio: geometric correspondence distance, in cell diagonals.
        proto_temperature: temperature of the prototype softmax and the Sinkhorn scores.
    """

    def __init__(self, *args: Any, lambda_semantic: float = 0.5, num_prototypes: int = 32, num_neighbours: int = 1,
                 pos_ratio: float = 0.7, proto_temperature: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prototypes = nn.Parameter(F.normalize(torch.randn(num_prototypes, self.hparams.proj_dim), dim=1))

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        hp = self.hparams
        e = self.embed_views(batch)
        b1, q_grid, q, b2, z2, k = e["b1"], e["q_grid"], e["q"], e["b2"], e["z2"], e["k"]
        k_grid = F.normalize(z2, dim=1)
        with torch.no_grad():
            geo = positive_pairs(batch["theta1"], batch["theta2"], b1.shape[2:], hp.pos_ratio).to(b1.device)
            pos = neighbour_positives(b1.flatten(2), b2.flatten(2), geo, hp.num_neighbours)
        inst = info_nce(q, k, hp.temperature, self.queue.negatives())
        pixel = set_loss(q_grid, k_grid, pos, self.queue_dense.negatives(), hp.temperature)
        semantic = prototype_loss(q_grid, k_grid, self.prototypes, geo, hp.proto_temperature)
        codes, target, has = prototype_targets(k_grid, self.prototypes, geo)
        contrast = semantic_contrast(rows(q_grid), rows(k_grid), target.argmax(-1).flatten(), codes.argmax(-1).flatten(),
                                     has.flatten(), hp.temperature)
        self.enqueue(self.queue, k)
        self.enqueue(self.queue_dense, F.normalize(z2.mean(-1), dim=1))
        lam = hp.lambda_dense
        total = (1 - lam) * inst + lam * pixel + hp.lambda_semantic * (semantic + contrast)
        yield "dense", {"total": total, "instance_nce": inst, "pixel_nce": pixel, "prototype": semantic,
                        "semantic_nce": contrast}
