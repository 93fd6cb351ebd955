"""Voxel grids in world coordinates, reading images with SimpleITK, and resampling between grids.

Conventions (the ones of ITK / SimpleITK):

* a :class:`Grid` is ``shape`` (one size per axis), ``spacing`` (mm), ``origin`` (world position
  of voxel 0) and ``direction`` (columns: the world direction of each voxel axis), in **LPS**
  world coordinates; the world position of the continuous index ``i`` is
  ``origin + direction · diag(spacing) · i``;
* arrays are in **index order** ``(x, y[, z])`` — the order of ITK's index, of a NIfTI file's
  voxels and of the tensors the data module serves (SimpleITK's ``GetArrayFromImage`` returns
  the reverse, ``(z, y, x)``; :func:`image_array` and :func:`to_image` transpose).

:func:`model_grid` gives the grid a network sees for an image, following the training data's
preprocessing (``orientation``, ``spacing``, ``resize``): a permutation / flip of the axes, a new
spacing over the same field of view, or a new shape over the same field of view. Resampling onto
a grid is SimpleITK's (:func:`resample`); :func:`sample` evaluates an array at arbitrary
continuous indices with ``torch.nn.functional.grid_sample`` (the sampler of the project's warps).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES", "Grid", "case_name", "continuous_index", "image_array", "is_nifti", "list_inputs", "model_grid",
    "preflight", "read_image", "resample", "sample", "slabs", "to_image", "write_image",
]

#: File endings read as images (SimpleITK reads them; checked case-insensitively).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: LPS ↔ RAS: the first two world axes change sign.
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def case_name(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``a/b/case_01.nii.gz`` → ``case_01``."""
    name = Path(path).name
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_inputs(items: str | os.PathLike | list, what: str = "input") -> list[Path]:
    """Image files named by ``items``: files as given, folders listed (sorted, hidden files and
    non-image files skipped). DataError when something does not exist or a folder holds no image."""
    from ..data.io import check_unique_cases

    items = items if isinstance(items, (list, tuple)) else [items]
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = []
            for f in sorted(p.iterdir()):
                if f.name.startswith("."):
                    continue
                if f.is_symlink() and not f.exists():
                    raise DataError(f"{what} {f} is a dangling link (it points to {os.readlink(f)}, which does not exist)")
                if not f.is_file():
                    continue
                if not f.name.lower().endswith(IMAGE_SUFFIXES):
                    raise DataError(f"{what} {f} is not a supported image file (use {', '.join(IMAGE_SUFFIXES)}): "
                                    f"convert it or move it out of {p}")
                files.append(f)
            if not files:
                raise DataError(f"{what} folder {p} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            check_unique_cases(files)
            out += files
        elif p.is_symlink() and not p.exists():
            raise DataError(f"{what} {p} is a dangling link (it points to {os.readlink(p)}, which does not exist)")
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{what} {p} does not exist")
    return out


def preflight(files: list[Path]) -> list[Path]:
    """``files``, after the file checks of every read (:func:`gemini_pl.data.io.check_file`, with
    the NIfTI voxel count): an app refuses a bad input before it writes any output."""
    from ..data.io import _suffix, check_file

    for f in dict.fromkeys(files):
        if _suffix(f) is not None:
            check_file(f, deep=True)
            continue
        if Path(f).stat().st_size == 0:  # another SimpleITK format (.tif, .jpg, ...): its header must read
            raise DataError(f"{f} is empty (0 bytes): re-copy or re-generate it")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [""])[-1]
            raise DataError(f"cannot read {f}: {first.strip()}") from None
    return files


