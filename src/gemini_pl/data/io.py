"""Finding and reading image files of the canonical layout, with user-facing errors.

Every problem a user can cause (missing or empty folder, unreadable file, image without its
label) raises :class:`gemini_pl.errors.DataError` naming the path and what to do.

Images are read through MONAI: ``LoadImage`` with ``NibabelReader`` for ``.nii``/``.nii.gz`` and
then ``EnsureChannelFirst``; ``.png`` through :func:`png_pixels` (palette, grey+alpha and colour handled
the same way by every command); ``.nrrd``, ``.nhdr``, ``.mha`` and ``.mhd``
through SimpleITK (:mod:`gemini_pl.data.sitk_io`, same array order and RAS affine). The result is a
``MetaTensor`` of shape ``(C, *spatial)``. Arrays come in file voxel order (no reorientation).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import NibabelReader
from monai.transforms import EnsureChannelFirst, LoadImage, MapTransform

from gemini_pl.data.sitk_io import SITK_SUFFIXES, read_sitk
from gemini_pl.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "DataWarning",
    "LoadImageSafe",
    "LoadImageSafed",
    "case_name",
    "check_file",
    "check_root",
    "check_values",
    "list_images",
    "load_image",
    "label_values",
    "pair_with_labels",
    "sha256_file",
    "png_pixels",
    "save_prediction",
]

#: File name endings recognised as images (checked case-insensitively).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", *SITK_SUFFIXES)

_HINT = ("see data/README.md, or use generated data: the phantom2d/phantom3d datasets, or the MNI152-derived "
         "mni2d/mni3d written by `python -m gemini_pl.data.anatomy --root <root>`, or the SynthSeg-derived "
         "synthseg2d/synthseg3d written by `python -m gemini_pl.data.brains --root <root>`")


class DataWarning(UserWarning):
    """Something in the data was converted (not an error), e.g. an RGB X-ray made grayscale."""


#: ITU-R BT.601 luma weights: RGB -> grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _suffix(path: str | os.PathLike) -> str | None:
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def case_name(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``.../phantom_0003.nii.gz`` -> ``phantom_0003``."""
    name = Path(path).name
    suffix = _suffix(name)
    return name[: -len(suffix)] if suffix else name


def check_root(root: str | os.PathLike) -> Path:
    """Return ``root`` as a Path; raise DataError when it does not exist or is not a folder."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist; {_HINT}")
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder; {_HINT}")
    return root


def list_images(folder: str | os.PathLike, strict: bool = True) -> list[Path]:
    """Sorted image files (:data:`IMAGE_SUFFIXES`) directly inside ``folder``.

    Hidden files (``.name``) are ignored. Raises DataError when the folder is missing, is not a
    folder, or holds no image; when it holds a dangling link, two files of one case
    (:func:`check_unique_cases`), or (``strict``) a file of another type (``strict=False``: other
    files are left alone, e.g. the metadata CSV beside a flat folder's images).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(
            f"data root {folder} does not exist; {_HINT} (expected the layout "
            "<root>/<dataset>/train/unlabeled/image, train/labeled/{image,label}, "
            "test/labeled/{image,label})"
        )
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; {_HINT}")
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists():
            raise DataError(f"{p} is a dangling link (it points to {os.readlink(p)}, which does not exist): "
                            "fix or remove it")
        if not p.is_file():
            continue
        if _suffix(p) is not None:
            files.append(p)
        elif strict:
            raise DataError(f"{p} is not a supported image file (use {', '.join(IMAGE_SUFFIXES)}): convert it or "
                            f"move it out of {folder}")
    if not files:
        raise DataError(
            f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)} files); {_HINT}"
        )
    check_unique_cases(files)
    return files


def check_unique_cases(files: Sequence[str | os.PathLike]) -> None:
    """DataError naming both files when two of ``files`` are one case (the same name without the
    image suffix, e.g. ``x.nii`` beside ``x.nii.gz``): it would be counted twice."""
    seen: dict[str, Path] = {}
    for f in files:
        name = case_name(f).lower()
        if name in seen:
            raise DataError(f"{seen[name]} and {f} are the same case {case_name(f)!r} (one name, two files): "
                            "keep one of them")
        seen[name] = Path(f)


