"""Evaluation metrics: Dice, Jacobian determinant, folding %, SDlogJ (docs/METHOD.md §6)."""

from .dice import dice_per_class, dice_rows, mean_dice, one_hot_labels
from .features import feature_similarity
from .jacobian import folding_percent, jacobian_determinant, sdlogj

__all__ = ["dice_per_class", "feature_similarity", "folding_percent", "jacobian_determinant", "mean_dice", "one_hot_labels", "sdlogj"]
from .objects import (  # noqa: E402
    AverageHausdorffDistance,
    DiceScore,
    FoldingPercent,
    HausdorffDistance95,
    PerCaseMetric,
    SDLogJ,
)
from .surface import (  # noqa: E402
    AVD_EMPTY_POLICIES,
    average_hausdorff_distance,
    avd_per_class,
    foreground_masks,
    hd95_per_class,
    normalise_spacing,
    unable_cases,
)

__all__ += [
    "AVD_EMPTY_POLICIES",
    "AverageHausdorffDistance",
    "DiceScore",
    "FoldingPercent",
    "HausdorffDistance95",
    "PerCaseMetric",
    "SDLogJ",
    "avd_per_class",
    "average_hausdorff_distance",
    "dice_rows",
    "foreground_masks",
    "hd95_per_class",
    "normalise_spacing",
    "unable_cases",
]
