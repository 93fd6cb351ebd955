"""Synthetic "anatomy" phantoms: the embedded default dataset of gemini-pl.

Real medical datasets cannot ship with the project, so every command runs out of the box on a
phantom dataset that :func:`generate_phantom_dataset` writes to disk in the canonical layout
(see ``/data/README.md``)::

    <root>/<name>/train/unlabeled/image/phantom_0000.nii.gz
    <root>/<name>/train/labeled/image/phantom_0040.nii.gz     (+ .../label/<same name>)
    <root>/<name>/test/labeled/image/phantom_0045.nii.gz      (+ .../label/<same name>)
    <root>/<name>/val/labeled/image/phantom_0055.nii.gz       (+ .../label/<same name>)
    <root>/<name>/manifest.json                               (written last)

The data module then reads it back through exactly the same code path as real data.

Each subject (:func:`make_phantom`) is a body region containing two organs and a ring-shaped
wall around a cavity. Every structure has its own mean intensity and its own texture. Subjects
differ by jittered structure positions/sizes, a smooth random deformation (the same one for
image and labels) and random intensity changes, so that registering two subjects is a small but
real problem: un-warped Dice between two subjects is about 0.6-0.7.

Voxel order: the array returned by :func:`make_phantom` is written so that voxel ``[i, j, k]``
of the array is voxel ``(i, j, k)`` of the NIfTI file, i.e. the array nibabel (and thus MONAI's
``NibabelReader``) returns is the generated array itself.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gemini_pl.data.synthetic import write_generated_dataset

__all__ = [
    "LABEL_NAMES",
    "PHANTOM_VERSION",
    "generate_phantom_dataset",
    "make_phantom",
]

#: Bump when the generator's output changes for the same parameters (forces regeneration).
PHANTOM_VERSION = 1

#: Label value -> structure name.
LABEL_NAMES = {0: "background", 1: "body", 2: "organ_a", 3: "organ_b", 4: "wall", 5: "cavity"}

# Mean raw intensity (arbitrary units, roughly 0..1000) per label value.
_MEAN = {0: 15.0, 1: 280.0, 2: 500.0, 3: 680.0, 4: 880.0, 5: 75.0}

_GENERATOR_ID = "gemini_pl.data.phantom"


# --------------------------------------------------------------------------------------------
# small torch helpers (no scipy)
# --------------------------------------------------------------------------------------------
def _grid(spatial_dims: int, size: int) -> torch.Tensor:
    """Coordinates in [-1, 1] of every voxel: tensor (*S, D), component j indexes array axis j."""
    axis = torch.linspace(-1.0, 1.0, size, dtype=torch.float32)
    mesh = torch.meshgrid(*([axis] * spatial_dims), indexing="ij")
    return torch.stack(mesh, dim=-1)


def _sample(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample a (C, *G) field at points (*S, D) given in [-1, 1] (array-axis order) -> (C, *S).

    Bilinear/trilinear with border padding; ``align_corners=True`` so that -1/1 are the centres
    of the first/last grid points.
    """
    spatial_dims = points.shape[-1]
    grid = points.flip(-1).unsqueeze(0)  # grid_sample wants (x, y[, z]) = reversed axis order
    if spatial_dims == 2:
        grid = grid.reshape(1, *points.shape[:-1], 2)
    out = F.grid_sample(
        field.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0]


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of a (C, *S) tensor over its spatial axes (replicate pad)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    spatial_dims = x.dim() - 1
    channels = x.shape[0]
    for axis in range(spatial_dims):
        y = x.movedim(axis + 1, -1)  # (C, ..., L)
        shape = y.shape
        y = y.reshape(-1, 1, shape[-1])
        size = shape[-1]
        pad = min(radius, size - 1)
        y = F.pad(y, (pad, pad), mode="replicate") if pad > 0 else y
        k = kernel[radius - pad : radius + pad + 1] if pad < radius else kernel
        k = (k / k.sum()).view(1, 1, -1)
        y = F.conv1d(y, k)
        x = y.reshape(shape).movedim(-1, axis + 1)
    assert x.shape[0] == channels
    return x


def _noise_field(
    rng: np.random.Generator, spatial_dims: int, cells: int, points: torch.Tensor
) -> torch.Tensor:
    """Smooth unit-variance-ish noise with ``cells`` control points per axis, sampled at points."""
    cells = max(2, int(cells))
    coarse = torch.from_numpy(rng.standard_normal((1,) + (cells,) * spatial_dims).astype(np.float32))
    return _sample(coarse, points)[0]


def _ellipsoid(
    p: torch.Tensor, centre: np.ndarray, axes: np.ndarray, angle: float
) -> torch.Tensor:
    """Normalised squared radius of points p (*S, D) w.r.t. an ellipsoid (rotated in axes 0/1)."""
    d = p - torch.from_numpy(centre.astype(np.float32))
    c, s = math.cos(angle), math.sin(angle)
    u0 = c * d[..., 0] + s * d[..., 1]
    u1 = -s * d[..., 0] + c * d[..., 1]
    r2 = (u0 / float(axes[0])) ** 2 + (u1 / float(axes[1])) ** 2
    for j in range(2, p.shape[-1]):
        r2 = r2 + (d[..., j] / float(axes[j])) ** 2
    return r2


