"""Coarse-to-fine deformation: one deformer applied on a pyramid of feature maps (beyond the paper).

The published deformer is a shallow U-Net (two poolings), so the displacement it can find is
bounded by its receptive field in *voxels*: the larger the image, the smaller its capture range in
anatomy. :func:`coarse_to_fine` runs the same deformer on ``levels`` resolutions of the two
feature maps, coarsest first, each level refining the field of the level below:

* level L−1 (coarsest, each axis about 2^(L−1) times smaller): ``u = D([a, b])``;
* every finer level: the coarser output is brought to this level's grid (:func:`resize_field`,
  values rescaled to this level's voxels), the moving features are warped by its displacement,
  and the deformer predicts a residual ``r = D([warp(a, φ_up), b])``, combined as
  - displacement model: ``φ = compose(φ_up, r)`` (the exact composition T_up ∘ T_r),
  - velocity model: ``v = v_up + r`` (velocities add, as in LapIRN; the sum is integrated once).

``levels=1`` is the single-level deformer of the paper, bit for bit. Each level's grid is
``(s + 1) // 2`` of the finer one per axis (so that an odd size halves exactly: 99 → 50 voxels, the
corners staying aligned), the features are box-smoothed before they are resampled (anti-aliasing),
and all resampling uses the corner-aligned convention of ``sampling="exact"``.

Shapes: features (N, C, *S); outputs (N, ndim, *S) in voxels of S, channel i along axis i.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .compose import compose
from .warp import warp

__all__ = ["box_mean3", "coarse_to_fine", "feature_pyramid", "pyramid_shapes", "resize_field", "resize_image"]


def pyramid_shapes(spatial_shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Grid of each level, finest (the input's) first: each axis ``(s + 1) // 2`` of the one before
    (never below 2 voxels)."""
    if levels < 1:
        raise ValueError(f"pyramid levels must be >= 1, got {levels}")
    shapes = [tuple(int(s) for s in spatial_shape)]
    for _ in range(levels - 1):
        shapes.append(tuple(max((s + 1) // 2, 2) for s in shapes[-1]))
    return shapes


def _interp_mode(ndim: int) -> str:
    return "bilinear" if ndim == 2 else "trilinear"


def box_mean3(x: torch.Tensor) -> torch.Tensor:
    """Mean over the 3^ndim box around each voxel of (N, C, *S), the box clipped at the border (the
    values of ``avg_pool(x, 3, stride=1, padding=1, count_include_pad=False)`` up to float rounding).

    Separable: per axis the sum of three shifted views of the zero-padded tensor, divided by the
    voxels the clipped box holds along that axis (3 inside, 2 at each end). Several times faster
    than PyTorch's CPU ``avg_pool`` at these sizes, forward and backward.
    """
    for axis in range(2, x.dim()):
        n = x.shape[axis]
        if n == 1:
            continue
        pad = [0, 0] * (x.dim() - 2)
        pad[2 * (x.dim() - 1 - axis)] = pad[2 * (x.dim() - 1 - axis) + 1] = 1  # F.pad lists the last axis first
        padded = F.pad(x, pad)
        count = torch.full((n,), 3.0, dtype=x.dtype, device=x.device)
        count[0] = count[-1] = 2.0
        x = (padded.narrow(axis, 0, n) + padded.narrow(axis, 1, n) + padded.narrow(axis, 2, n)) / count.view(
            [n] + [1] * (x.dim() - 1 - axis))
    return x


def resize_image(x: torch.Tensor, shape: Sequence[int], smooth: bool = True) -> torch.Tensor:
    """(N, C, *S) → (N, C, *shape), corner-aligned linear resampling; ``smooth``: a 3-voxel box
    mean first when shrinking (:func:`box_mean3`, so that a halved grid does not alias)."""
    return feature_pyramid(x, [shape], smooth)[0]


def feature_pyramid(x: torch.Tensor, shapes: Sequence[Sequence[int]], smooth: bool = True) -> list[torch.Tensor]:
    """``[resize_image(x, s) for s in shapes]`` with the box mean of ``x`` computed once for all the
    shrunk levels (the same values): the levels of :func:`coarse_to_fine`, e.g. of a fixed image's
    features that several network passes share."""
    ndim = x.dim() - 2
    smoothed: torch.Tensor | None = None
    levels = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        if tuple(x.shape[2:]) == shape:
            levels.append(x)
            continue
        src = x
        if smooth and any(t < s for t, s in zip(shape, x.shape[2:])):
            smoothed = box_mean3(x) if smoothed is None else smoothed
            src = smoothed
        levels.append(F.interpolate(src, size=shape, mode=_interp_mode(ndim), align_corners=True))
    return levels


def resize_field(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A displacement or velocity (N, ndim, *S) on another grid of the same extent: resampled
    (corner-aligned linear) and each channel i multiplied by ``(shape[i] − 1) / (S[i] − 1)``, so
    that it moves the same anatomy in the new grid's voxels (a constant shift of 1 voxel on a
    50-voxel axis becomes 2 voxels on the 99-voxel axis)."""
    ndim = field.dim() - 2
    if field.shape[1] != ndim:
        raise ValueError(f"resize_field expects (N, {ndim}, *S), got {tuple(field.shape)}")
    src = field.shape[2:]
    shape = tuple(int(s) for s in shape)
    if tuple(src) == shape:
        return field
    ratio = torch.tensor([(t - 1) / max(s - 1, 1) for t, s in zip(shape, src)], dtype=field.dtype, device=field.device)
    out = F.interpolate(field, size=shape, mode=_interp_mode(ndim), align_corners=True)
    return out * ratio.view(1, ndim, *([1] * ndim))


def coarse_to_fine(
    deformer: Callable[[torch.Tensor], torch.Tensor],
    moving: torch.Tensor,
    fixed: torch.Tensor | Sequence[torch.Tensor],
    levels: int,
    to_displacement: Callable[[torch.Tensor], torch.Tensor],
    velocity: bool,
    sampling: str = "exact",
    both_ways: bool = False,
) -> torch.Tensor:
    """The deformer's output on the finest grid after ``levels`` coarse-to-fine refinements.

    Args:
        deformer: ``D``: (N, 2C, *s) concatenated features → (N, ndim, *s) (any grid size).
        moving, fixed: features (N, C, *S) of the moving and the fixed images; ``fixed`` may also
            be its levels already resampled, ``feature_pyramid(fixed, pyramid_shapes(S, levels))``
            (finest first), when several calls register onto the same fixed image.
        levels: pyramid levels (1: a single call ``D([moving, fixed])``).
        to_displacement: the module's map from a deformer output to a displacement (integration
            of a velocity; the identity for a displacement model).
        velocity: the output is a velocity (residuals add) rather than a displacement (composed).
        both_ways: also register ``fixed`` onto ``moving``, stacked after the first direction
            along the batch (2N outputs; each feature map is resampled once per level for both).

    Returns the deformer output (velocity or displacement, as ``D`` gives) on S.
    """
    shapes = pyramid_shapes(moving.shape[2:], levels)
    moving_levels = feature_pyramid(moving, shapes)
    fixed_levels = feature_pyramid(fixed, shapes) if torch.is_tensor(fixed) else list(fixed)
    if len(fixed_levels) != levels or any(tuple(f.shape[2:]) != s for f, s in zip(fixed_levels, shapes)):
        raise ValueError(f"the fixed features' levels {[tuple(f.shape[2:]) for f in fixed_levels]} are not the "
                         f"pyramid {shapes} of the moving features")
    out: torch.Tensor | None = None
    for shape, a, b in reversed(list(zip(shapes, moving_levels, fixed_levels))):
        if both_ways:
            a, b = torch.cat([a, b], 0), torch.cat([b, a], 0)
        if out is None:
            out = deformer(torch.cat([a, b], dim=1))
            continue
        up = resize_field(out, shape)
        phi_up = to_displacement(up)
        residual = deformer(torch.cat([warp(a, phi_up, sampling=sampling), b], dim=1))
        out = up + residual if velocity else compose(up, residual, sampling=sampling)
    assert out is not None
    return out