@dataclass(frozen=True)
class Grid:
    """A voxel grid in LPS world coordinates (see the module docstring)."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major (n, n), as SimpleITK gives it

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def matrix(self) -> np.ndarray:
        """``direction · diag(spacing)``: continuous index → world offset, (n, n) float64."""
        d = np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)
        return d * np.asarray(self.spacing, dtype=np.float64)[None, :]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @classmethod
    def from_matrix(cls, shape, matrix: np.ndarray, origin) -> "Grid":
        spacing = np.linalg.norm(matrix, axis=0)
        direction = matrix / spacing[None, :]
        return cls(tuple(int(s) for s in shape), tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                   tuple(float(d) for d in direction.reshape(-1)))

    def reference(self) -> sitk.Image:
        """An (empty) SimpleITK image of this grid, e.g. the reference of ``sitk.Resample``."""
        img = sitk.Image([int(s) for s in self.shape], sitk.sitkUInt8)
        self.stamp(img)
        return img

    def stamp(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` this grid's spacing, origin and direction (in place; returned)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def world(self, index: np.ndarray) -> np.ndarray:
        """World points (n, ...) of continuous indices (n, ...)."""
        idx = np.asarray(index, dtype=np.float64)
        flat = idx.reshape(self.ndim, -1)
        return (self.matrix @ flat + np.asarray(self.origin)[:, None]).reshape(idx.shape)

    def index(self, world: np.ndarray) -> np.ndarray:
        """Continuous indices (n, ...) of world points (n, ...)."""
        pts = np.asarray(world, dtype=np.float64)
        flat = pts.reshape(self.ndim, -1) - np.asarray(self.origin)[:, None]
        return np.linalg.solve(self.matrix, flat).reshape(pts.shape)

    def voxel_world(self, last: slice | None = None) -> np.ndarray:
        """World points of every voxel centre: (n, *shape) float64 (``last``: only that range of
        the last axis)."""
        axes = [np.arange(s, dtype=np.float64) for s in self.shape]
        if last is not None:
            axes[-1] = axes[-1][last]
        return self.world(np.stack(np.meshgrid(*axes, indexing="ij")))

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        return self.shape == other.shape and all(
            np.allclose(a, b, atol=tol) for a, b in ((self.spacing, other.spacing), (self.origin, other.origin),
                                                   (self.direction, other.direction)))


def slabs(shape, max_voxels: int = 1 << 22):
    """Slices of the last axis of ``shape`` holding at most ``max_voxels`` voxels each (at least one plane)."""
    plane = int(np.prod(shape[:-1]))
    step = max(1, max_voxels // max(plane, 1))
    for start in range(0, int(shape[-1]), step):
        yield slice(start, min(start + step, int(shape[-1])))


def read_image(path: str | os.PathLike, spatial_dims: int | None = None, label: bool = False,
               deep: bool = True) -> sitk.Image:
    """Read an image with SimpleITK: one channel (colour → luminance, several components →
    their mean; labels keep the first), a 3D file with a single slice read as 2D when
    ``spatial_dims`` is 2. DataError naming the file when it cannot be read or has the wrong
    number of dimensions. ``deep=False``: a NIfTI is not decoded whole first (the caller's
    :func:`preflight` did it)."""
    from ..data.io import _suffix, check_file, check_values, png_pixels

    path = Path(path)
    if _suffix(path) is not None:  # the checks of the training data (same messages)
        check_file(path, deep=deep)
    elif not path.is_file():
        raise DataError(f"image file {path} does not exist")
    elif path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): re-copy or re-generate it")
    try:
        if path.name.lower().endswith(".png"):  # one PNG decoder for training and inference
            arr, note = png_pixels(path, label)
            if note is not None:
                log.warning("%s %s", path, note if note.startswith("has") else f"is {note}")
            img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        else:
            img = sitk.ReadImage(str(path))
    except DataError:
        raise
    except Exception as exc:  # SimpleITK's RuntimeError, PIL's errors
        first = (str(exc).strip().splitlines() or [""])[-1]
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {first.strip()}") from None
    if img.GetNumberOfComponentsPerPixel() > 1:
        n = img.GetNumberOfComponentsPerPixel()
        if label:
            img = sitk.VectorIndexSelectionCast(img, 0)
        else:
            comps = [sitk.Cast(sitk.VectorIndexSelectionCast(img, i), sitk.sitkFloat32) for i in range(n)]
            if n in (3, 4):  # RGB(A): ITU-R BT.601 luma
                img = comps[0] * 0.299 + comps[1] * 0.587 + comps[2] * 0.114
            else:
                img = sum(comps[1:], comps[0]) / float(n)
    arr = sitk.GetArrayViewFromImage(img)
    check_values(arr, path, label)
    if spatial_dims == 2 and img.GetDimension() == 3 and img.GetSize()[2] == 1:
        img = img[:, :, 0]
    if spatial_dims is not None and img.GetDimension() != spatial_dims:
        raise DataError(f"{path} has {img.GetDimension()} dimensions (size {img.GetSize()}) but the model is {spatial_dims}D")
    return img


def image_array(image: sitk.Image, dtype=np.float32) -> np.ndarray:
    """The voxels of ``image`` in index order ``(x, y[, z])``."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose().astype(dtype, copy=False))


