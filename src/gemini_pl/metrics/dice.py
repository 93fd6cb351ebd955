"""Dice overlap (background excluded): the one Dice of the project, used by the metric objects
(:class:`~gemini_pl.metrics.DiceScore`) and the functional helpers below (docs/METHOD.md §6)."""

from __future__ import annotations

import math

import torch

__all__ = ["dice_per_class", "dice_rows", "mean_dice", "one_hot_labels"]


def one_hot_labels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, 1, *S) integer label map → (N, K, *S) float one-hot."""
    if label.shape[1] != 1:
        raise ValueError(f"label maps must be (N, 1, *S), got {tuple(label.shape)}")
    return torch.nn.functional.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1).float()


def dice_rows(pred_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """Dice per case and class of boolean masks (N, C, *S) → (N, C); NaN where the target is empty.

    Equal to MONAI's ``compute_dice(..., ignore_empty=True)`` (tested).
    """
    p = pred_masks.flatten(2).float()
    t = target_masks.flatten(2).float()
    inter = (p * t).sum(-1)
    denom = p.sum(-1) + t.sum(-1)
    dice = 2 * inter / denom.clamp_min(1e-12)
    return torch.where(t.sum(-1) > 0, dice, torch.full_like(dice, math.nan))


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class Dice of two label maps (N, 1, *S), classes 1..K-1 → (N, K-1).

    A class absent from the target gets NaN and does not count in :func:`mean_dice`.
    """
    return dice_rows(one_hot_labels(pred, num_classes)[:, 1:], one_hot_labels(target, num_classes)[:, 1:])


def mean_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over the foreground classes present in the target, per case: (N,)."""
    return torch.nanmean(dice_per_class(pred, target, num_classes), dim=1)
