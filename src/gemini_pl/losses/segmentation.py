"""Supervised segmentation losses of GEMINI-Semi (docs/METHOD.md §3), and a class-balanced
cross-entropy that the paper does not use (``class_balanced_ce``, see :func:`class_balanced_ce`)."""

from __future__ import annotations

import torch


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − mean_{b,c} (2Σyp + 1)/(Σy² + Σp² + 1)``; prob and one-hot/multi-label target (N, K, *S)."""
    p, y = prob.flatten(2), target.float().flatten(2)
    return 1.0 - ((2 * (y * p).sum(-1) + 1) / ((y * y).sum(-1) + (p * p).sum(-1) + 1)).mean()


def class_balanced_ce(logits: torch.Tensor, target: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Cross-entropy averaged per class over the batch, then over the classes present (beyond the paper).

    ``logits`` and ``target`` (N, K, *S); ``target`` one-hot, multi-label 0/1 or soft (e.g. a warped
    one-hot label). Multiclass (softmax): for each class c with ``Σ y_c > 0`` over the whole batch,
    ``CE_c = Σ y_c·(−log p_c) / Σ y_c``; the loss is the mean of the ``CE_c``. Multilabel (sigmoid): for
    each channel, ``½(positives' mean BCE + negatives' mean BCE)``, each part over the voxels of its
    side (weights y and 1 − y), averaged over the channels (a side with no weight counts 0).

    Every class present weighs the same whatever its size, so the gradient ``p − y`` on a structure of
    30 pixels is not 1/300 of the background's, and unlike the Dice term it stays near
    ``−1/(Σ y_c · classes present)`` per structure pixel while the softmax puts the structure's
    probability near zero (the Dice gradient on a logit scales with p); only below p ≈ 1e-6 does the
    published guard log(p + 1e-6), kept here, halve it. With classes of equal size it equals the plain
    mean CE times K (multiclass). A class (channel side) counts as present when its weight exceeds 1e-6.
    """
    p = torch.sigmoid(logits.float()) if multilabel else torch.softmax(logits.float(), dim=1)
    return _balanced_ce(p, target.float(), multilabel)


def _balanced_ce(p: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """:func:`class_balanced_ce` from the probabilities ``p`` (sigmoid or softmax of the logits)."""
    dims = [0] + list(range(2, p.dim()))
    if multilabel:
        pos = _side_mean(y, -torch.log(p + 1e-6), dims)
        neg = _side_mean(1 - y, -torch.log(1 - p + 1e-6), dims)
        return (0.5 * (pos + neg)).mean()
    mass = y.sum(dims)
    per_class = (y * -torch.log(p + 1e-6)).sum(dims) / mass.clamp_min(1e-6)
    present = mass > 1e-6
    return per_class[present].sum() / present.sum().clamp_min(1)


def _side_mean(weight: torch.Tensor, loss: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Per channel: ``Σ weight·loss / Σ weight`` over ``dims``, 0 where the weight is not above 1e-6."""
    mass = weight.sum(dims)
    return torch.where(mass > 1e-6, (weight * loss).sum(dims) / mass.clamp_min(1e-6), torch.zeros_like(mass))


def softmax_seg_loss(logits: torch.Tensor, target_onehot: torch.Tensor, weight: float = 100.0,
                     balanced: float = 0.0) -> torch.Tensor:
    """Multi-class: p = softmax; ``weight·(−mean(y·log(p + 1e-6)) + Dice + balanced·CE_balanced)``.
    (N, K, *S) each; ``balanced`` > 0 adds :func:`class_balanced_ce` (0: the published loss)."""
    p = torch.softmax(logits.float(), dim=1)
    y = target_onehot.float()
    ce = -(y * torch.log(p + 1e-6)).mean()
    loss = ce + soft_dice_loss(p, y)
    if balanced > 0:
        loss = loss + balanced * _balanced_ce(p, y, multilabel=False)
    return weight * loss


def sigmoid_seg_loss(logits: torch.Tensor, target: torch.Tensor, weight: float = 100.0,
                     balanced: float = 0.0) -> torch.Tensor:
    """Multi-label: p = sigmoid; ``weight·(BCE + Dice + balanced·BCE_balanced)`` with the published 1e-6
    guards. (N, K, *S) each; ``balanced`` > 0 adds :func:`class_balanced_ce` (0: the published loss)."""
    p = torch.sigmoid(logits.float())
    y = target.float()
    bce = -(y * torch.log(p + 1e-6) + (1 - y) * torch.log(1 - p + 1e-6)).mean()
    loss = bce + soft_dice_loss(p, y)
    if balanced > 0:
        loss = loss + balanced * _balanced_ce(p, y, multilabel=True)
    return weight * loss
