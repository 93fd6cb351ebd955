"""Spatial operations: warping, validity masks and random affine augmentation (METHOD §2, §5)."""

from .warp import SAMPLING_MODES, identity_grid, sample_positions, validity_mask, warp

__all__ = ["SAMPLING_MODES", "identity_grid", "sample_positions", "validity_mask", "warp"]

try:  # the affine augmentation lives in its own module
    from .affine import apply_affine, random_affine  # noqa: F401

    __all__ += ["apply_affine", "random_affine"]
except ImportError:  # pragma: no cover - only while the module is absent
    pass
