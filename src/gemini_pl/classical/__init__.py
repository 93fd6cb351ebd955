"""Classical (non-learned) registration methods used as anchors next to the learned ones.

Each returns the displacement warping a moving image onto a fixed one in this project's convention
(:func:`gemini_pl.spatial.warp`: (ndim, *S) voxels, channel ``i`` along array axis ``i``):

- ``demons``: SimpleITK symmetric-forces demons (:mod:`.demons`; SimpleITK is a core dependency);
- ``greedy``: Greedy, NCC (:mod:`.greedy`; ``picsl-greedy``, the ``bench`` extra);
- ``syn``: ANTs SyN with cross-correlation, after ANTs' rigid and affine stages (:mod:`.ants`;
  ``antspyx``, the ``bench`` extra).

The optional tools are imported when first used; a missing one is a one-line
:class:`~gemini_pl.errors.ConfigError` naming the extra (``pip install "gemini-pl[bench]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError
from .ants import SYN_DEFAULTS, syn_displacement
from .demons import DEMONS_DEFAULTS, demons_displacement
from .fields import BENCH_EXTRA, installed, physical_to_voxels
from .greedy import GREEDY_DEFAULTS, greedy_command, greedy_displacement

__all__ = [
    "BENCH_EXTRA", "CLASSICAL_METHODS", "DEMONS_DEFAULTS", "GREEDY_DEFAULTS", "SYN_DEFAULTS", "check_method", "classical_displacement",
    "demons_displacement", "greedy_command", "greedy_displacement", "method_installed", "physical_to_voxels",
    "syn_displacement",
]

#: method name → (displacement function, the module it needs)
CLASSICAL_METHODS: dict[str, tuple[Callable[..., np.ndarray], str]] = {
    "demons": (demons_displacement, "SimpleITK"),
    "greedy": (greedy_displacement, "picsl_greedy"),
    "syn": (syn_displacement, "ants"),
}


def check_method(method: str) -> Callable[..., np.ndarray]:
    if method not in CLASSICAL_METHODS:
        raise ConfigError(f"unknown classical registration method {method!r}: one of {sorted(CLASSICAL_METHODS)}")
    return CLASSICAL_METHODS[method][0]


def method_installed(method: str) -> bool:
    """Whether the tool of ``method`` can be imported."""
    check_method(method)
    return installed(CLASSICAL_METHODS[method][1])


def classical_displacement(method: str, fixed: np.ndarray, moving: np.ndarray, **options: Any) -> np.ndarray:
    """The field of ``method`` (``demons``, ``greedy`` or ``syn``) warping ``moving`` onto ``fixed``."""
    return check_method(method)(fixed, moving, **options)