def to_image(array: np.ndarray | torch.Tensor, grid: Grid, vector: bool = False) -> sitk.Image:
    """A SimpleITK image of ``array`` on ``grid``: ``(x, y[, z])``, or with ``vector=True``
    ``(n, x, y[, z])`` (one component per leading entry, e.g. a displacement field)."""
    arr = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
    if vector:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(arr, 0, -1).transpose(*range(arr.ndim - 2, -1, -1), arr.ndim - 1)), isVector=True)
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose()))
    return grid.stamp(img)


def _reoriented(grid: Grid, code: str) -> Grid:
    """The grid of the same voxels with axes permuted / flipped to the orientation ``code``
    (nibabel's RAS-based axis codes, as MONAI's ``Orientationd`` uses them)."""
    import nibabel as nib

    n = grid.ndim
    if len(code) != n:
        raise DataError(f"preprocessing.orientation={code!r} does not fit a {n}D image")
    aff = np.eye(n + 1)
    aff[:n, :n] = grid.matrix
    aff[:n, n] = grid.origin
    flip = _LPS_RAS[:n, :n]
    ras = aff.copy()
    ras[:n] = flip @ aff[:n]
    start = nib.orientations.io_orientation(ras)
    transform = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(code, labels=_labels(n)))
    new_shape = [0] * n
    for i, (j, _) in enumerate(transform):
        new_shape[int(j)] = grid.shape[i]
    new = ras @ nib.orientations.inv_ornt_aff(transform, grid.shape)
    new[:n] = flip @ new[:n]
    return Grid.from_matrix(new_shape, new[:n, :n], new[:n, n])


def _labels(n: int):
    return (("L", "R"), ("P", "A"), ("I", "S"))[:n]


def _refit(grid: Grid, shape: np.ndarray, spacing: np.ndarray) -> Grid:
    """A grid of ``shape`` × ``spacing`` with ``grid``'s axes and the same centre."""
    d = np.asarray(grid.direction).reshape(grid.ndim, grid.ndim)
    matrix = d * spacing[None, :]
    centre = grid.world((np.asarray(grid.shape, dtype=np.float64) - 1) / 2)
    origin = centre - matrix @ ((shape - 1) / 2)
    return Grid.from_matrix(shape, matrix, origin)


def _ras_affine(grid: Grid) -> np.ndarray:
    n = grid.ndim
    aff = np.eye(n + 1)
    aff[:n, :n] = _LPS_RAS[:n, :n] @ grid.matrix
    aff[:n, n] = _LPS_RAS[:n, :n] @ np.asarray(grid.origin)
    return aff


def _respaced(grid: Grid, spacing) -> Grid:
    """The grid MONAI's ``Spacingd(pixdim=spacing)`` (the training transform) gives: the same axes,
    the new spacing, the shape and offset of ``monai.data.utils.compute_shape_offset``."""
    from monai.data.utils import compute_shape_offset, zoom_affine

    n = grid.ndim
    aff = _ras_affine(grid)
    sp = np.asarray(spacing, dtype=np.float64)[:n]
    if sp.size < n:
        sp = np.append(sp, [sp[-1]] * (n - sp.size))
    new = zoom_affine(aff, sp, diagonal=False)
    shape, offset = compute_shape_offset(list(grid.shape), aff, new, False)
    new[:n, n] = offset[:n]
    flip = _LPS_RAS[:n, :n]
    return Grid.from_matrix([int(s) for s in shape], flip @ new[:n, :n], flip @ new[:n, n])