def pair_with_labels(
    images: Sequence[str | os.PathLike], label_folder: str | os.PathLike
) -> list[tuple[Path, Path]]:
    """Pair each image with the file of the same name in ``label_folder``.

    Raises DataError naming the first image whose label is missing (and the missing path).
    """
    label_folder = Path(label_folder)
    if not label_folder.is_dir():
        raise DataError(
            f"label folder {label_folder} does not exist; labeled images need their labels under "
            f"it with the same file names; {_HINT}"
        )
    pairs = []
    for image in images:
        image = Path(image)
        label = label_folder / image.name
        if label.is_symlink() and not label.exists():
            raise DataError(f"label {label} of image {image} is a dangling link (it points to {os.readlink(label)}, "
                            "which does not exist): fix or remove it")
        if not label.is_file():
            raise DataError(
                f"image {image} has no label: expected {label} (same file name as the image); "
                "add the label file or move the image to train/unlabeled/image"
            )
        pairs.append((image, label))
    return pairs


# --------------------------------------------------------------------------------------------
# the checks every read makes (training, check-data, segment, register, predict)
# --------------------------------------------------------------------------------------------
def check_file(path: str | os.PathLike, deep: bool = False) -> Path:
    """``path`` as a Path, or DataError naming it: a dangling link, a missing, empty (0 bytes) or
    unsupported file, a ``.gz`` that is not gzip. ``deep``: a NIfTI must also hold all the voxels
    its header announces (a truncated ``.nii``/``.nii.gz``; some readers fill the rest with zeros)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a dangling link (it points to {os.readlink(path)}, which does not exist)")
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"{path} is not a supported image file (use {', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"image file {path} does not exist; {_HINT}")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path} is empty (0 bytes): re-copy or re-generate it")
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise DataError(f"{path} is not gzip-compressed although its name ends in .gz: rename it "
                                f"(e.g. to {path.name[:-3]}) or re-copy it")
    if deep and suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    return path


def _check_nifti_complete(path: Path) -> None:
    """DataError when the NIfTI ``path`` cannot be decoded whole with nibabel (a cut-off gzip
    stream, fewer voxel bytes than its header announces) or holds NaN/Inf (SimpleITK reads those
    as 0, silently)."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # EOFError, zlib.error, ValueError, ImageFileError, ...
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {_first_line(exc)}): re-copy it") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(f"{path} contains NaN or infinite values ({int((~np.isfinite(data)).sum())} voxels); "
                        "fix or remove the file")


#: PIL modes read as one grey channel as they are
_GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F", "1")


def png_pixels(path: str | os.PathLike, label: bool = False) -> tuple[np.ndarray, str | None]:
    """The pixels of a PNG as one 2D array ``(height, width)`` (PIL's order), and a note on what
    was converted (None: nothing). The one PNG decoder of every command:

    * grey (``L``, ``I;16``, ...): as stored;
    * grey + alpha (``LA``): the grey channel (alpha dropped, as for ``RGBA``);
    * colour (``RGB``, ``RGBA``, ...): images: ITU-R BT.601 luma of the colour channels; labels:
      the first channel;
    * palette (``P``, ``PA``): images: the palette applied (the colours shown, then luma), never the
      palette indices; labels: the indices (the class values the palette colours).
    """
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if mode in _GREY_MODES:
            return np.asarray(im), None
        if mode in ("P", "PA"):
            if label:
                return np.asarray(im.convert("P") if mode == "PA" else im), None
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
            grey = rgb @ np.asarray(_LUMA, dtype=np.float32)
            return grey, "a palette image: its palette is applied (the grey levels shown, not the palette indices)"
        if mode in ("LA", "La"):
            return np.asarray(im)[..., 0], None
        arr = np.asarray(im.convert("RGB") if mode not in ("RGB", "RGBA", "RGBa") else im)
        if label:
            return arr[..., 0], None
        channels = arr.shape[-1]
        grey = arr[..., :3].astype(np.float32) @ np.asarray(_LUMA, dtype=np.float32)
        return grey, f"has {channels} channels; converted to one grayscale channel"


