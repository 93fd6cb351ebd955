"""Dictionary transforms that turn a case record (file paths) into checked, preprocessed tensors.

A *record* is a dict::

    {"image": path, "name": case name,
     "label": path (multiclass) | [path per channel] (multilabel) | absent,
     "mask_path": where its brain mask is expected | None (see :mod:`gemini_pl.data.layout`)}

:func:`case_transforms` builds the deterministic chain (load and check, optional orientation /
spacing / resize, intensity, brain mask, centred pad/crop to ``shape``, geometry) whose output is
cached; the random training crops are added after it.

Output of the chain::

    {"image": (1, *S) float32, "label": (1, *S) int64 | (K, *S) float32 | absent,
     "name": str, "meta": geometry dict (see :func:`geometry`)}

Every tensor is a plain ``torch.Tensor``; the geometry needed to write a prediction back lives in
``"meta"``. Every problem with a file raises :class:`~gemini_pl.errors.DataError` naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd, Resized, ResizeWithPadOrCropd, Spacingd, Transform

from gemini_pl.data.io import label_values, load_image
from gemini_pl.data.specs import DatasetSpec
from gemini_pl.errors import ConfigError, DataError

__all__ = [
    "LoadCased",
    "Intensityd",
    "Finalized",
    "case_transforms",
    "check_same_grid",
    "geometry",
    "binary_channel",
    "map_labels",
    "check_patch_size",
]

log = logging.getLogger(__name__)


def _affine(x: torch.Tensor) -> np.ndarray | None:
    aff = getattr(x, "affine", None)
    return None if aff is None else np.asarray(aff, dtype=np.float64)


def check_same_grid(image: torch.Tensor, other: torch.Tensor, image_path: Any, other_path: Any,
                    what: str = "label") -> None:
    """Raise DataError naming both files when ``other``'s shape or geometry differs from the image's."""
    if tuple(image.shape[1:]) != tuple(other.shape[1:]):
        raise DataError(
            f"{what} {other_path} has shape {tuple(other.shape[1:])} but its image {image_path} has "
            f"shape {tuple(image.shape[1:])}; they must match voxel for voxel"
        )
    a, b = _affine(image), _affine(other)
    if a is not None and b is not None and a.shape == b.shape:
        n = a.shape[0] - 1
        sp_a, sp_b = np.linalg.norm(a[:n, :n], axis=0), np.linalg.norm(b[:n, :n], axis=0)
        tol = 1e-3 * max(1.0, float(sp_a.max()))
        if not np.allclose(a, b, rtol=1e-4, atol=tol):
            raise DataError(
                f"{what} {other_path} and its image {image_path} have different geometry "
                f"(spacing {np.round(sp_b, 4).tolist()} vs {np.round(sp_a, 4).tolist()}, origin "
                f"{np.round(b[:n, n], 3).tolist()} vs {np.round(a[:n, n], 3).tolist()}); they must "
                "share one voxel grid"
            )


def map_labels(label: torch.Tensor, table: Mapping[int, int] | None, unmapped: str, path: Any,
               dataset: str = "", num_classes: int | None = None) -> torch.Tensor:
    """Map file values to class indices with ``table`` (0 is always background).

    ``unmapped``: ``error`` raises DataError naming the file, the values not in the table and the
    number of classes; ``background`` maps them to 0. ``table=None`` keeps the values: they must be
    class indices ``0..num_classes-1`` (``num_classes=None``: any value >= 0).
    """
    values = label_values(label)
    of = f" of {dataset}" if dataset else ""
    if table is None:
        bad = [v for v in values if v < 0]
        if bad:
            raise DataError(f"label {path} has negative values {bad}; labels must be class indices >= 0")
        beyond = [v for v in values if num_classes is not None and v >= num_classes]
        if beyond:
            raise DataError(
                f"label {path} has values {beyond} beyond the {num_classes} classes "
                f"0..{num_classes - 1}{of} (without a label table K is the largest test label + 1); "
                "fix the file, or set data.label_table to list every class value"
            )
        return label
    unexpected = [v for v in values if v != 0 and v not in table]
    if unexpected and unmapped == "error":
        allowed = sorted({0, *table})
        raise DataError(
            f"label {path} has values {unexpected} that are not in the label table{of} (allowed: "
            f"{allowed}; {max([0, *table.values()]) + 1} classes); fix the file or map them with "
            "data.label_table"
        )
    out = torch.zeros(label.shape, dtype=torch.int64)
    plain = label.as_tensor() if isinstance(label, MetaTensor) else label
    for v in values:
        c = table.get(v, 0)
        if c:
            out[plain == v] = c
    if isinstance(label, MetaTensor):
        return MetaTensor(out, meta=dict(label.meta))
    return out


def binary_channel(mask: torch.Tensor, path: Any, channel: int, names: Sequence[str]) -> torch.Tensor:
    """Channel ``channel`` of a multilabel case as float 0/1 (> 0 is foreground). The file must
    be binary: 0 and at most one other (positive) value, e.g. 1 or 255; else DataError naming it."""
    values = label_values(mask)
    foreground = [v for v in values if v != 0]
    if len(foreground) > 1 or any(v < 0 for v in foreground):
        raise DataError(
            f"label {path} (channel {names[channel]} of the {len(names)} channels "
            f"{', '.join(names)}) has values {values}; a channel must be binary (0 and one "
            "foreground value, e.g. 1 or 255): fix the file"
        )
    return (mask > 0).to(torch.float32)


class LoadCased(Transform):
    """Load a record's image, label(s) and brain mask; check them; map the label values.

    Args:
        spec: the dataset spec (label table, label kind, preprocessing).
        spatial_dims: expected spatial dimensions (``None``: not checked).
        labeled: load ``record["label"]`` (required) too.
        num_classes: K of a dataset without a label table: label values must be ``0..K-1``
            (``None``: not checked; with a table the table decides).
    """

    def __init__(self, spec: DatasetSpec, spatial_dims: int | None, labeled: bool,
                 num_classes: int | None = None) -> None:
        self.spec = spec
        self.spatial_dims = spatial_dims
        self.labeled = labeled
        self.num_classes = num_classes
        #: called as ``observe(kind, path, tensor)`` with every file as read (``kind``: ``image`` or
        #: ``label``, before the label table), e.g. by check-data to report what the files hold
        #: without reading them twice; None: nothing
        self.observe: Any = None

    def __call__(self, record: Mapping) -> dict:
        d = dict(record)
        path = d["image"]
        image = load_image(path)
        if self.observe is not None:
            self.observe("image", path, image)
        if self.spatial_dims is not None and image.dim() - 1 != self.spatial_dims:
            raise DataError(
                f"{path} has {image.dim() - 1} spatial dimensions (shape {tuple(image.shape[1:])}) "
                f"but spatial_dims={self.spatial_dims}; set data.spatial_dims accordingly"
            )
        d["image"] = image
        d["source"] = {"image": str(path)}
        mode = self.spec.preprocessing.brain_mask
        mask_path = d.pop("mask_path", None)
        if self.labeled:
            if d.get("label") is None:
                raise DataError(f"image {path} has no label file; labeled images need one")
            if self.spec.label_kind == "multilabel":
                paths = list(d["label"])
                channels = []
                for i, p in enumerate(paths):
                    ch = load_image(p, label=True)
                    if self.observe is not None:
                        self.observe("label", p, ch)
                    check_same_grid(image, ch, path, p)
                    channels.append(binary_channel(ch, p, i, self.spec.label_channels))
                label = torch.cat(channels, dim=0)
                brain = label.sum(0, keepdim=True) > 0 if mode == "label" else None
                d["source"]["label"] = [str(p) for p in paths]
            else:
                raw = load_image(d["label"], label=True)
                if self.observe is not None:
                    self.observe("label", d["label"], raw)
                check_same_grid(image, raw, path, d["label"])
                brain = raw > 0 if mode == "label" else None
                label = map_labels(raw, self.spec.label_table, self.spec.unmapped_labels,
                                   d["label"], self.spec.name, self.num_classes)
                d["source"]["label"] = str(d["label"])
            if brain is not None:  # parity option: the case's own label map
                d["mask"] = brain.to(torch.float32)
            d["label"] = label
        else:
            d.pop("label", None)
        if mode != "none" and "mask" not in d:  # one policy: every image of every split is masked
            if mask_path is None or not Path(mask_path).is_file():
                where = f"expected {mask_path}" if mask_path else "no mask file is given for it"
                raise DataError(
                    f"image {path} has no brain mask: {where} (data.preprocessing.brain_mask="
                    f"{mode!r} masks every image of every split); add the mask file (label > 0 is "
                    "brain, same file name as the image), or set data.preprocessing: "
                    "{brain_mask: none} to use no brain mask anywhere"
                )
            mask = load_image(mask_path, label=True)
            check_same_grid(image, mask, path, mask_path, what="brain mask")
            d["mask"] = (mask > 0).to(torch.float32)
            d["source"]["mask"] = str(mask_path)
        return d


class Intensityd(Transform):
    """Intensity preprocessing of ``d["image"]`` and brain masking (``d["mask"]`` is consumed).

    ``ct``: ``(clip(x + offset, lo, hi) - lo) / (hi - lo)``; ``minmax``: negatives -> 0 then
    min-max to [0, 1]; ``xray``: ``x / 255`` (8-bit; larger values are a DataError); ``none``.
    The brain mask multiplies the result.
    """

    def __init__(self, spec: DatasetSpec) -> None:
        self.prep = spec.preprocessing

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        x = d["image"]
        p = self.prep
        if p.intensity == "ct":
            lo, hi = p.clip  # type: ignore[misc]
            x = ((x + p.offset).clamp(lo, hi) - lo) / (hi - lo)
        elif p.intensity == "minmax":
            x = x.clamp_min(0.0)
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else x * 0.0
        elif p.intensity == "xray":
            top = float(x.max())
            if top > 255.0 + 1e-3:
                raise DataError(
                    f"{d.get('source', {}).get('image', 'an image')} has values up to {top:g}; "
                    "intensity 'xray' expects 8-bit images (0..255): convert it or set "
                    "data.preprocessing.intensity to 'minmax'"
                )
            x = x.clamp(0.0, 255.0) / 255.0
        mask = d.pop("mask", None)
        if mask is not None:
            x = x * (mask > 0.5)
        d["image"] = x
        return d


def _square(aff: np.ndarray | None, n: int) -> np.ndarray | None:
    """An ``(n+1, n+1)`` affine from MONAI's (which is 4x4 for some 2D readers, e.g. PNG)."""
    if aff is None or aff.ndim != 2:
        return None
    if aff.shape == (n + 1, n + 1):
        return aff
    if aff.shape == (4, 4) and n == 2:
        keep = [0, 1, 3]
        return aff[np.ix_(keep, keep)]
    return None