def model_grid(grid: Grid, orientation: str | None = None, spacing=None, resize=None) -> Grid:
    """The grid a model trained with this preprocessing sees for an image on ``grid``.

    ``orientation``: axes permuted / flipped to the code (as MONAI's ``Orientationd``);
    ``spacing``: that spacing on the same axes, with the shape and origin of MONAI's ``Spacingd``;
    ``resize``: that shape over the same field of view (spacing scaled, same centre, as
    ``Resized``). Nothing set: ``grid`` itself.
    """
    out = grid
    if orientation:
        out = _reoriented(out, orientation)
    if spacing is not None:
        out = _respaced(out, spacing)
    if resize is not None:
        shape = np.asarray(resize, dtype=np.int64)[: out.ndim]
        sp = np.asarray(out.spacing) * np.asarray(out.shape) / shape
        out = _refit(out, shape, sp)
    return out


def resample(image: sitk.Image, grid: Grid, interpolator=sitk.sitkLinear, default: float = 0.0,
             extrapolate: bool = False) -> sitk.Image:
    """``image`` on ``grid`` (world identity: the same physical point), SimpleITK's resampler;
    outside the image ``default``, or with ``extrapolate`` the nearest voxel's value (MONAI's
    ``border`` padding); returned unchanged when it is on ``grid`` already."""
    if Grid.of(image).same_as(grid):
        return image
    return sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, default, image.GetPixelID(), extrapolate)


def continuous_index(grid: Grid, world: torch.Tensor) -> torch.Tensor:
    """Continuous indices (n, *T) on ``grid`` of world points (n, *T), in ``world``'s dtype and device."""
    inv = torch.from_numpy(np.linalg.inv(grid.matrix)).to(world)
    origin = torch.tensor(grid.origin, dtype=world.dtype, device=world.device).view(-1, *([1] * (world.dim() - 1)))
    return torch.einsum("ij,j...->i...", inv, world - origin)


def sample(array: torch.Tensor, index: torch.Tensor, mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """``array`` (C, *S) evaluated at the continuous indices ``index`` (n, *T) → (C, *T).

    Voxel centres are the integer indices (``grid_sample`` with ``align_corners=True``, the
    project's ``exact`` sampling); ``mode`` ``bilinear`` (trilinear in 3D) or ``nearest``;
    ``padding`` ``zeros`` or ``border`` outside the grid. Runs in ``index``'s dtype.
    """
    if index.shape[0] != array.dim() - 1:
        raise ValueError(f"indices of {index.shape[0]} axes for an array (C, *S) of shape {tuple(array.shape)}")
    size = torch.tensor(array.shape[1:], dtype=index.dtype, device=index.device)
    norm = 2 * index.movedim(0, -1) / (size - 1).clamp_min(1) - 1  # (*T, n), axis order of the array
    grid = norm.flip(-1).unsqueeze(0)  # grid_sample wants (x=last axis, ...) first
    src = array.to(index.dtype).unsqueeze(0)
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=True)[0]


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def write_image(array: np.ndarray | torch.Tensor, grid: Grid, path: str | os.PathLike,
                like: str | os.PathLike | None = None) -> Path:
    """Write ``array`` (index order, on ``grid``) to ``path``.

    With ``like`` a NIfTI file on ``grid`` and a NIfTI ``path``, the file's header geometry
    (sform, qform, their codes, pixdim, units) is copied from ``like`` (nibabel), so that every
    reader sees exactly the input's grid; otherwise SimpleITK writes ``grid`` (a NIfTI stores it
    in single precision: a direction read back may differ by ~1e-8).
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
    if like is not None and is_nifti(like) and is_nifti(path):
        ref = nib.load(str(like))
        shape = ref.shape[:grid.ndim] if len(ref.shape) >= grid.ndim else None
        if shape == tuple(arr.shape):
            hdr = ref.header.copy()
            hdr.set_data_dtype(arr.dtype)
            hdr.set_slope_inter(None, None)
            data = arr.reshape(tuple(ref.shape[:3]) if len(ref.shape) >= 3 and ref.shape[2:3] == (1,) and grid.ndim == 2 else arr.shape)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data), None, header=hdr), str(path))
            return path
    sitk.WriteImage(to_image(arr, grid), str(path), useCompression=str(path).lower().endswith(".gz"))
    return path