def _deformation(
    rng: np.random.Generator, spatial_dims: int, size: int, magnitude: float, cells: int = 5
) -> torch.Tensor:
    """Smooth random displacement field (*S, D) in normalised [-1, 1] units.

    A coarse ``cells``^D grid of Gaussian displacements is upsampled (linear) to an intermediate
    grid, smoothed with a Gaussian there, upsampled (linear) to full size and rescaled so that its
    RMS equals ``magnitude``.
    """
    coarse = rng.standard_normal((spatial_dims,) + (cells,) * spatial_dims).astype(np.float32)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    mid = min(size, 4 * (cells - 1) + 1)
    disp = F.interpolate(
        torch.from_numpy(coarse).unsqueeze(0), size=(mid,) * spatial_dims, mode=mode,
        align_corners=True,
    )[0]
    disp = _smooth(disp, sigma=(mid - 1) / (2.0 * (cells - 1)))
    if mid != size:
        disp = F.interpolate(
            disp.unsqueeze(0), size=(size,) * spatial_dims, mode=mode, align_corners=True
        )[0]
    rms = disp.pow(2).sum(0).mean().sqrt().clamp_min(1e-6)
    disp = disp * (magnitude / rms)
    return disp.movedim(0, -1)


# --------------------------------------------------------------------------------------------
# one subject
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_torch_thread():
    """Run small tensor ops on one intra-op thread (much faster on small or busy CPUs)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def make_phantom(
    rng: np.random.Generator, spatial_dims: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic subject.

    Args:
        rng: numpy random generator; the output is a deterministic function of its state.
        spatial_dims: 2 or 3.
        size: edge length in voxels; the output shape is ``(size,) * spatial_dims``.

    Returns:
        ``(image, label)``: ``image`` float32 with raw intensities in roughly [0, 1000] arbitrary
        units (the background may be slightly negative: there is noise and a random bias);
        ``label`` uint8 with values 0..5 (see :data:`LABEL_NAMES`): 1 body, 2 and 3 two organs,
        4 a ring/shell-shaped wall, 5 the cavity inside it.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    with _one_torch_thread():
        return _make_phantom(rng, spatial_dims, size)


def _make_phantom(
    rng: np.random.Generator, spatial_dims: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    d = spatial_dims
    x = _grid(d, size)

    # Smooth random deformation (shared by image and label: both are evaluated at warped points).
    # RMS displacement 0.08 normalised units = 4% of the field of view per subject, so about
    # 5.7% between two subjects.
    warp = _deformation(rng, d, size, magnitude=0.08)
    # Small global affine part: anisotropic scaling and rotation in the first plane.
    scale = 1.0 + rng.uniform(-0.06, 0.06, size=d)
    theta = rng.uniform(-0.12, 0.12)
    p = x + warp
    c, s = math.cos(theta), math.sin(theta)
    p0 = c * p[..., 0] - s * p[..., 1]
    p1 = s * p[..., 0] + c * p[..., 1]
    p = torch.stack([p0, p1, *[p[..., j] for j in range(2, d)]], dim=-1)
    p = p * torch.from_numpy(scale.astype(np.float32))

    def jit(v: Sequence[float], amount: float) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v + rng.uniform(-amount, amount, size=v.shape)

    def rel(v: Sequence[float], amount: float) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v * (1.0 + rng.uniform(-amount, amount, size=v.shape))

    third = [0.0] if d == 3 else []
    # Ellipsoids in the anatomy frame: (centre, jitter, semi-axes (2D + 3rd), relative size
    # jitter, max in-plane rotation). Random draws in this order: centre, axes, rotation.
    table = (
        ([0.00, 0.00], 0.03, [0.88, 0.75, 0.82], 0.05, 0.1),  # body
        ([-0.32, -0.30], 0.05, [0.36, 0.26, 0.36], 0.10, 0.4),  # organ a
        ([0.40, -0.28], 0.05, [0.24, 0.24, 0.28], 0.10, 0.4),  # organ b
    )
    body, organ_a, organ_b = (
        _ellipsoid(p, jit(c + third, cj), rel(ax[:d], aj), rng.uniform(-rot, rot))
        for c, cj, ax, aj, rot in table
    )
    ring_centre = jit([0.0, 0.30] + third, 0.05)
    ring_outer = float(rel([0.32], 0.08)[0])
    ring_inner = ring_outer * float(rng.uniform(0.55, 0.68))
    ring_r = (p - torch.from_numpy(ring_centre.astype(np.float32))).norm(dim=-1)

    label = torch.zeros(p.shape[:-1], dtype=torch.uint8)
    label[body <= 1.0] = 1
    label[organ_a <= 1.0] = 2
    label[organ_b <= 1.0] = 3
    label[ring_r <= ring_outer] = 4
    label[ring_r <= ring_inner] = 5

    # Textures: each one a different scale and amplitude, fixed in the anatomy frame (sampled at
    # the warped points, so they move with the structures).
    tex = {
        0: 0.0 * ring_r,
        1: 45.0 * _noise_field(rng, d, max(4, size // 6), p),  # medium blotches
        2: 80.0 * _noise_field(rng, d, 4, p),  # large smooth gradient
        3: 40.0 * _noise_field(rng, d, max(6, size // 2), p),  # fine grain
        4: 50.0 * torch.cos(ring_r * (2 * math.pi / 0.06)),  # concentric stripes
        5: 8.0 * _noise_field(rng, d, 3, p),  # nearly flat
    }
    image = torch.zeros(p.shape[:-1], dtype=torch.float32)
    for value, mean in _MEAN.items():
        mask = label == value
        image = torch.where(mask, mean + tex[value], image)
    # Slight partial-volume blur (weaker for small images, whose structures are a few voxels
    # wide), then the random intensity change.
    image = _smooth(image.unsqueeze(0), sigma=0.5 * min(1.0, size / 64.0))[0]
    gain = rng.uniform(0.85, 1.15)
    bias = rng.uniform(-25.0, 25.0)
    gamma = rng.uniform(0.8, 1.25)
    image = 1000.0 * (image.clamp_min(0.0) / 1000.0) ** gamma * gain + bias
    noise_std = rng.uniform(5.0, 15.0)
    image = image + torch.from_numpy(
        (noise_std * rng.standard_normal(image.shape)).astype(np.float32)
    )
    return image.numpy().astype(np.float32, copy=False), label.numpy()


# --------------------------------------------------------------------------------------------
# dataset on disk
# --------------------------------------------------------------------------------------------
def generate_phantom_dataset(
    root: str | os.PathLike = "data",
    name: str = "phantom2d",
    spatial_dims: int = 2,
    size: int = 64,
    num_unlabeled: int = 40,
    num_labeled: int = 5,
    num_test: int = 10,
    spacing: float | Sequence[float] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    num_val: int = 4,
) -> Path:
    """Write a phantom dataset in the canonical layout under ``<root>/<name>`` and return that path.

    Args:
        root: data root folder (created if needed).
        name: dataset folder name inside ``root``.
        spatial_dims: 2 or 3.
        size: edge length of every image in voxels.
        num_unlabeled: images in ``train/unlabeled/image``.
        num_labeled: image/label pairs in ``train/labeled``.
        num_test: image/label pairs in ``test/labeled``.
        num_val: image/label pairs in ``val/labeled`` (validation cases, numbered after the others;
            0: none, no folder).
        spacing: voxel spacing in mm, one value or one per axis; default 0.8 (2D) / 1.5 (3D).
        seed: random seed; subject ``k`` uses ``numpy.random.default_rng([seed, k])``.
        overwrite: replace an existing folder even if it was not written by this generator.

    If ``<root>/<name>/manifest.json`` exists and records the same parameters and generator
    version, nothing is done. If it records other parameters, the folder is regenerated. A
    folder with files but without a phantom manifest (an interrupted generation leaves none,
    as the manifest is written last; or someone else's data) raises :class:`DataError` unless
    ``overwrite`` is set. Generation happens in a temporary sibling folder that is renamed into
    place at the end (:func:`gemini_pl.data.synthetic.write_generated_dataset`).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    for arg, value in (("num_unlabeled", num_unlabeled), ("num_labeled", num_labeled), ("num_test", num_test),
                       ("num_val", num_val)):
        if value < 0:
            raise ValueError(f"{arg} must be >= 0, got {value}")
    if spacing is None:
        spacing = 0.8 if spatial_dims == 2 else 1.5
    spacing_t = [float(spacing)] * spatial_dims if np.isscalar(spacing) else [float(s) for s in spacing]  # type: ignore[arg-type]
    if len(spacing_t) != spatial_dims or min(spacing_t) <= 0:
        raise ValueError(f"spacing must be positive, one value or {spatial_dims} values, got {spacing}")
    origin = [-0.5 * size * s + 3.25 * (j + 1) for j, s in enumerate(spacing_t)]

    params = {
        "name": name,
        "spatial_dims": int(spatial_dims),
        "size": int(size),
        "num_unlabeled": int(num_unlabeled),
        "num_labeled": int(num_labeled),
        "num_test": int(num_test),
        "spacing": spacing_t,
        "origin": origin,
        "seed": int(seed),
    }
    if num_val:  # (a dataset without validation phantoms keeps the manifest of before)
        params["num_val"] = int(num_val)
    manifest = {
        "generator": _GENERATOR_ID,
        "version": PHANTOM_VERSION,
        "params": params,
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "intensity": "raw arbitrary units, roughly 0..1000",
    }
    return write_generated_dataset(
        root, name, manifest, lambda k: make_phantom(np.random.default_rng([int(seed), k]), spatial_dims, size),
        spacing_t, origin, prefix="phantom", overwrite=overwrite,
    )