def geometry(x: torch.Tensor, source: Mapping[str, Any]) -> dict[str, Any]:
    """Geometry of ``x`` (``(C, *S)``, MONAI MetaTensor) for writing a prediction back.

    Returns a dict of plain tensors and strings (it collates):
    ``filename`` (source image), ``label_filename`` ("" if none), ``affine`` ((n+1, n+1)
    float64, voxel -> world in MONAI/nibabel RAS convention, of the array as served),
    ``original_affine`` (of the file), ``spacing`` (n), ``origin`` (n), ``direction`` ((n, n),
    unit columns), ``spatial_shape`` (n, int64, of the array as served) and ``original_shape``
    (n, of the file).
    """
    n = x.dim() - 1
    aff = _square(_affine(x), n)
    if aff is None:
        aff = np.eye(n + 1)
    meta = getattr(x, "meta", {}) or {}
    orig = meta.get("original_affine")
    orig = _square(np.asarray(orig, dtype=np.float64) if orig is not None else None, n)
    if orig is None:
        orig = aff
    shape0 = meta.get("spatial_shape")
    shape0 = np.asarray(shape0 if shape0 is not None else x.shape[1:], dtype=np.int64).reshape(-1)[:n]
    spacing = np.linalg.norm(aff[:n, :n], axis=0)
    direction = aff[:n, :n] / np.where(spacing > 0, spacing, 1.0)
    label_src = source.get("label", "")
    return {
        "filename": str(source.get("image", "")),
        "label_filename": label_src if isinstance(label_src, str) else ";".join(label_src),
        "affine": torch.as_tensor(aff, dtype=torch.float64),
        "original_affine": torch.as_tensor(orig, dtype=torch.float64),
        "spacing": torch.as_tensor(spacing, dtype=torch.float32),
        "origin": torch.as_tensor(aff[:n, n], dtype=torch.float64),
        "direction": torch.as_tensor(direction, dtype=torch.float64),
        "spatial_shape": torch.as_tensor(x.shape[1:], dtype=torch.int64),
        "original_shape": torch.as_tensor(shape0, dtype=torch.int64),
    }


