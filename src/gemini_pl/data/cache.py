"""From records to preprocessed items: caching, error unwrapping, checks and random crops.

A record (:mod:`gemini_pl.data.records`) becomes an *item* ``{"image", "label"?, "name", "meta",
...}`` through the deterministic chain of :func:`gemini_pl.data.transforms.case_transforms`.
:func:`read_items` runs that chain once per file where the cache mode allows it:

``memory``
    every file is read and preprocessed when the dataset is built and kept in memory (MONAI
    ``CacheDataset``);
``disk``
    preprocessed once per dataset and preprocessing, kept on disk across runs (MONAI
    ``PersistentDataset``; the key includes each file's size and mtime, see :func:`disk_cache_dir`);
``none``
    read at every access.

Random training transforms (the foreground-aware crops of :func:`labeled_crops`) run *after* the
cache, at every access (:func:`with_random`). Errors raised inside MONAI come back as the gemini-pl
error that caused them (:class:`~gemini_pl.errors.DataError` / ``ConfigError``), not as MONAI's
``RuntimeError`` wrapping.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from monai.data import CacheDataset, PersistentDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, RandCropByPosNegLabeld, Transform
from torch.utils.data import Dataset

from gemini_pl.data.specs import DatasetSpec
from gemini_pl.data.transforms import check_patch_size
from gemini_pl.errors import ConfigError, DataError, find_error

__all__ = [
    "CACHE_MODES", "cache_mode", "check_items", "disk_cache_dir", "labeled_crops", "read_items",
    "with_random",
]

CACHE_MODES = ("memory", "disk", "none")


def cache_mode(cache: bool | str) -> str:
    """``data.cache`` as one of :data:`CACHE_MODES` (``True``: memory, ``False``: none)."""
    mode = {True: "memory", False: "none"}.get(cache, cache)  # type: ignore[call-overload]
    if mode not in CACHE_MODES:
        raise ConfigError(f"data.cache={cache!r} is not one of true, false, {', '.join(CACHE_MODES)}")
    return mode


def _reraise(exc: BaseException) -> None:
    err = find_error(exc)
    if err is not None and err is not exc:
        raise type(err)(str(err)) from exc


class _Safe(Dataset):
    """Re-raise the gemini-pl error hidden inside MONAI's RuntimeError wrapping."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[i]
        except Exception as exc:
            _reraise(exc)
            raise


class _Transformed(Dataset):
    """``transform(items[i])``: the random training transforms applied after the cache."""

    def __init__(self, items: Dataset, transforms: list) -> None:
        self.items = items
        self.transform = Compose(transforms)

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "_Transformed":
        """Reseed the random transforms only (MONAI's ``set_rnd`` would walk the whole cache)."""
        self.transform.set_random_state(seed=seed)
        return self

    def __getitem__(self, i: int) -> Any:
        try:
            return self.transform(dict(self.items[i]))
        except Exception as exc:
            _reraise(exc)
            raise


class _CheckPatch(Transform):
    """Raise ConfigError when ``patch_size`` does not fit the item's image (before cropping)."""

    def __init__(self, patch_size: Sequence[int]) -> None:
        self.patch_size = list(patch_size)

    def __call__(self, d: dict) -> dict:
        check_patch_size(self.patch_size, d["image"].shape[1:], d["meta"]["filename"])
        return d


def file_stamp(record: dict) -> str:
    """Size and mtime of the record's files: part of the ``disk`` cache key (a changed file is
    read again)."""
    parts = []
    for key in ("image", "label", "mask_path"):
        paths = record.get(key)
        for p in paths if isinstance(paths, list) else [paths]:
            if p:
                try:
                    st = os.stat(p)
                    parts.append(f"{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append("missing")
    return "|".join(parts)


def disk_cache_dir(root: str, cache_dir: str | None, spec: DatasetSpec, spatial_dims: int | None,
                   num_classes: int | None = None) -> Path:
    """``<cache_dir or root/cache>/<dataset>-<hash of spec and dims>``: one folder per dataset
    and preprocessing (and per ``num_classes`` the labels were checked against, when it is not
    the spec's: a dataset without a label table)."""
    base = Path(cache_dir) if cache_dir else Path(root) / "cache"
    checked = () if num_classes in (None, spec.num_classes) else (num_classes,)
    key = repr((spec, spatial_dims, *checked)).encode()
    return base / f"{spec.name}-{hashlib.sha256(key).hexdigest()[:12]}"


def read_items(records: list[dict], chain: list, mode: str, disk_dir: Path | None = None) -> Dataset:
    """The preprocessed items of ``records`` (``chain`` applied), cached as ``mode`` says."""
    try:
        if mode == "memory":
            ds: Dataset = CacheDataset(
                records, transform=Compose(chain), cache_rate=1.0,
                num_workers=min(4, os.cpu_count() or 1), progress=False, copy_cache=False,
            )
        elif mode == "disk":
            records = [dict(r, stamp=file_stamp(r)) for r in records]
            ds = PersistentDataset(records, transform=Compose(chain), cache_dir=disk_dir)
        else:
            ds = MonaiDataset(records, transform=Compose(chain))
    except Exception as exc:
        _reraise(exc)
        raise
    return _Safe(ds)


def check_items(items: Dataset, count: int, *, patch_size: Sequence[int] | None,
                same_shape: bool, role: str) -> int | None:
    """Check the first ``count`` items: ``patch_size`` fits each image, and (``same_shape``) all
    share one shape. Returns the spatial dimensions of the first item (None when ``count`` is 0)."""
    dims = None
    shape0 = None
    for i in range(count):
        item = items[i]
        shape = tuple(item["image"].shape[1:])
        path = item["meta"]["filename"]
        if dims is None:
            dims = len(shape)
        check_patch_size(patch_size, shape, path)
        if same_shape:
            if shape0 is None:
                shape0 = (path, shape)
            elif shape != shape0[1]:
                raise DataError(
                    f"{path} has shape {shape} but {shape0[0]} has {shape0[1]}: images of "
                    f"one split must share one shape ({role}); set data.preprocessing.shape (pad/crop, "
                    "with spacing: resample first) or data.patch_size (random patches)"
                )
    return dims


def labeled_crops(patch_size: Sequence[int] | None) -> list:
    """Random foreground-aware crops of labeled items (empty without ``patch_size``)."""
    if not patch_size:
        return []
    return [
        _CheckPatch(patch_size),
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label",
                               spatial_size=list(patch_size), pos=1.0, neg=1.0, num_samples=1,
                               allow_smaller=False),
    ]


def with_random(items: Dataset, transforms: list) -> Dataset:
    """``items`` with the random ``transforms`` applied at every access (``items`` if none)."""
    return _Transformed(items, transforms) if transforms else items
