"""The Lightning data module shared by every gemini-pl LightningModule.

One :class:`GeminiDataModule` serves pre-training, semi-supervised training, segmentation and
registration for every dataset (its :mod:`spec <gemini_pl.data.specs>` says where the files are,
the label table and the preprocessing). Layout (see ``data/README.md``)::

    <root>/<folder>/train/unlabeled/image/<name>     # training pairs (no labels needed)
    <root>/<folder>/train/labeled/{image,label}/<name>   # the few-shot labeled training set
    <root>/<folder>/test/labeled/{image,label}/<name>    # validation / test

Batches (``B`` = batch size, ``S`` = spatial shape or ``patch_size``; images float32 in [0, 1]):

``train_mode="pairs"`` (default)
    ``{"image_a", "image_b"}``: (B, 1, *S), a random ordered pair ``a != b`` of unlabeled
    training images (within one group for grouped datasets, e.g. ChestX-ray8 view x sex).
``train_mode="pairs+labeled"``
    the pair keys plus ``{"image", "label"}``: one random few-shot labeled training sample per item.
``train_mode="labeled"``
    ``{"image", "label"}`` of the few-shot labeled training set (``labeled_batch_size``).
``eval_mode="pairs"`` (default; validation and test)
    ``{"image_a", "image_b", "label_a", "label_b", "name_a", "name_b"}``: fixed pairs of held-out
    labeled cases.
``eval_mode="cases"``
    ``{"image", "label", "name", "spacing", "meta"}``, one whole case per batch (batch size 1):
    ``spacing`` (1, ndim) float32, ``meta`` the geometry to write a prediction back (see
    :func:`gemini_pl.data.io.save_prediction`).

``"label"``: multiclass datasets (one label map) (B, 1, *S) int64 of class indices 0..K-1 (after
the label table); multilabel datasets (SCR) (B, K, *S) float32 0/1 channels. See
:attr:`GeminiDataModule.num_classes`, :attr:`~GeminiDataModule.label_kind`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
import torch
from monai.data import CacheDataset, PersistentDataset
from monai.data import DataLoader as MonaiDataLoader
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, RandCropByPosNegLabeld, Transform
from torch.utils.data import Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from gemini_pl.data.io import case_name
from gemini_pl.data.layout import Layout
from gemini_pl.data.pairs import (
    CaseDataset,
    LabeledDataset,
    LabeledPairDataset,
    PairDataset,
    PairsWithLabeled,
)
from gemini_pl.data.phantom import generate_phantom_dataset
from gemini_pl.data.sampling import (
    MAX_PERMUTED,
    StreamDataset,
    StreamSampler,
    eval_sampler,
    lightning_batches_done,
)
from gemini_pl.data.specs import INTENSITY_MODES, DatasetSpec, get_spec
from gemini_pl.data.splits import few_shot, load_split, make_split, split_bytes, split_sha256, write_split
from gemini_pl.data.transforms import case_transforms, check_patch_size
from gemini_pl.errors import ConfigError, DataError, find_error

__all__ = ["GeminiDataModule", "PhantomDataModule", "PairDataset", "LabeledPairDataset", "INTENSITY_MODES"]

log = logging.getLogger(__name__)

TRAIN_MODES = ("pairs", "pairs+labeled", "labeled")
EVAL_MODES = ("pairs", "cases")
CACHE_MODES = ("memory", "disk", "none")
#: above this many training pairs an epoch is ``len(images)`` pairs drawn with replacement.
MAX_ENUMERATED_PAIRS = MAX_PERMUTED


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


class GeminiDataModule(L.LightningDataModule):
    """Pairs, few-shot labeled samples and evaluation cases of one dataset (see module doc)."""

    def __init__(
        self,
        root: str = "data",
        dataset: str = "phantom2d",
        spatial_dims: int | None = None,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 0,
        num_val_pairs: int | None = 8,
        intensity: str | None = None,
        cache: bool | Literal["memory", "disk", "none"] = True,
        seed: int = 0,
        train_mode: Literal["pairs", "pairs+labeled", "labeled"] = "pairs",
        eval_mode: Literal["pairs", "cases"] = "pairs",
        num_labeled: int | None = 5,
        labeled_batch_size: int = 1,
        patch_size: list[int] | None = None,
        split_file: str | None = None,
        label_table: dict[int, int] | None = None,
        preprocessing: dict[str, Any] | None = None,
        folder: str | None = None,
        datalist: str | None = None,
        eval_pairs: list[list[str]] | str | None = None,
        samples_per_epoch: int | None = None,
        cache_dir: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        """
        Args:
            root: data root folder; the dataset is read from ``<root>/<folder>``.
            dataset: a dataset name of :mod:`gemini_pl.data.specs` (``whs_ct``, ``asoca``,
                ``cat08``, ``candi``, ``scr``, ``kipa22``, ``chestxray8``, ``ppmi``,
                ``phantom2d``, ``phantom3d``) or any folder name in the canonical layout (labels
                then are class indices, intensities min-max scaled).
            spatial_dims: 2 or 3; ``None``: the spec's (or the files'). Checked against the files.
            batch_size: items per training batch (pairs, or pairs with a labeled sample).
            val_batch_size: pairs per validation/test batch (``eval_mode="cases"``: always 1).
            num_workers: DataLoader worker processes (0 loads in the main process).
            num_val_pairs: number of fixed held-out pairs ``i -> (i+1) mod n`` of the sorted test
                cases used for validation and testing; ``None``: all ordered pairs.
            intensity: override of the spec's intensity mode (``ct``, ``minmax``, ``xray``,
                ``none``); same as ``preprocessing: {intensity: ...}``.
            cache: ``True``/``memory``: read and preprocess every file once, keep it in memory
                (MONAI CacheDataset); ``disk``: once per dataset and preprocessing, kept in
                ``cache_dir`` across runs (MONAI PersistentDataset; for large sets);
                ``False``/``none``: read the files at every access.
            seed: seed of the training sampling, crops and of an implicit split.
            train_mode: ``pairs``, ``pairs+labeled`` or ``labeled`` (see module doc).
            eval_mode: ``pairs`` or ``cases`` (see module doc).
            num_labeled: few-shot budget: the number of labeled training images used, taken from
                the split (the same every run); ``None``: all ("Full").
            labeled_batch_size: labeled samples per batch in ``train_mode="labeled"``.
            patch_size: random training crops of this size (same location for A and B of a pair;
                foreground-aware for labeled samples); ``None``: whole images.
            split_file: a versioned split JSON (see :mod:`gemini_pl.data.splits`); created from the
                folder listing with ``seed`` if it does not exist. ``None``: the same split built
                in memory from the listing and ``seed`` (its hash is still recorded).
            label_table: override of the spec's label table (value in file -> class index).
            preprocessing: overrides of the spec's preprocessing fields (``intensity``, ``offset``,
                ``clip``, ``brain_mask``, ``orientation``, ``spacing``, ``resize``).
            folder: folder under ``root`` (default: the spec's, e.g. ``chestxray`` for ChestX-ray8).
            datalist: a Decathlon-style datalist JSON to read instead of the folder layout.
            eval_pairs: explicit registration evaluation pairs: ``[[name_a, name_b], ...]`` of test
                case names, or a JSON file holding such a list (overrides ``num_val_pairs``).
            samples_per_epoch: training items per epoch; ``None``: all ordered pairs (pairs modes;
                at most 2**24, beyond that one pair per image), all labeled samples (``labeled``).
            cache_dir: folder of the ``disk`` cache (default ``<root>/cache``; one sub-folder per
                dataset and preprocessing).
            on_error: ``raise``: any unreadable or inconsistent file stops the run with an error
                naming it; ``skip``: such files are left out, counted and reported (opt-in).
        """
        super().__init__()
        for arg, value, allowed in (("train_mode", train_mode, TRAIN_MODES),
                                    ("eval_mode", eval_mode, EVAL_MODES),
                                    ("on_error", on_error, ("raise", "skip"))):
            if value not in allowed:
                raise ConfigError(f"data.{arg}={value!r} is not one of {', '.join(allowed)}")
        if intensity is not None and intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity={intensity!r} is not one of {', '.join(INTENSITY_MODES)}")
        if spatial_dims not in (None, 2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for arg, value, low in (
            ("batch_size", batch_size, 1), ("val_batch_size", val_batch_size, 1),
            ("num_workers", num_workers, 0), ("labeled_batch_size", labeled_batch_size, 1),
            ("num_val_pairs", num_val_pairs, 1), ("num_labeled", num_labeled, 1),
            ("samples_per_epoch", samples_per_epoch, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{arg} must be >= {low}, got {value}")
        if patch_size is not None:
            if len(patch_size) not in (2, 3) or min(patch_size) < 1:
                raise ConfigError(f"data.patch_size must be 2 or 3 positive sizes, got {patch_size}")
            if spatial_dims is not None and len(patch_size) != spatial_dims:
                raise ConfigError(f"data.patch_size={patch_size} has {len(patch_size)} sizes but spatial_dims={spatial_dims}")
        self.cache_mode = {True: "memory", False: "none"}.get(cache, cache)  # type: ignore[call-overload]
        if self.cache_mode not in CACHE_MODES:
            raise ConfigError(f"data.cache={cache!r} is not one of true, false, {', '.join(CACHE_MODES)}")
        self.save_hyperparameters()
        self.root = root
        self.dataset = dataset
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.num_val_pairs = num_val_pairs
        self.cache = cache
        self.seed = seed
        self.train_mode = train_mode
        self.eval_mode = eval_mode
        self.num_labeled = num_labeled
        self.labeled_batch_size = labeled_batch_size
        self.patch_size = list(patch_size) if patch_size else None
        self.split_file = split_file
        self.datalist = datalist
        self.eval_pairs = eval_pairs
        self.samples_per_epoch = samples_per_epoch
        self.cache_dir = cache_dir
        self.on_error = on_error
        prep = dict(preprocessing or {})
        if intensity is not None:
            prep.setdefault("intensity", intensity)
        self.spec: DatasetSpec = self._base_spec(dataset)
        if prep.get("intensity") == "ct" and self.spec.preprocessing.clip is None and "clip" not in prep:
            prep["clip"] = (0.0, 2048.0)
        self.spec = self.spec.with_overrides(
            label_table=label_table, preprocessing=prep, folder=folder, spatial_dims=spatial_dims,
        )
        self.spatial_dims: int | None = self.spec.spatial_dims
        if self.spatial_dims is not None and self.spatial_dims != spatial_dims:
            self._update_hparams(spatial_dims=self.spatial_dims)
        self.intensity = self.spec.preprocessing.intensity
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.split: dict[str, Any] | None = None
        self.split_hash: str | None = None
        #: ``(file, reason)`` of everything left out in ``on_error="skip"`` mode.
        self.skipped: list[tuple[str, str]] = []
        self._layout: Layout | None = None
        self._num_classes: int | None = None
        self._labeled_items: Dataset | None = None
        self._eval_records: list[dict] | None = None
        self._val_ready = False

    # ---------------------------------------------------------------- spec / hparams
    def _base_spec(self, dataset: str) -> DatasetSpec:
        return get_spec(dataset)

    def _update_hparams(self, **kw: Any) -> None:
        """Record resolved values (spatial dims, split hash) as logged hyperparameters."""
        hp = dict(self.hparams)
        if all(hp.get(k) == v for k, v in kw.items()):
            return
        hp.update(kw)
        self.save_hyperparameters(hp)

    @property
    def label_kind(self) -> str | None:
        """``multiclass``, ``multilabel``, or ``None`` for a dataset without labels."""
        return self.spec.label_kind

    @property
    def num_classes(self) -> int:
        """K: classes incl. background (multiclass) or label channels (multilabel).

        From the spec's label table; for a dataset without a table, the largest value of the
        test labels + 1.
        """
        if self._num_classes is None:
            k = self.spec.num_classes
            if k is None:
                if self.label_kind is None:
                    raise ConfigError(f"dataset {self.spec.name} has no labels (no num_classes)")
                items = self._build_eval_items()
                top = 0
                for i in range(len(items)):  # type: ignore[arg-type]
                    top = max(top, int(items[i]["label"].max()))
                k = top + 1
            self._num_classes = k
        return self._num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    # ---------------------------------------------------------------- paths
    @property
    def data_dir(self) -> Path:
        """``<root>/<folder>``."""
        return Path(self.root) / self.spec.dir_name

    @property
    def unlabeled_dir(self) -> Path:
        return self.data_dir / "train" / "unlabeled" / "image"

    @property
    def test_image_dir(self) -> Path:
        return self.data_dir / "test" / "labeled" / "image"

    @property
    def test_label_dir(self) -> Path:
        return self.data_dir / "test" / "labeled" / "label"

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = Layout(self.root, self.spec, datalist=self.datalist,
                                  skip_missing=self.on_error == "skip")
        return self._layout

    # ---------------------------------------------------------------- split
    def _listing(self) -> dict[str, list[str]]:
        layout = self.layout
        return {k: [r["rel"] for r in layout.records(k)]
                for k in ("train_unlabeled", "train_labeled", "test") if layout.has(k)}

    def _ensure_split(self) -> None:
        if self.split is not None:
            return
        if self.split_file is not None:
            path = Path(self.split_file)
            if not path.exists():
                split = make_split(self.spec.name, self._listing(), seed=self.seed)
                write_split(split, path)
                log.warning("created split file %s from the listing of %s (seed %d): keep it with "
                            "your experiments so that every run uses the same cases",
                            path, self.data_dir, self.seed)
            self.split, self.split_hash = load_split(path, dataset=self.spec.name)
        else:
            self.split = make_split(self.spec.name, self._listing(), seed=self.seed)
            self.split_hash = split_sha256(split_bytes(self.split))

    def _select(self, key: str, names: list[str] | None = None) -> list[dict]:
        """Records of split ``key`` restricted to (and ordered as) the split's file names."""
        assert self.split is not None
        source_key = "test" if key == "val" else key
        if names is None:
            if key not in self.split:
                if key == "val":
                    return self._select("test")
                where = self.split_file or "the folder listing"
                raise DataError(
                    f"{where} has no {key.replace('_', ' ')} split: {self._expected_folder(key)} is "
                    "missing or empty"
                )
            names = list(self.split[key])
        if not names:
            raise DataError(f"split {key} of {self.spec.name} is empty ({self.split_file or self.data_dir})")
        records = self.layout.records(source_key)
        by_rel = {r["rel"]: r for r in records}
        missing = [n for n in names if n not in by_rel]
        if key == "val" and missing:  # validation cases may also be training files
            train = {r["rel"]: r for r in self.layout.records("train_labeled")} if self.layout.has("train_labeled") else {}
            by_rel.update({n: train[n] for n in missing if n in train})
            missing = [n for n in names if n not in by_rel]
        if missing:
            raise DataError(
                f"split {key} ({self.split_file or 'listing'}) names {len(missing)} file(s) not found in "
                f"{self.layout.source.get(source_key, self.data_dir)}: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}"
            )
        unused = len(records) - len(set(names) & set(by_rel))
        if unused > 0 and key != "train_labeled":
            log.info("%s: %d file(s) of %s are not in the split and are not used", self.spec.name,
                     unused, key)
        return [by_rel[n] for n in names]

    def _expected_folder(self, key: str) -> str:
        if key == "train_unlabeled" and self.spec.layout == "groups":
            return f"{self.data_dir}/{{{','.join(self.spec.groups)}}} (or {self.spec.metadata_csv})"
        return str(self.layout.split_dir(key) / "image")

    # ---------------------------------------------------------------- items
    def _items(self, records: list[dict], labeled: bool, random: list | None = None,
               check_shapes: bool = True, role: str = "") -> Dataset:
        """Preprocessed items of ``records``, read once (see ``cache``); ``random`` transforms
        (training crops) are applied after the cache, at every access."""
        chain = case_transforms(self.spec, self.spatial_dims, labeled)
        try:
            if self.cache_mode == "memory":
                ds: Dataset = CacheDataset(
                    records, transform=Compose(chain), cache_rate=1.0,
                    num_workers=min(4, os.cpu_count() or 1), progress=False, copy_cache=False,
                )
            elif self.cache_mode == "disk":
                # the file's size and mtime join the cache key: a changed file is read again
                records = [dict(r, stamp=_stamp(r)) for r in records]
                ds = PersistentDataset(records, transform=Compose(chain),
                                       cache_dir=self._disk_cache_dir())
            else:
                ds = MonaiDataset(records, transform=Compose(chain))
        except Exception as exc:
            _reraise(exc)
            raise
        det = _Safe(ds)
        # Checks of the preprocessed items: all of them when in memory, else the first.
        n_check = len(records) if self.cache_mode == "memory" else min(1, len(records))
        shape0 = None
        for i in range(n_check):
            item = det[i]
            shape = tuple(item["image"].shape[1:])
            path = item["meta"]["filename"]
            if self.spatial_dims is None:
                self.spatial_dims = len(shape)
            if self.patch_size is not None:
                check_patch_size(self.patch_size, shape, path)
            if check_shapes:
                if shape0 is None:
                    shape0 = (path, shape)
                elif shape != shape0[1]:
                    raise DataError(
                        f"{path} has shape {shape} but {shape0[0]} has {shape0[1]}: images of "
                        f"one split must share one shape ({role}); resample/crop them to a common "
                        "shape or set data.patch_size"
                    )
        return _Transformed(det, random) if random else det

    def _usable(self, records: list[dict], labeled: bool, role: str) -> list[dict]:
        """``on_error="skip"``: drop (and report in :attr:`skipped`) the records whose files fail
        to load or check (each file is read once more for this); ``raise``: all records."""
        if self.on_error != "skip":
            return records
        good = []
        transform = Compose(case_transforms(self.spec, self.spatial_dims, labeled))
        for rec in records:
            try:
                transform(rec)
            except Exception as exc:
                err = find_error(exc)
                if err is None:
                    raise
                self.skipped.append((rec["image"], str(err)))
                log.warning("skipped %s: %s", rec["image"], err)
                continue
            good.append(rec)
        if not good:
            raise DataError(f"every {role} file of {self.spec.name} was skipped (on_error=skip)")
        return good

    def _disk_cache_dir(self) -> Path:
        if self.cache_dir:
            base = Path(self.cache_dir)
        else:
            base = Path(self.root) / "cache"
        key = repr((self.spec, self.spatial_dims)).encode()
        return base / f"{self.spec.name}-{hashlib.sha256(key).hexdigest()[:12]}"

    def _labeled_random(self) -> list:
        if not self.patch_size:
            return []
        return [
            _CheckPatch(self.patch_size),
            RandCropByPosNegLabeld(keys=["image", "label"], label_key="label",
                                   spatial_size=self.patch_size, pos=1.0, neg=1.0, num_samples=1,
                                   allow_smaller=False),
        ]

    def _need_labels(self, what: str) -> None:
        if self.label_kind is None:
            raise ConfigError(
                f"dataset {self.spec.name} has no labels, but {what} needs them; use "
                "train_mode 'pairs' (and no validation), or a labeled dataset"
            )

    def _pairs(self) -> PairDataset:
        records = self._usable(self._select("train_unlabeled"), False, "training image")
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(r.get("group", ""), []).append(i)
        small = {g: len(ix) for g, ix in groups.items() if len(ix) < 2}
        if small and len(groups) == len(small):
            raise DataError(
                f"{self._expected_folder('train_unlabeled')} holds {len(records)} image(s)"
                f"{' per group' if len(groups) > 1 else ''}; training pairs need at least 2"
            )
        if small:
            log.warning("%s: group(s) %s hold one image and give no pair", self.spec.name, small)
        items = self._items(records, labeled=False, role="training pairs")
        return PairDataset(items, groups=list(groups.values()), patch_size=self.patch_size, seed=self.seed)

    def _labeled_train(self) -> LabeledDataset:
        self._need_labels(f"train_mode={self.train_mode!r}")
        assert self.split is not None
        names = few_shot(self.split, self.num_labeled, where=str(self.split_file or self.data_dir))
        if not names:
            raise DataError(f"{self._expected_folder('train_labeled')}: no labeled training images")
        records = self._usable(self._select("train_labeled", names), True, "labeled training")
        batch = self.labeled_batch_size if self.train_mode == "labeled" else self.batch_size
        items = self._items(records, labeled=True, random=self._labeled_random(),
                            check_shapes=batch > 1 and not self.patch_size, role="labeled training")
        return LabeledDataset(items)

    def _build_eval_items(self) -> Dataset:
        if self._labeled_items is None:
            self._need_labels("validation/test")
            records = self._usable(self._select("test"), True, "test")
            self._eval_records = records
            self._labeled_items = self._items(
                records, labeled=True, check_shapes=self.eval_mode == "pairs", role="test pairs",
            )
        return self._labeled_items

    def _eval_set(self, key: str) -> Dataset:
        assert self.split is not None
        if key == "val" and "val" in self.split:
            records = self._usable(self._select("val"), True, "validation")
            items = self._items(records, labeled=True, check_shapes=self.eval_mode == "pairs",
                                role="validation pairs")
        else:
            items = self._build_eval_items()
            records = self._eval_records or []
        if self.eval_mode == "cases":
            return CaseDataset(items)
        if len(records) < 2:
            raise DataError(
                f"{self._expected_folder('test')} holds {len(records)} labeled image; evaluation "
                "pairs need at least 2"
            )
        if self.eval_pairs is not None:
            return LabeledPairDataset(items, pairs=self._explicit_pairs(records))
        return LabeledPairDataset(items, self.num_val_pairs)

    def _explicit_pairs(self, records: list[dict]) -> list[tuple[int, int]]:
        pairs = self.eval_pairs
        if isinstance(pairs, str):
            try:
                pairs = json.loads(Path(pairs).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"data.eval_pairs: cannot read {pairs}: {exc}") from exc
        index = {r["name"]: i for i, r in enumerate(records)}
        index.update({r["rel"]: i for i, r in enumerate(records)})
        out = []
        for pair in pairs or []:
            if len(pair) != 2:
                raise ConfigError(f"data.eval_pairs entries must be [name_a, name_b], got {pair}")
            missing = [n for n in pair if n not in index and case_name(n) not in index]
            if missing:
                raise ConfigError(f"data.eval_pairs names {missing} that are not test cases of {self.spec.name}")
            out.append(tuple(index.get(n, index.get(case_name(n))) for n in pair))
        if not out:
            raise ConfigError("data.eval_pairs is empty")
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Create a missing ``split_file`` (on one process)."""
        if self.split_file is not None and not Path(self.split_file).exists():
            self.layout.check()
            self._ensure_split()

    def setup(self, stage: str | None = None) -> None:
        """Check the files and build the datasets the stage needs (DataError before any training)."""
        self.layout.check()
        self._ensure_split()
        if stage in (None, "fit") and self.train_set is None:
            if self.train_mode == "pairs":
                self.train_set = self._pairs()
            elif self.train_mode == "labeled":
                self.train_set = self._labeled_train()
            else:
                self.train_set = PairsWithLabeled(self._pairs(), self._labeled_train(), seed=self.seed)
        has_eval = self.label_kind is not None and ("test" in self.split or "val" in self.split)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self._val_ready = True
            if has_eval:
                self.val_set = self._eval_set("val")
            elif stage == "validate":
                self._need_labels("validation")
                self._select("test")  # raises: names the missing folder
            else:
                log.warning("dataset %s: no labeled test cases, so no validation", self.spec.name)
        if stage in (None, "test", "predict") and self.test_set is None:
            if stage is not None or has_eval:
                self._need_labels(f"{stage or 'test'}")
                self.test_set = self._eval_set("test")
        self._update_hparams(spatial_dims=self.spatial_dims, split_hash=self.split_hash)
        if has_eval:
            _ = self.num_classes
        log.info(
            "data %s (%s): train %s, val %s, test %s; split sha256 %s",
            self.data_dir, self.spec.name, _len(self.train_set), _len(self.val_set),
            _len(self.test_set), self.split_hash,
        )

    # ---------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, sampler: Sampler | None = None) -> MonaiDataLoader:
        if shuffle:
            # Training order: a resumable stream that depends only on the seed and on how many
            # batches were trained, so that a run resumed from any checkpoint sees the batches of
            # an uninterrupted run (data/sampling.py). Pair sets too large to permute are
            # sampled with replacement.
            n = len(ds)  # type: ignore[arg-type]
            huge = n > MAX_ENUMERATED_PAIRS
            num = self.samples_per_epoch or (getattr(ds, "n", n) if huge else n)
            if isinstance(ds, PairsWithLabeled) and huge and not self.samples_per_epoch:
                num = ds.pairs.n
            done = lightning_batches_done(self.trainer) if self.trainer is not None else None
            ds = StreamDataset(ds, seed=self.seed)
            sampler = StreamSampler(num, batch_size, batches_done=done)
        return MonaiDataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=False,
            collate_fn=default_collate,
        )

    def train_dataloader(self) -> MonaiDataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        batch = self.labeled_batch_size if self.train_mode == "labeled" else self.batch_size
        return self._loader(self.train_set, batch, shuffle=True)

    def _eval_loader(self, ds: Dataset | None) -> MonaiDataLoader | list:
        if ds is None:
            log.info("dataset %s has no labeled test cases: no validation/test batches", self.spec.name)
            return []
        batch = 1 if self.eval_mode == "cases" else self.val_batch_size
        # Under DDP: the items split over the processes without the padding of Lightning's
        # DistributedSampler, which would count repeated items twice in the synchronised means
        # (data/sampling.py:eval_sampler). None: not distributed, or Lightning's default.
        sampler = eval_sampler(ds, self.trainer)
        return self._loader(ds, batch, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> MonaiDataLoader | list:
        if self.val_set is None and not self._val_ready:
            self.setup("validate")
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> MonaiDataLoader | list:
        if self.test_set is None:
            self.setup("test")
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> MonaiDataLoader | list:
        """The held-out test items, as for testing."""
        return self.test_dataloader()


def _stamp(record: dict) -> str:
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


def _len(ds: Dataset | None) -> str:
    return "-" if ds is None else str(len(ds))  # type: ignore[arg-type]


class PhantomDataModule(GeminiDataModule):
    """:class:`GeminiDataModule` over a generated phantom dataset (the default dataset).

    ``prepare_data`` writes the phantom dataset to ``<root>/<dataset>`` (a no-op when it is
    already there with the same parameters); it is then read from disk exactly like real data.
    The few-shot budget is every generated labeled case (``num_labeled``).
    """

    def __init__(
        self,
        root: str = "data",
        dataset: str = "phantom2d",
        spatial_dims: int = 2,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 0,
        num_val_pairs: int | None = 8,
        intensity: str | None = None,
        cache: bool | Literal["memory", "disk", "none"] = True,
        seed: int = 0,
        size: int = 64,
        num_unlabeled: int = 40,
        num_labeled: int = 5,
        num_test: int = 10,
        generate: bool = True,
        train_mode: Literal["pairs", "pairs+labeled", "labeled"] = "pairs",
        eval_mode: Literal["pairs", "cases"] = "pairs",
        labeled_batch_size: int = 1,
        patch_size: list[int] | None = None,
        split_file: str | None = None,
        eval_pairs: list[list[str]] | str | None = None,
        samples_per_epoch: int | None = None,
    ) -> None:
        """
        Args:
            root: data root folder; the phantom is written to and read from ``<root>/<dataset>``.
            dataset: dataset folder name; ``phantom2d`` with ``spatial_dims=3`` is taken to mean
                ``phantom3d``.
            spatial_dims: 2 (images of size x size) or 3 (volumes of size^3).
            batch_size: items per training batch.
            val_batch_size: pairs per validation/test batch.
            num_workers: DataLoader worker processes (0 loads in the main process).
            num_val_pairs: number of fixed held-out test pairs used for validation and testing.
            intensity: intensity preprocessing (default ``minmax``).
            cache: keep the preprocessed images in memory (see :class:`GeminiDataModule`).
            seed: seed of the phantom generator and of the training sampling.
            size: phantom edge length in voxels (64 for 2D, 32 for 3D are good CPU sizes).
            num_unlabeled: phantom images in ``train/unlabeled``.
            num_labeled: labeled phantom images in ``train/labeled`` (all are the few-shot set).
            num_test: labeled phantom images in ``test/labeled`` (validation/test).
            generate: write the phantom dataset in ``prepare_data`` when it is missing or was
                written with other parameters; with ``False`` it must already exist.
            train_mode, eval_mode, labeled_batch_size, patch_size, split_file, eval_pairs,
            samples_per_epoch: see :class:`GeminiDataModule`.
        """
        if dataset == "phantom2d" and spatial_dims == 3:
            dataset = "phantom3d"
        self._phantom_name = dataset
        super().__init__(
            root=root, dataset=dataset, spatial_dims=spatial_dims, batch_size=batch_size,
            val_batch_size=val_batch_size, num_workers=num_workers, num_val_pairs=num_val_pairs,
            intensity=intensity, cache=cache, seed=seed, train_mode=train_mode,
            eval_mode=eval_mode, num_labeled=num_labeled, labeled_batch_size=labeled_batch_size,
            patch_size=patch_size, split_file=split_file, eval_pairs=eval_pairs,
            samples_per_epoch=samples_per_epoch,
        )
        self.size = size
        self.num_unlabeled = num_unlabeled
        self.num_test = num_test
        self.generate = generate

    def _base_spec(self, dataset: str) -> DatasetSpec:
        base = get_spec("phantom3d" if dataset == "phantom3d" else "phantom2d")
        return dataclasses.replace(base, name=dataset, folder=dataset)

    def prepare_data(self) -> None:
        """Generate the phantom dataset (fast no-op when it already exists)."""
        if self.generate:
            generate_phantom_dataset(
                self.root, name=self.dataset, spatial_dims=self.spatial_dims or 2, size=self.size,
                num_unlabeled=self.num_unlabeled, num_labeled=self.num_labeled,
                num_test=self.num_test, seed=self.seed,
            )
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        # Outside a Trainer (which calls prepare_data first) generate on demand too; after
        # prepare_data this is the generator's fast path (one manifest read).
        self.prepare_data()
        super().setup(stage)
