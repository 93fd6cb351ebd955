"""Spatial operations: warping, validity masks and random affine augmentation (docs/METHOD.md §2, §5)."""

from .affine import apply_affine, random_affine
from .warp import SAMPLING_MODES, normalised_identity, sampling_grid, validity_mask, warp

__all__ = ["SAMPLING_MODES", "apply_affine", "normalised_identity", "random_affine", "sampling_grid", "validity_mask", "warp"]
from .integrate import integrate_velocity  # noqa: E402

__all__ += ["integrate_velocity"]
from .compose import compose  # noqa: E402

__all__ += ["compose"]
