"""Random affine spatial augmentation (docs/METHOD.md §5).

Convention. ``theta`` has shape ``(B, nd, nd + 1)`` and follows
:func:`torch.nn.functional.affine_grid` with ``align_corners=True``: it maps *output* normalised
coordinates ``(x, y[, z])`` — ``x`` along the **last** tensor axis (W), ``y`` along H, ``z``
along D, each in [-1, 1] from the centre of the first to the centre of the last voxel — to the
input location that is sampled. The centre of the image is the origin, so a rotation "about the
centre" has no translation column.

``random_affine`` builds ``theta = [R · diag(s) | 0]``:

* ``R``: in 2D one angle ``a`` with ``R = [[cos a, -sin a], [sin a, cos a]]`` acting on (x, y);
  in 3D three angles ``(a_x, a_y, a_z)`` about the x, y and z axes, ``R = R_z · R_y · R_x``.
  Each angle is U(-rotation, rotation).
* ``s``: scale factors of the *sampling grid*, one per axis U(lo, hi) (``per_axis_scale=True``,
  MIP) or one shared factor (``False``, Semi). ``s > 1`` samples a larger region of the input,
  i.e. the content appears smaller (zoom out); ``s < 1`` zooms in.

With a 90° angle in 2D, ``apply_affine`` equals ``torch.rot90(x, k=1, dims=(-2, -1))`` on a square
image (``out[i, j] = x[j, W - 1 - i]``, counter-clockwise when row 0 is drawn at the top).

Rotations are defined in normalised coordinates, which are rigid only for equal physical
extents of the axes: on a 256×256×128 volume a 20° "rotation" in normalised coordinates is a
shear plus a stretch. Pass ``spatial_shape`` (and ``spacing``) to make them rigid in voxel
(physical) units on any grid: ``theta = D⁻¹ · R · diag(s) · D`` with
``D = diag((size - 1) / 2 · spacing)`` in (x, y, z) order (the scales then act in physical units
too). The published code rotates (and scales) zero-centred voxel coordinates and normalises
the result afterwards: ``spatial_shape`` without ``spacing`` gives its sampling grid exactly
(for odd sizes; on an even axis its centre is ``size // 2``, half a voxel off the image centre
that is used here). ``rotation_terms=2`` draws each angle as the sum of two U(-rotation, rotation) draws (a
triangular spread to ±2·rotation), which is how the published 2D code composes its rotation.

docs/METHOD.md §5 draws **one** affine per iteration and applies it to every image of the iteration:
call ``random_affine(1, nd)`` and pass that ``(1, nd, nd+1)`` theta to ``apply_affine`` for each
tensor (it broadcasts over the batch); labels use ``mode="nearest"``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_affine", "sample_affine_params", "affine_theta", "apply_affine"]


def _num_angles(spatial_dims: int) -> int:
    if spatial_dims == 2:
        return 1
    if spatial_dims == 3:
        return 3
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def sample_affine_params(
    batch_size: int,
    spatial_dims: int,
    rotation: float = math.pi / 9,
    scale: Tuple[float, float] = (0.75, 1.25),
    per_axis_scale: bool = True,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device | str] = None,
    dtype: torch.dtype = torch.float32,
    rotation_terms: int = 1,
) -> Tuple[Tensor, Tensor]:
    """Draw the parameters of :func:`random_affine`.

    Returns ``(angles, scales)``: ``angles`` ``(B, 1)`` in 2D or ``(B, 3)`` in 3D (about x, y, z),
    each U(-rotation, rotation) (the sum of ``rotation_terms`` such draws); ``scales`` ``(B, nd)`` in (x, y[, z]) order, U(lo, hi) per axis,
    or one factor repeated over the axes when ``per_axis_scale`` is False. Random numbers are
    drawn on the generator's device (CPU when no generator is given), then moved to ``device``.
    """
    n_ang = _num_angles(spatial_dims)
    lo, hi = float(scale[0]), float(scale[1])
    if not (0 < lo <= hi):
        raise ValueError(f"scale must satisfy 0 < lo <= hi, got {scale}")
    if rotation < 0:
        raise ValueError(f"rotation must be >= 0, got {rotation}")
    if rotation_terms < 1:
        raise ValueError(f"rotation_terms must be >= 1, got {rotation_terms}")
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((batch_size, n_ang + spatial_dims), generator=generator, device=gdev,
                   dtype=torch.float64)
    angles = (2.0 * u[:, :n_ang] - 1.0) * float(rotation)
    for _ in range(rotation_terms - 1):  # published 2D: the sum of two rotations
        more = torch.rand((batch_size, n_ang), generator=generator, device=gdev, dtype=torch.float64)
        angles = angles + (2.0 * more - 1.0) * float(rotation)
    su = u[:, n_ang:] if per_axis_scale else u[:, n_ang:n_ang + 1].expand(-1, spatial_dims)
    scales = lo + (hi - lo) * su
    device = torch.device(device) if device is not None else gdev
    return angles.to(device, dtype), scales.contiguous().to(device, dtype)


def _rotation(angles: Tensor, spatial_dims: int) -> Tensor:
    """(B, nd, nd) rotation matrices in (x, y[, z]) order."""
    c, s = torch.cos(angles), torch.sin(angles)
    B = angles.shape[0]
    if spatial_dims == 2:
        c, s = c[:, 0], s[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    one = torch.ones_like(c[:, 0])
    zero = torch.zeros_like(c[:, 0])

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    cx, cy, cz = c.unbind(1)
    sx, sy, sz = s.unbind(1)
    rx = mat([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = mat([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    assert rx.shape == (B, 3, 3)
    return rz @ ry @ rx


def affine_theta(angles: Tensor, scales: Tensor,
                 spatial_shape: Optional[Sequence[int]] = None,
                 spacing: Optional[Sequence[float] | Tensor] = None) -> Tensor:
    """``theta = [R(angles) · diag(scales) | 0]`` of shape (B, nd, nd + 1) (see module doc).

    ``spatial_shape`` (tensor order, e.g. (D, H, W)): make the rotation rigid in voxel units;
    with ``spacing`` (tensor order, the voxel size along each axis; (nd,) or (B, nd)) rigid in
    physical units.
    """
    nd = scales.shape[-1]
    if angles.shape[-1] != _num_angles(nd):
        raise ValueError(f"{nd}D needs {_num_angles(nd)} angle(s), got {angles.shape[-1]}")
    m = _rotation(angles, nd) * scales[:, None, :]
    if spatial_shape is not None:
        if len(spatial_shape) != nd:
            raise ValueError(f"spatial_shape must have {nd} entries, got {tuple(spatial_shape)}")
        half = torch.tensor([max(int(n) - 1, 1) / 2.0 for n in reversed(spatial_shape)],
                            dtype=m.dtype, device=m.device).expand(m.shape[0], nd)
        if spacing is not None:
            sp = torch.as_tensor(spacing, dtype=m.dtype).to(m.device).reshape(-1, nd).flip(-1)
            if sp.shape[0] not in (1, m.shape[0]) or not bool((sp > 0).all()):
                raise ValueError(f"spacing must be (nd,) or (B, nd) positive sizes, got {tuple(sp.shape)}")
            half = half * sp
        m = m * half[:, None, :] / half[:, :, None]
    elif spacing is not None:
        raise ValueError("affine_theta: spacing needs spatial_shape")
    t = torch.zeros(m.shape[0], nd, 1, dtype=m.dtype, device=m.device)
    return torch.cat([m, t], dim=-1)


def random_affine(
    batch_size: int,
    spatial_dims: int,
    rotation: float = math.pi / 9,
    scale: Tuple[float, float] = (0.75, 1.25),
    per_axis_scale: bool = True,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device | str] = None,
    dtype: torch.dtype = torch.float32,
    spatial_shape: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float] | Tensor] = None,
    rotation_terms: int = 1,
) -> Tensor:
    """Random rotation-about-the-centre + scale, as ``theta`` (batch_size, nd, nd + 1).

    Typical use (docs/METHOD.md §5, one affine per iteration for all images)::

        theta = random_affine(1, 3, generator=g, device=x.device)
        a, b = apply_affine(a, theta), apply_affine(b, theta)
        lab = apply_affine(lab, theta, mode="nearest")

    The parameters are those of :func:`sample_affine_params` with the same arguments and
    generator state; the matrix is :func:`affine_theta` (angles about x, y, z; R = Rz·Ry·Rx).
    """
    angles, scales = sample_affine_params(batch_size, spatial_dims, rotation, scale,
                                          per_axis_scale, generator, device, torch.float64, rotation_terms)
    return affine_theta(angles, scales, spatial_shape, spacing).to(dtype)


def apply_affine(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample ``x`` (B, C, *S) with ``theta`` (1 or B, nd, nd + 1).

    ``F.affine_grid`` + ``F.grid_sample`` with ``align_corners=True`` and zero padding, computed
    in float32 (float64 for float64 inputs) with autocast disabled; float results are cast
    back to ``x.dtype``. Integer and bool tensors (label maps) need ``mode="nearest"``: they are
    sampled as float and converted back, so every output value is an input value or 0 (outside
    the image); exact for integer labels below 2**24 in magnitude.
    """
    nd = x.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"apply_affine expects (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (nd, nd + 1):
        raise ValueError(f"theta must be (1 or B, {nd}, {nd + 1}) for a {nd}D input, got "
                         f"{tuple(theta.shape)}")
    B = x.shape[0]
    if theta.shape[0] not in (1, B):
        raise ValueError(f"theta batch {theta.shape[0]} does not match input batch {B}")
    is_float = torch.is_floating_point(x)
    if not is_float and mode != "nearest":
        raise ValueError(f"integer/bool tensors ({x.dtype}) must be resampled with mode='nearest'")
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        th = theta.to(device=x.device, dtype=cdt).expand(B, -1, -1)
        grid = F.affine_grid(th, list(x.shape), align_corners=True)
        out = F.grid_sample(x.to(cdt), grid, mode=mode, padding_mode="zeros", align_corners=True)
    if not is_float:
        if x.dtype == torch.bool:
            return out > 0.5
        return out.round_().to(x.dtype)
    return out.to(x.dtype)
