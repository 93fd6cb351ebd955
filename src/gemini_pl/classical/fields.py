"""What the classical tools share: their fields in this project's convention, and their lazy imports.

This project's displacement (:func:`gemini_pl.spatial.warp`): a float32 array (ndim, *S) in voxels,
channel ``i`` along array axis ``i``, ``warped(p) = moving(p + φ(p))``. The tools return the same
mapping (each fixed point to its moving point) as a vector image in physical units, components in
ITK's (x, y[, z]) order. Which array axis ITK's x is depends on the binding: SimpleITK (demons,
Greedy) reads a NumPy array with its axes reversed (x = the last axis), ANTsPy with its axes in
order (x = the first axis).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from ..errors import ConfigError

__all__ = ["BENCH_EXTRA", "check_pair", "installed", "physical_to_voxels", "require"]

#: how to install the optional registration tools (setup.cfg's ``bench`` extra)
BENCH_EXTRA = 'pip install "gemini-pl[bench]"'


def require(module: str, package: str, method: str) -> ModuleType:
    """Import ``module`` (of the pip package ``package``), or a one-line :class:`ConfigError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"the {method} anchor needs {package}, which is not installed: {BENCH_EXTRA}") from e


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def check_pair(fixed: np.ndarray, moving: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float32 arrays of one 2D or 3D shape, else a ValueError naming the method."""
    fixed, moving = np.asarray(fixed, np.float32), np.asarray(moving, np.float32)
    if fixed.shape != moving.shape or fixed.ndim not in (2, 3):
        raise ValueError(f"{method} needs two 2D or 3D images of one shape, got {fixed.shape} and {moving.shape}")
    return fixed, moving


def physical_to_voxels(field: np.ndarray, spacing: Sequence[float] = (), reversed_axes: bool = True) -> np.ndarray:
    """A tool's displacement image (*S, ndim) in physical units → this project's (ndim, *S) voxels.

    ``spacing``: the image's spacing in the tool's component order (x, y[, z]); empty for unit
    spacing. ``reversed_axes``: component ``k`` runs along array axis ``ndim-1-k`` (SimpleITK's
    ``GetArrayFromImage``) rather than along array axis ``k`` (ANTsPy's ``numpy()``). Assumes an
    identity direction matrix (the images the anchors build).
    """
    field = np.asarray(field, np.float64)
    ndim = field.ndim - 1
    if field.shape[-1] != ndim:
        raise ValueError(f"expected a displacement image (*S, {ndim}), got shape {field.shape}")
    if len(spacing):
        if len(spacing) != ndim:
            raise ValueError(f"spacing {tuple(spacing)} does not match a {ndim}D field")
        field = field / np.asarray(spacing, np.float64)
    if reversed_axes:
        field = field[..., ::-1]
    return np.ascontiguousarray(np.moveaxis(field, -1, 0), dtype=np.float32)
