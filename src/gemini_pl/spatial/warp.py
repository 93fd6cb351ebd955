"""Backward warping with a dense displacement field, and the validity mask (METHOD §2).

Conventions: a field φ of shape (N, ndim, *S) holds displacements in voxel units; channel i moves
along spatial axis i of the tensor (for N×C×D×H×W: 0 → D, 1 → H, 2 → W).
``warp(x, φ)(p) = x(p + φ(p))`` with zero padding outside the field of view.

``sampling="exact"`` (default) maps voxel coordinates to ``grid_sample``'s normalised grid so
that voxel centres land exactly on samples (``align_corners=True``; a zero field returns the
input). ``sampling="legacy"`` reproduces the published code, which normalises the same way but
samples with ``align_corners=False`` — a slight scaling about the centre that official weights
were trained with.

Warps always run in float32 (autocast is disabled inside) and the identity grid is cached per
(shape, device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAMPLING_MODES = ("exact", "legacy")

_GRID_CACHE: dict[tuple, torch.Tensor] = {}
_GRID_CACHE_MAX = 16


def identity_grid(spatial_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Voxel coordinates (1, ndim, *S) in float32, channel i = index along axis i (cached)."""
    key = (tuple(spatial_shape), str(device))
    grid = _GRID_CACHE.get(key)
    if grid is None:
        axes = [torch.arange(s, dtype=torch.float32, device=device) for s in spatial_shape]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)
        if len(_GRID_CACHE) >= _GRID_CACHE_MAX:
            _GRID_CACHE.pop(next(iter(_GRID_CACHE)))
        _GRID_CACHE[key] = grid
    return grid


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")


def _check_flow(x: torch.Tensor, flow: torch.Tensor) -> int:
    ndim = flow.shape[1]
    if flow.dim() != ndim + 2 or x.shape[2:] != flow.shape[2:]:
        raise ValueError(
            f"warp expects x (N, C, *S) and flow (N, {x.dim() - 2}, *S) with the same S; "
            f"got x {tuple(x.shape)} and flow {tuple(flow.shape)}"
        )
    return ndim


def sample_positions(flow: torch.Tensor) -> torch.Tensor:
    """Absolute sampling positions p + φ(p) in voxel units, (N, ndim, *S), float32."""
    return identity_grid(tuple(flow.shape[2:]), flow.device) + flow.float()


def warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    mode: str = "bilinear",
    sampling: str = "exact",
) -> torch.Tensor:
    """Backward-warp ``x`` (N, C, *S) with ``flow`` (N, ndim, *S): ``out(p) = x(p + flow(p))``.

    Args:
        mode: ``"bilinear"`` for images and features, ``"nearest"`` for masks and label maps.
        sampling: ``"exact"`` or ``"legacy"`` (see module docstring).

    Returns float32 for floating inputs computed under autocast; integer inputs (label maps)
    come back in their own dtype (use ``mode="nearest"`` for them).
    """
    _check_sampling(sampling)
    ndim = _check_flow(x, flow)
    spatial = flow.shape[2:]
    with torch.autocast(device_type=flow.device.type, enabled=False):
        pos = sample_positions(flow)
        scale = torch.tensor([2.0 / max(s - 1, 1) for s in spatial], device=flow.device).view(1, ndim, *([1] * ndim))
        grid = (pos * scale - 1.0).movedim(1, -1).flip(-1)  # (N, *S, ndim) in (x, y[, z]) order
        src = x.float() if not x.is_floating_point() or x.dtype != torch.float32 else x
        if src.shape[0] != grid.shape[0]:
            src = src.expand(grid.shape[0], *src.shape[1:])
        out = F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=(sampling == "exact"))
        if sampling == "exact" and mode != "nearest":
            out = _exact_where_still(out, src, flow)
    if not x.is_floating_point():
        out = out.round().to(x.dtype)
    return out


def _exact_where_still(out: torch.Tensor, src: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Return ``src`` bit-for-bit where the displacement is exactly zero.

    ``grid_sample`` receives normalised coordinates; the float32 round trip voxel → [-1, 1] →
    voxel is not exact for every size, so a zero field would otherwise differ from the input by
    up to ~1e-5. The value is replaced by the input there, while the gradient stays that of
    ``grid_sample`` (with respect to both the image and the field).
    """
    still = (flow == 0).all(dim=1, keepdim=True)
    exact = src.detach() + (out - out.detach())
    return torch.where(still, exact, out)


def validity_mask(flow: torch.Tensor, sampling: str = "exact") -> torch.Tensor:
    """``sg(warp(1, φ, nearest))``: 1 where p + φ(p) samples inside the image, else 0.

    Computed from the sampling positions directly (no extra warp): nearest sampling reads voxel
    ``round(q)`` of the coordinate ``q`` that ``grid_sample`` uses, and zero padding returns 0 when
    that voxel lies outside. Shape (N, 1, *S), float32, no gradient.
    """
    _check_sampling(sampling)
    ndim = flow.shape[1]
    spatial = flow.shape[2:]
    with torch.no_grad(), torch.autocast(device_type=flow.device.type, enabled=False):
        q = sample_positions(flow.detach())
        size = torch.tensor(list(spatial), dtype=torch.float32, device=flow.device).view(1, ndim, *([1] * ndim))
        if sampling == "legacy":
            # align_corners=False unnormalises g = 2q/(s-1) - 1 to ((g + 1)·s - 1)/2 = q·s/(s-1) - 1/2
            q = q * (size / (size - 1).clamp_min(1)) - 0.5
        idx = torch.round(q)
        inside = ((idx >= 0) & (idx <= size - 1)).all(dim=1, keepdim=True)
    return inside.float()
