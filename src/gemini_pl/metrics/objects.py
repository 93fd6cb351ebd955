"""DDP-safe metric objects (torchmetrics) for evaluation: Dice, AVD, HD95, folding %, SDlogJ.

Every metric keeps **per-case rows** as a list state that torchmetrics concatenates across
processes (``dist_reduce_fx="cat"``), so that ``compute()`` reduces over all test cases of all
ranks. A row holds one value per foreground class (Dice, AVD, HD95) or one value (folding %,
SDlogJ). ``compute()`` returns the mean over cases of the per-case value (the mean over the classes
that could be scored; NaN classes — absent from the ground truth for Dice, "unable" for the
distances — do not count); cases with no valid class at all are left out of the mean and counted
by :meth:`PerCaseMetric.num_unable`.

After each ``update`` the rows of that batch stay available as ``metric.last`` (local, never
synchronised) so that a module can also write them to a per-case table.

Units: Dice as a fraction in [0, 1] (tables print it in %), AVD/HD95 in the unit of the spacing
(mm; pixels of the stored PNG for SCR, see :class:`AverageHausdorffDistance`), folding in % of voxels.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from .dice import dice_rows, one_hot_labels
from .jacobian import folding_percent, sdlogj
from .surface import AVD_EMPTY_POLICIES, avd_per_class, foreground_masks, hd95_per_class

__all__ = [
    "AverageHausdorffDistance",
    "DiceScore",
    "FoldingPercent",
    "HausdorffDistance95",
    "PerCaseMetric",
    "SDLogJ",
]


class PerCaseMetric(Metric):
    """Base: per-case rows (N, C) accumulated in ``rows``; ``compute()`` = mean of per-case means."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.last: torch.Tensor | None = None

    def _append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(device=self.device, dtype=torch.float32)
        if rows.dim() == 1:
            rows = rows[:, None]
        self.rows.append(rows)
        self.last = rows

    def _all_rows(self) -> torch.Tensor:
        rows = self.rows
        if isinstance(rows, torch.Tensor):  # after synchronisation torchmetrics may hold one tensor
            return rows
        if not rows:
            return torch.zeros(0, 1, device=self.device)
        return torch.cat(rows, dim=0)

    def per_case(self) -> torch.Tensor:
        """Per-case values: (M,) mean over the valid classes of each case (NaN: no valid class)."""
        rows = self._all_rows()
        if rows.numel() == 0:
            return rows.new_zeros(0)
        valid = ~torch.isnan(rows)
        total = torch.where(valid, rows, torch.zeros_like(rows)).sum(1)
        count = valid.sum(1)
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))

    def per_class(self) -> torch.Tensor:
        """Mean over cases of each class (NaN where no case could be scored): (C,)."""
        rows = self._all_rows()
        return torch.nanmean(rows, dim=0) if rows.numel() else rows.new_zeros(0)

    def num_unable(self) -> int:
        """Cases for which no class could be scored (e.g. an empty prediction for AVD)."""
        return int(torch.isnan(self.per_case()).sum())

    def compute(self) -> torch.Tensor:
        values = self.per_case()
        values = values[~torch.isnan(values)]
        if values.numel() == 0:
            return torch.tensor(math.nan, device=self.device)
        return values.mean()


class _LabelMetric(PerCaseMetric):
    """Metrics of two label maps (multiclass (N,1,*S) indices, or multilabel (N,K,*S) 0/1)."""

    def __init__(self, num_classes: int | None = None, label_kind: str = "multiclass", **kwargs):
        super().__init__(**kwargs)
        if label_kind not in ("multiclass", "multilabel"):
            raise ValueError(f"label_kind must be 'multiclass' or 'multilabel', got {label_kind!r}")
        if label_kind == "multiclass" and (num_classes is None or num_classes < 2):
            raise ValueError(f"multiclass metrics need num_classes >= 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.label_kind = label_kind

    def masks(self, label: torch.Tensor) -> torch.Tensor:
        return foreground_masks(label, self.num_classes, self.label_kind)


class DiceScore(_LabelMetric):
    """Dice per foreground class (background excluded), averaged over classes per case.

    ``update(pred, target)`` with label maps of one kind (``label_kind``): multiclass (N, 1, *S)
    class indices (``num_classes`` includes the background) or multilabel (N, K, *S) 0/1 masks.
    A class absent from a case's ground truth does not count for that case.
    """

    higher_is_better = True

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if self.label_kind == "multiclass":
            p = one_hot_labels(pred, self.num_classes)[:, 1:]
            t = one_hot_labels(target, self.num_classes)[:, 1:]
        else:
            p, t = self.masks(pred), self.masks(target)
        self._append(dice_rows(p, t))


class AverageHausdorffDistance(_LabelMetric):
    """AVD (SimpleITK average Hausdorff distance, in the unit of the spacing) per foreground class.

    ``update(pred, target, spacing)``; spacing per case in tensor-axis order (see
    :func:`~gemini_pl.metrics.surface.normalise_spacing`). The unit is the spacing's: mm for the
    NIfTI volumes; SCR's PNGs carry no spacing, so the reader gives 1 per pixel of the file and the
    resize to 512² scales it by (file size / 512): SCR AVD is in pixels of the stored PNG (512-grid
    pixels for a 512² copy), not mm (docs/METHOD.md §6).

    ``empty_policy`` (docs/METHOD.md §6): ``"skip_class"`` (default) — a class with an empty
    prediction or ground truth is NaN and does not count, the case is scored on its other classes;
    ``"unable_case"`` (the paper) — a case in which any class present in the ground truth has an
    empty prediction is "unable" as a whole (a NaN row, counted by :meth:`num_unable`).
    """

    higher_is_better = False

    def __init__(self, num_classes: int | None = None, label_kind: str = "multiclass",
                 empty_policy: str = "skip_class", **kwargs):
        super().__init__(num_classes, label_kind, **kwargs)
        if empty_policy not in AVD_EMPTY_POLICIES:
            raise ValueError(f"empty_policy must be one of {AVD_EMPTY_POLICIES}, got {empty_policy!r}")
        self.empty_policy = empty_policy

    def update(self, pred: torch.Tensor, target: torch.Tensor, spacing=None) -> None:
        self._append(avd_per_class(self.masks(pred), self.masks(target), spacing, self.empty_policy))


class HausdorffDistance95(_LabelMetric):
    """HD95 (MONAI, physical units) per foreground class; ``update(pred, target, spacing)``."""

    higher_is_better = False

    def update(self, pred: torch.Tensor, target: torch.Tensor, spacing=None) -> None:
        self._append(hd95_per_class(self.masks(pred), self.masks(target), spacing))


class FoldingPercent(PerCaseMetric):
    """% of voxels with det(I + ∇φ) ≤ 0 per case; ``update(flow)`` with flow (N, ndim, *S)."""

    higher_is_better = False

    def update(self, flow: torch.Tensor) -> None:
        self._append(folding_percent(flow))


class SDLogJ(PerCaseMetric):
    """Standard deviation of log det(I + ∇φ) (clipped) per case; ``update(flow)``."""

    higher_is_better = False

    def update(self, flow: torch.Tensor) -> None:
        self._append(sdlogj(flow))
