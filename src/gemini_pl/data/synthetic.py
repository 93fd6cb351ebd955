"""Writing a generated dataset in the canonical layout, once (shared by the dataset generators).

:func:`write_generated_dataset` lays out ``<root>/<name>/{train/unlabeled, train/labeled,
test/labeled, val/labeled}/{image,label}/<prefix>_<k>.nii.gz`` from a function that makes case
``k``, with a ``manifest.json`` written last (its presence marks a complete generation). When the
manifest already records the same generator, version and parameters nothing is done; other
parameters regenerate the folder; a folder with files but no manifest of this generator is an
error unless ``overwrite``. Generation happens in a temporary sibling folder renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gemini_pl.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["GENERATORS", "SPLITS", "generate_all", "generate_dataset", "read_manifest", "write_generated_dataset", "write_volume"]

#: the dataset generators by name (``generate_dataset``; the ``generate:`` entries of the table modes)
GENERATORS = {
    "phantom": "gemini_pl.data.phantom:generate_phantom_dataset",
    "mni": "gemini_pl.data.anatomy:generate_mni_dataset",
    "synthseg": "gemini_pl.data.brains:generate_synthseg_dataset",
}


def generate_dataset(spec: Mapping[str, Any]) -> Path:
    """Write one generated dataset from a spec ``{"generator": <name of GENERATORS>, **its
    arguments}`` (e.g. ``{"generator": "synthseg", "root": "runs/data", "spatial_dims": 2}``) and
    return its folder; a no-op when it is there with these arguments (see the module doc)."""
    import importlib

    from gemini_pl.errors import ConfigError

    args = dict(spec)
    name = args.pop("generator", None)
    if name not in GENERATORS:
        raise ConfigError(f"generate: generator={name!r} is not one of {', '.join(GENERATORS)}")
    module, _, func = GENERATORS[name].partition(":")
    return getattr(importlib.import_module(module), func)(**args)


def generate_all(specs: Sequence[Mapping[str, Any]]) -> list[Path]:
    """:func:`generate_dataset` for each spec, in order (the table runners' data, before any cell runs)."""
    return [generate_dataset(spec) for spec in specs]


#: (folder, count key, labeled) in generation order; validation last so the other cases keep their numbers.
SPLITS = (
    ("train/unlabeled", "num_unlabeled", False),
    ("train/labeled", "num_labeled", True),
    ("test/labeled", "num_test", True),
    ("val/labeled", "num_val", True),
)

MakeCase = Callable[[int], "tuple[np.ndarray, np.ndarray]"]


def write_volume(arr: np.ndarray, path: Path, spacing: Sequence[float], origin: Sequence[float]) -> None:
    """Write an array (axis j = file axis j) as NIfTI with the given spacing and origin (identity direction)."""
    import SimpleITK as sitk

    # SimpleITK's array order is (z, y, x); transposing makes array axis j = file axis j.
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.T), isVector=False)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    sitk.WriteImage(img, str(path), useCompression=True)


def read_manifest(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_generated_dataset(
    root: str | os.PathLike, name: str, manifest: Mapping[str, Any], make_case: MakeCase,
    spacing: Sequence[float], origin: Sequence[float], prefix: str, overwrite: bool = False,
    case_name: Callable[[int], str] | None = None,
) -> Path:
    """Write (or find) the dataset ``<root>/<name>`` described by ``manifest``; returns its path.

    ``manifest`` holds ``generator``, ``version`` and ``params`` (with the counts ``num_unlabeled``,
    ``num_labeled``, ``num_test`` and optionally ``num_val``); ``make_case(k)`` returns the image
    and label arrays of case ``k`` (cases are numbered across the splits in :data:`SPLITS` order),
    written as ``<prefix>_<k:04d>`` or as ``case_name(k)`` (names may repeat across splits: the
    same subject unlabeled and labeled).
    """
    out = Path(root) / name
    manifest_path = out / "manifest.json"
    params = manifest["params"]
    if out.exists():
        old = read_manifest(manifest_path)
        if old is not None and old.get("generator") == manifest["generator"]:
            if old.get("version") == manifest["version"] and old.get("params") == params:
                return out  # fast path: already generated with these parameters
        elif not overwrite and any(out.iterdir()):
            raise DataError(
                f"{out} exists and holds files but no complete manifest of {manifest['generator']} "
                f"({manifest_path}): it was not written by this generator or its generation was "
                "interrupted. Delete the folder, pick another dataset name, or pass overwrite=True to replace it."
            )
    t0 = time.perf_counter()
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(root) / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    full = dict(manifest)
    try:
        index = 0
        cases: dict[str, list[str]] = {}
        for split, count_key, labeled in SPLITS:
            count = int(params.get(count_key, 0))
            if split.startswith("val") and not count:
                continue
            (tmp / split / "image").mkdir(parents=True, exist_ok=True)
            if labeled:
                (tmp / split / "label").mkdir(parents=True, exist_ok=True)
            names = []
            for _ in range(count):
                case = f"{prefix}_{index:04d}" if case_name is None else case_name(index)
                image, label = make_case(index)
                write_volume(image, tmp / split / "image" / f"{case}.nii.gz", spacing, origin)
                if labeled:
                    write_volume(label, tmp / split / "label" / f"{case}.nii.gz", spacing, origin)
                names.append(case)
                index += 1
            cases[split] = names
        full["cases"] = cases
        with open(tmp / "manifest.json", "w", encoding="utf-8") as f:  # last: marks a complete generation
            json.dump(full, f, indent=2)
        if out.exists():
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:  # another process may have finished the same generation first
            other = read_manifest(manifest_path)
            if not (other and other.get("params") == params and other.get("version") == manifest["version"]):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated dataset %s (%s) in %.1f s", out, manifest["generator"], time.perf_counter() - t0)
    return out
