"""Versioned split files: which cases of a dataset go where, the same every run.

A split file is JSON (``data/splits/<dataset>.json``)::

    {
      "format": "gemini-pl-split",
      "dataset": "candi",
      "version": 1,
      "seed": 0,
      "train_unlabeled": ["a.nii.gz", ...],      # file names, relative to the image folder
      "train_labeled": ["k.nii.gz", ...],        # in a seeded random order
      "few_shot": {"1": [...], "5": [...]},      # budget k -> the first k of train_labeled
      "val": ["v.nii.gz", ...],                  # validation (model selection); optional
      "test": ["t.nii.gz", ...]
    }

``num_labeled: k`` uses ``few_shot[str(k)]`` when present, else the first ``k`` entries of
``train_labeled`` (so a 5-shot set contains the 1-shot set). ``val`` never shares a case with
``test`` (a split file that does is refused, naming the cases); without ``val`` there is no
validation — the test cases are never used for it. :func:`make_split` fills ``val`` from the
listing's own ``val`` (a ``val/labeled`` folder, a datalist's ``validation``), else with the last
``num_val`` labeled training cases of the seeded order, as long as ``min_train`` (the paper's 5)
stay for training; those are then not in ``train_labeled``, so no few-shot set and not "Full"
(``num_labeled: null``) trains on them.

A split is deterministic in its ``seed`` and the folder listing; :func:`make_split` builds one,
:func:`write_split` writes it and :func:`split_sha256` is its identity (the sha256 of the file's
bytes; a split that was built in memory hashes to what :func:`write_split` would write). Run
``python -m gemini_pl.data.splits`` to create one from a data folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gemini_pl.errors import ConfigError, DataError

__all__ = [
    "SPLIT_FORMAT",
    "SPLIT_KEYS",
    "check_split",
    "describe_split",
    "few_shot",
    "load_split",
    "make_split",
    "split_bytes",
    "split_sha256",
    "write_split",
]

SPLIT_FORMAT = "gemini-pl-split"
#: lists of file names a split may hold.
SPLIT_KEYS = ("train_unlabeled", "train_labeled", "val", "test")
#: few-shot budgets listed explicitly in new split files.
FEW_SHOT_BUDGETS = (1, 5, 10)
#: validation cases taken from the labeled training cases of a listing without its own ``val``.
NUM_VAL = 5
#: labeled training cases always left for training (the paper's five-shot setting).
MIN_TRAIN = 5


def make_split(
    dataset: str,
    listing: Mapping[str, Sequence[str]],
    seed: int = 0,
    version: int = 1,
    budgets: Sequence[int] = FEW_SHOT_BUDGETS,
    num_val: int = NUM_VAL,
    min_train: int = MIN_TRAIN,
) -> dict[str, Any]:
    """A split from a folder listing ``{"train_unlabeled": names, "train_labeled": names, ...}``.

    Every list is sorted, then ``train_labeled`` is put in a random order drawn from ``seed``.
    ``val``: the listing's own ``val`` when it has one; else the last ``min(num_val, n - min_train)``
    names of that order (none when that is below 1), which leave ``train_labeled``. ``few_shot[k]``
    lists the first ``k`` names of ``train_labeled`` for each budget ``k`` it can fill (the same
    names whatever ``num_val`` is, as long as ``k <= n - num_val``).
    """
    if num_val < 0 or min_train < 0:
        raise ConfigError(f"num_val and min_train must be >= 0, got {num_val} and {min_train}")
    unknown = set(listing) - set(SPLIT_KEYS)
    if unknown:
        raise ValueError(f"unknown split keys {sorted(unknown)}; known: {SPLIT_KEYS}")
    split: dict[str, Any] = {"format": SPLIT_FORMAT, "dataset": dataset, "version": int(version),
                             "seed": int(seed)}
    for key in SPLIT_KEYS:
        if key not in listing:
            continue
        names = sorted(str(n) for n in listing[key])
        if len(set(names)) != len(names):
            raise DataError(f"split {key} of {dataset} lists a file twice")
        if key == "train_labeled":
            order = np.random.default_rng(seed).permutation(len(names))
            names = [names[i] for i in order]
        split[key] = names
    labeled = split.get("train_labeled", [])
    n_val = min(num_val, len(labeled) - min_train)
    if "val" not in split and n_val > 0:
        split["train_labeled"], split["val"] = labeled[:-n_val], labeled[-n_val:]
        labeled = split["train_labeled"]
    split["few_shot"] = {str(k): labeled[:k] for k in budgets if k <= len(labeled)}
    check_split(split, f"the split of {dataset}")
    return split


#: pairs of split lists that must not share a case: (held out, trained on or selected with)
DISJOINT = (("val", "test"), ("train_labeled", "test"), ("val", "train_labeled"))


def check_split(split: Mapping[str, Any], where: str) -> None:
    """Refuse a split in which a case (a file name, or the same name with another image suffix:
    ``x.nii`` and ``x.nii.gz``) is in two of ``val``, ``test`` and ``train_labeled`` (model
    selection or training on the test set, validation on training cases), naming the cases."""
    from gemini_pl.data.io import case_name

    for a, b in DISJOINT:
        names_b = {case_name(n).lower(): n for n in split.get(b) or ()}
        shared = sorted(n for n in split.get(a) or () if case_name(n).lower() in names_b)
        if shared:
            fix = ("remove them from val" if "val" in (a, b) else "move them out of the training folder")
            raise DataError(
                f"{where}: {a} and {b} share {len(shared)} case(s): {', '.join(shared[:5])}"
                f"{' ...' if len(shared) > 5 else ''}; a case belongs to one split ({fix})"
            )


def describe_split(split: Mapping[str, Any] | None, digest: str | None, num_labeled: int | None = None) -> str:
    """``sha256 <digest> (train 5 of 15 labeled + 40 unlabeled / val 5 / test 10)``: the split's
    identity and counts, for result tables (``num_labeled``: the few-shot budget used, if known)."""
    if split is None:
        return "n/a"
    labeled = len(split.get("train_labeled") or [])
    used = labeled if num_labeled is None else min(num_labeled, labeled)
    train = f"{used} of {labeled} labeled" if used != labeled else f"{labeled} labeled"
    if split.get("train_unlabeled"):
        train += f" + {len(split['train_unlabeled'])} unlabeled"
    counts = f"train {train} / val {len(split.get('val') or [])} / test {len(split.get('test') or [])}"
    return f"sha256 {digest or '?'} ({counts})"


def split_bytes(split: Mapping[str, Any]) -> bytes:
    """The canonical file content of ``split`` (what :func:`write_split` writes)."""
    return (json.dumps(split, indent=2) + "\n").encode("utf-8")


def split_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_split(split: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Write ``split`` to ``path`` atomically; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = split_bytes(split)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return split_sha256(data)


def load_split(path: str | os.PathLike, dataset: str | None = None) -> tuple[dict[str, Any], str]:
    """Read and check a split file; returns ``(split, sha256 of the file)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; create it with python -m gemini_pl.data.splits")
    data = path.read_bytes()
    try:
        split = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(f"split file {path} is not valid JSON: {exc}") from exc
    if not isinstance(split, dict) or split.get("format", SPLIT_FORMAT) != SPLIT_FORMAT:
        raise DataError(f"split file {path} is not a gemini-pl split (format {SPLIT_FORMAT!r})")
    if dataset is not None and split.get("dataset") not in (None, dataset):
        raise DataError(
            f"split file {path} is for dataset {split.get('dataset')!r}, not {dataset!r}"
        )
    for key in SPLIT_KEYS:
        if key in split and not (
            isinstance(split[key], list) and all(isinstance(n, str) for n in split[key])
        ):
            raise DataError(f"split file {path}: {key} must be a list of file names")
    fs = split.get("few_shot", {})
    if not isinstance(fs, dict) or not all(isinstance(v, list) for v in fs.values()):
        raise DataError(f"split file {path}: few_shot must map budgets to lists of file names")
    check_split(split, f"split file {path}")
    return split, split_sha256(data)