def label_values(label: torch.Tensor | np.ndarray) -> list[int]:
    """The distinct values of an integer label array, sorted (a count of each value, not a sort of
    every voxel, for the usual small non-negative labels: ~20x faster than ``torch.unique`` on a
    2048x2048 mask)."""
    a = label.as_tensor() if hasattr(label, "as_tensor") else label
    a = torch.as_tensor(a).reshape(-1)
    if a.numel() == 0:
        return []
    if a.is_floating_point():
        return [int(v) for v in torch.unique(a).tolist()]
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < 1 << 16:
        counts = torch.bincount(a.to(torch.int64) if a.dtype != torch.int64 else a, minlength=hi + 1)
        return [int(v) for v in torch.nonzero(counts).reshape(-1).tolist()]
    return [int(v) for v in torch.unique(a).tolist()]


def check_values(arr: np.ndarray | torch.Tensor, path: str | os.PathLike, label: bool) -> None:
    """DataError naming ``path`` for NaN or infinite values, and for a label with non-integer
    values (labels are class indices: 0.5 or 2.5 is not rounded silently); a DataWarning for a
    constant image (every voxel equal: it carries no information)."""
    a = arr.as_tensor() if hasattr(arr, "as_tensor") else arr
    a = a.numpy() if torch.is_tensor(a) else np.asarray(a)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            raise DataError(f"{path} contains NaN or infinite values ({int((~finite).sum())} voxels); fix or remove the file")
        if label:
            frac = a[a != np.round(a)]
            if frac.size:
                examples = ", ".join(f"{v:g}" for v in np.unique(frac)[:4])
                raise DataError(f"label {path} has non-integer values ({examples}); labels must be class "
                                "indices: fix the file (it was not rounded)")
    if not label and a.size and a.min() == a.max():
        warnings.warn(f"{path} is constant (every voxel {float(a.flat[0]):g}): it carries no information",
                      DataWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
_LOADERS: dict[tuple[str, bool], tuple[LoadImage, object]] = {}


def _loader(kind: str, label: bool) -> tuple[LoadImage, object]:
    """Cached (MONAI LoadImage, reader) for 'nifti'; labels keep the file dtype.

    The reader is passed at call time so that LoadImage uses it alone: no fallback to other
    readers whose errors would hide the real one.
    """
    key = (kind, label)
    if key not in _LOADERS:
        reader = NibabelReader()
        loader = LoadImage(
            reader=reader, image_only=True, dtype=None if label else np.float32,
            ensure_channel_first=False,
        )
        _LOADERS[key] = (loader, reader)
    return _LOADERS[key]


def load_image(path: str | os.PathLike, *, label: bool = False, single_channel: bool = True):
    """Read one image file to a MONAI ``MetaTensor`` of shape ``(C, *spatial)``.

    Args:
        path: a file with one of :data:`IMAGE_SUFFIXES` (NIfTI, PNG, NRRD, MetaImage).
        label: keep the file's integer values and return int64 (values are rounded first);
            otherwise return float32.
        single_channel: reduce a multi-channel file to one channel (images: channel mean, e.g.
            an RGB X-ray; labels: the first channel).

    Raises:
        DataError: the file is missing, has an unknown suffix, or cannot be decoded.
    """
    path = check_file(path)
    suffix = _suffix(path)
    try:
        if suffix in SITK_SUFFIXES:
            img = read_sitk(path, dtype=None if label else np.float32)
        elif suffix == ".png":
            img = _png_tensor(path, label)
        else:
            loader, reader = _loader("nifti", label)
            img = loader(str(path), reader=reader)
            img = EnsureChannelFirst()(img)
    except DataError:
        raise
    except Exception as exc:  # nibabel/gzip/PIL errors come in many types
        raise DataError(
            f"cannot read {path}: {type(exc).__name__}: {_first_line(exc)}; the file is corrupt or "
            f"not a valid {suffix} image: re-copy or re-generate it (delete a phantom dataset "
            "folder to regenerate it)"
        ) from exc
    check_values(img, path, label)
    if single_channel and img.shape[0] > 1:
        if label:
            img = img[:1]
        else:
            channels = img.shape[0]
            if channels in (3, 4):  # RGB(A): luma of the colour channels, alpha dropped
                w = torch.tensor(_LUMA, dtype=img.dtype).view(3, *([1] * (img.dim() - 1)))
                img = (img[:3] * w).sum(dim=0, keepdim=True)
            else:
                img = img.mean(dim=0, keepdim=True)
            warnings.warn(
                f"{path} has {channels} channels; converted to one grayscale channel",
                DataWarning, stacklevel=2,
            )
    img = img.to(torch.int64) if label else img.to(torch.float32)  # label values checked integer above
    # one copy into C order (NIfTI arrays come in Fortran order, slow for every later op)
    return img.contiguous()


def _png_tensor(path: Path, label: bool):
    """A PNG (:func:`png_pixels`) as the MetaTensor ``(1, width, height)`` that MONAI's PILReader
    gives (index order ``(x, y)``, identity affine)."""
    from monai.data import MetaTensor

    arr, note = png_pixels(path, label)
    if note is not None:
        warnings.warn(f"{path} {note}" if note.startswith("has") else f"{path} is {note}", DataWarning, stacklevel=3)
    data = np.ascontiguousarray(arr.T)[None]
    if not label:
        data = data.astype(np.float32, copy=False)
    meta = {"format": "PNG", "width": int(arr.shape[1]), "height": int(arr.shape[0]),
            "spatial_shape": np.array(data.shape[1:]), "original_channel_dim": float("nan"),
            "filename_or_obj": str(path), "affine": torch.eye(4, dtype=torch.float64)}
    return MetaTensor(torch.from_numpy(data), meta=meta)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


class LoadImageSafe:
    """Callable ``path -> MetaTensor (C, *S)``: :func:`load_image` as a transform."""

    def __init__(self, label: bool = False) -> None:
        self.label = label

    def __call__(self, path):
        return load_image(path, label=self.label)


class LoadImageSafed(MapTransform):
    """Dictionary transform: replace ``d[key]`` (a path) by the loaded ``(C, *S)`` MetaTensor.

    The keys in ``label_keys`` are loaded as int64 labels, the others as float32 images.
    Errors are DataError naming the file (MONAI's ``Compose``/datasets wrap them in a
    RuntimeError; :func:`gemini_pl.errors.find_error` recovers them).
    """

    def __init__(self, keys, label_keys: Sequence[Hashable] = (), allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(label_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_image(d[key], label=key in self.label_keys)
        return d


def save_prediction(pred, meta: Mapping, path: str | os.PathLike) -> Path:
    """Write a prediction as NIfTI on the grid of the case it was predicted for.

    Args:
        pred: ``(*S)``, ``(C, *S)`` or ``(1, C, *S)`` array/tensor on the grid of a
            ``eval_mode="cases"`` batch's ``"image"`` (channel dimensions of size 1 are dropped).
        meta: that batch's ``"meta"`` (batched with batch size 1, or one item's); its
            ``"affine"`` (voxel -> world, RAS) is written, so the file overlays the input image.
        path: output ``.nii`` or ``.nii.gz`` file.
    """
    import nibabel as nib

    arr = pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)
    affine = meta["affine"]
    affine = affine.detach().cpu().numpy() if torch.is_tensor(affine) else np.asarray(affine)
    if affine.ndim == 3:  # batched
        affine = affine[0]
    n = affine.shape[0] - 1
    while arr.ndim > n and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == n + 1:  # channels last for NIfTI
        arr = np.moveaxis(arr, 0, -1)
    if n == 2:  # NIfTI holds 3D affines
        affine = np.array([[affine[0, 0], affine[0, 1], 0, affine[0, 2]],
                           [affine[1, 0], affine[1, 1], 0, affine[1, 2]],
                           [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    if arr.dtype == np.int64:
        arr = arr.astype(np.int32 if arr.max(initial=0) > 32767 or arr.min(initial=0) < -32768 else np.int16)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a whole file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
