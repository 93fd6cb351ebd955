"""Evaluation metrics: Dice, Jacobian determinant, folding %, SDlogJ (METHOD §6)."""

from .dice import dice_per_class, mean_dice, one_hot_labels
from .jacobian import folding_percent, jacobian_determinant, sdlogj

__all__ = ["dice_per_class", "folding_percent", "jacobian_determinant", "mean_dice", "one_hot_labels", "sdlogj"]