class Finalized(Transform):
    """Record the geometry in ``d["meta"]``, make tensors plain and set the dtypes."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.multilabel = spec.label_kind == "multilabel"

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        source = d.pop("source", {"image": d.get("image_path", "")})
        d["meta"] = geometry(d["image"], source)
        d["image"] = _plain(d["image"]).to(torch.float32).contiguous()
        if "label" in d and torch.is_tensor(d["label"]):
            lab = _plain(d["label"])
            d["label"] = lab.to(torch.float32) if self.multilabel else torch.round(lab).to(torch.int64)
            d["label"] = d["label"].contiguous()
        return d


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def case_transforms(spec: DatasetSpec, spatial_dims: int | None, labeled: bool,
                    num_classes: int | None = None) -> list:
    """The deterministic (cacheable) chain of a record, as a list of callables (``num_classes``:
    see :class:`LoadCased`)."""
    p = spec.preprocessing
    keys_img, keys_lab = ["image"], ["label", "mask"]
    chain: list = [LoadCased(spec, spatial_dims, labeled, num_classes)]
    if p.orientation:
        chain.append(Orientationd(keys=["image", "label", "mask"], axcodes=p.orientation,
                                  allow_missing_keys=True))
    if p.spacing:
        chain.append(Spacingd(keys=keys_img, pixdim=p.spacing, mode="bilinear"))
        chain.append(Spacingd(keys=keys_lab, pixdim=p.spacing, mode="nearest", allow_missing_keys=True))
    if p.resize:
        chain.append(Resized(keys=keys_img, spatial_size=p.resize, mode="area"))
        chain.append(Resized(keys=keys_lab, spatial_size=p.resize, mode="nearest", allow_missing_keys=True))
    chain.append(Intensityd(spec))
    if p.shape:
        chain.append(ResizeWithPadOrCropd(keys=["image", "label"], spatial_size=p.shape, mode="constant",
                                          allow_missing_keys=True))
    chain.append(Finalized(spec))
    return chain


def check_patch_size(patch_size: Sequence[int] | None, shape: Sequence[int], path: Any) -> None:
    """ConfigError naming data.patch_size and the image when the patch does not fit in it."""
    if patch_size is None:
        return
    if len(patch_size) != len(shape):
        raise ConfigError(
            f"data.patch_size={list(patch_size)} has {len(patch_size)} dimensions but {path} has "
            f"{len(shape)} spatial dimensions (shape {tuple(shape)})"
        )
    if any(p > s for p, s in zip(patch_size, shape)):
        raise ConfigError(
            f"data.patch_size={list(patch_size)} is larger than the image {path} of shape "
            f"{tuple(shape)} (after preprocessing); use a smaller patch"
        )


def compose(chain: list) -> Compose:
    return Compose(chain, map_items=False)

