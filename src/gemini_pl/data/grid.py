"""One voxel grid for a folder of images of different shapes and spacings.

Pairs of a pre-training batch must share one shape, and registration pairs should share one voxel
size. A dataset whose spec fixes no geometry (a plain folder of scans) gets, when its files differ,
the grid :func:`common_grid` picks from their headers (no voxel is read):

* ``spacing``: the per-axis median voxel size of the files (only when the spacings differ);
* ``shape``: the per-axis median of the files' extents at that spacing, in voxels (images are then
  padded with background or cropped, centred, to it; when they are resampled or their shapes
  differ, unless a random ``patch_size`` crop is asked for, which serves any shapes by itself).

Both are preprocessing fields (:class:`~gemini_pl.data.specs.Preprocessing`); setting any of
``spacing``, ``resize`` or ``shape`` in ``data.preprocessing`` turns the automatic choice off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["common_grid"]


def common_grid(geometries: Sequence[tuple[Sequence[int], Sequence[float]]], *, patches: bool = False,
                tol: float = 1e-3) -> dict[str, tuple]:
    """The preprocessing fields that bring images of ``geometries`` (``(shape, spacing)`` per file,
    along the voxel axes) to one grid: ``{}`` when they already share one, else ``spacing``
    (when the spacings differ by more than ``tol`` relative) and/or ``shape`` (when images are
    resampled or their shapes differ, and ``patches`` is False). See the module doc."""
    if not geometries:
        return {}
    dims = {len(s) for s, _ in geometries}
    if len(dims) != 1:
        return {}
    shapes = np.array([s for s, _ in geometries], dtype=np.float64)
    spacings = np.array([z for _, z in geometries], dtype=np.float64)
    out: dict[str, tuple] = {}
    target = np.median(spacings, axis=0)
    if np.any(np.abs(spacings - target) > tol * target):
        out["spacing"] = tuple(round(float(v), 6) for v in target)
        # MONAI Spacingd's output size along an axis: the span of the voxel centres at the new
        # spacing, ceil((n - 1) * spacing / new) + 1 voxels
        resampled = np.ceil((shapes - 1) * spacings / target - 1e-6) + 1
    else:
        resampled = shapes
    if not patches and ("spacing" in out or np.any(resampled != resampled[0])):
        out["shape"] = tuple(int(v) for v in np.rint(np.median(resampled, axis=0)))
    return out
