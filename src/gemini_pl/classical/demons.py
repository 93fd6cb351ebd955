"""SimpleITK symmetric-forces demons: the classical registration anchor.

:func:`demons_displacement` registers a moving image onto a fixed one (2D or 3D arrays of one
shape, on one voxel grid) and returns the displacement in this project's convention: a float32
array (ndim, *S) in voxels, channel ``i`` along array axis ``i``, such that
``warped(p) = moving(p + φ(p))`` (:func:`gemini_pl.spatial.warp`). SimpleITK's demons filters
return the same mapping (each fixed point to its moving point) with vector components in ITK's
(x, y[, z]) order — the reverse of the array axes — which is what the conversion below undoes.

The moving image's histogram is matched to the fixed one first (``histogram_match``), as
demons assumes equal intensities of corresponding points.
"""

from __future__ import annotations

import numpy as np

from .fields import check_pair, physical_to_voxels

__all__ = ["DEMONS_DEFAULTS", "demons_displacement"]

#: iterations, Gaussian smoothing of the field and of each update (voxels), histogram levels / match
#: points; chosen on training pairs of the demo data (benchmarks/demons_params.py)
DEMONS_DEFAULTS = {"iterations": 100, "smoothing_sigma": 2.0, "update_sigma": 1.0, "histogram_levels": 128, "match_points": 7}


def demons_displacement(
    fixed: np.ndarray,
    moving: np.ndarray,
    iterations: int = DEMONS_DEFAULTS["iterations"],
    smoothing_sigma: float = DEMONS_DEFAULTS["smoothing_sigma"],
    histogram_match: bool = True,
    histogram_levels: int = DEMONS_DEFAULTS["histogram_levels"],
    match_points: int = DEMONS_DEFAULTS["match_points"],
    update_sigma: float = DEMONS_DEFAULTS["update_sigma"],
    threads: int | None = None,
) -> np.ndarray:
    """Symmetric-forces demons field warping ``moving`` onto ``fixed``: (*S), (*S) → (ndim, *S) voxels.

    ``smoothing_sigma``: Gaussian smoothing (voxels) of the whole field after each iteration (the
    elastic-like regulariser); ``update_sigma`` > 0 also smooths each iteration's update (fluid-like).
    ``threads``: ITK threads of the filters (default: SimpleITK's global default).
    """
    import SimpleITK as sitk

    fixed, moving = check_pair(fixed, moving, "demons")
    f, m = sitk.GetImageFromArray(fixed), sitk.GetImageFromArray(moving)  # unit spacing: voxel units
    if histogram_match:
        matcher = sitk.HistogramMatchingImageFilter()
        matcher.SetNumberOfHistogramLevels(int(histogram_levels))
        matcher.SetNumberOfMatchPoints(int(match_points))
        matcher.SetThresholdAtMeanIntensity(True)
        if threads:
            matcher.SetNumberOfThreads(int(threads))
        m = matcher.Execute(m, f)
    demons = sitk.SymmetricForcesDemonsRegistrationFilter()
    if threads:
        demons.SetNumberOfThreads(int(threads))
    demons.SetNumberOfIterations(int(iterations))
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(float(smoothing_sigma))
    if update_sigma > 0:
        demons.SetSmoothUpdateField(True)
        demons.SetUpdateFieldStandardDeviations(float(update_sigma))
    field = demons.Execute(f, m)
    # (*S, ndim), components (x, y[, z]) = array axes reversed
    return physical_to_voxels(sitk.GetArrayFromImage(field), field.GetSpacing(), reversed_axes=True)
