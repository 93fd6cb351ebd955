"""Supervised segmentation losses of GEMINI-Semi (docs/METHOD.md §3)."""

from __future__ import annotations

import torch


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − mean_{b,c} (2Σyp + 1)/(Σy² + Σp² + 1)``; prob and one-hot/multi-label target (N, K, *S)."""
    p, y = prob.flatten(2), target.float().flatten(2)
    return 1.0 - ((2 * (y * p).sum(-1) + 1) / ((y * y).sum(-1) + (p * p).sum(-1) + 1)).mean()


def softmax_seg_loss(logits: torch.Tensor, target_onehot: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """Multi-class: p = softmax; ``weight·(−mean(y·log(p + 1e-6)) + Dice)``. (N, K, *S) each."""
    p = torch.softmax(logits.float(), dim=1)
    y = target_onehot.float()
    ce = -(y * torch.log(p + 1e-6)).mean()
    return weight * (ce + soft_dice_loss(p, y))


def sigmoid_seg_loss(logits: torch.Tensor, target: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """Multi-label: p = sigmoid; ``weight·(BCE + Dice)`` with the published 1e-6 guards. (N, K, *S) each."""
    p = torch.sigmoid(logits.float())
    y = target.float()
    bce = -(y * torch.log(p + 1e-6) + (1 - y) * torch.log(1 - p + 1e-6)).mean()
    return weight * (bce + soft_dice_loss(p, y))