def few_shot(split: Mapping[str, Any], num_labeled: int | None, where: str = "the split") -> list[str]:
    """The labeled training file names of budget ``num_labeled`` (``None``: all of them)."""
    labeled = list(split.get("train_labeled", []))
    if num_labeled is None:
        return labeled
    if num_labeled < 1:
        raise ConfigError(f"data.num_labeled must be >= 1 or null (all), got {num_labeled}")
    listed = split.get("few_shot", {}).get(str(num_labeled))
    if listed is not None:
        return list(listed)
    if num_labeled > len(labeled):
        raise ConfigError(
            f"data.num_labeled={num_labeled} but {where} has only {len(labeled)} labeled training "
            "images; lower num_labeled or use null (all)"
        )
    return labeled[:num_labeled]


def _main(argv: list[str] | None = None) -> None:
    """``python -m gemini_pl.data.splits --root DIR --dataset NAME [--out FILE] [--seed S] [--num-val N]``."""
    from gemini_pl.data.layout import listing_of

    parser = argparse.ArgumentParser(prog="python -m gemini_pl.data.splits",
                                     description="Create a split file from a data folder listing.")
    parser.add_argument("--root", required=True, help="data root (data.root)")
    parser.add_argument("--dataset", required=True, help="dataset name (data.dataset)")
    parser.add_argument("--folder", default=None, help="folder under root (default: the spec's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--num-val", type=int, default=NUM_VAL,
                        help=f"validation cases taken from the labeled training cases when the data has no "
                             f"val folder (leaving at least {MIN_TRAIN} for training; 0: no validation); default {NUM_VAL}")
    parser.add_argument("--out", default=None, help="output file (default data/splits/<dataset>.json)")
    args = parser.parse_args(argv)
    listing = listing_of(args.root, args.dataset, folder=args.folder)
    split = make_split(args.dataset, listing, seed=args.seed, version=args.version, num_val=args.num_val)
    out = args.out or f"data/splits/{args.dataset}.json"
    digest = write_split(split, out)
    counts = ", ".join(f"{k}: {len(split[k])}" for k in SPLIT_KEYS if k in split)
    print(f"wrote {out} ({counts}; sha256 {digest})")


if __name__ == "__main__":  # pragma: no cover
    _main()
