"""Dice overlap of label maps (background excluded), the registration/segmentation score of METHOD §6."""

from __future__ import annotations

import torch
from monai.metrics import compute_dice


def one_hot_labels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, 1, *S) integer label map → (N, K, *S) float one-hot."""
    if label.shape[1] != 1:
        raise ValueError(f"label maps must be (N, 1, *S), got {tuple(label.shape)}")
    return torch.nn.functional.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1).float()


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class Dice (MONAI) of two label maps (N, 1, *S), classes 1..K-1 → (N, K-1).

    A class absent from the target gets NaN and does not count in :func:`mean_dice`.
    """
    return compute_dice(
        one_hot_labels(pred, num_classes), one_hot_labels(target, num_classes), include_background=False, ignore_empty=True
    )


def mean_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over the foreground classes present in the target, per case: (N,)."""
    return torch.nanmean(dice_per_class(pred, target, num_classes), dim=1)
