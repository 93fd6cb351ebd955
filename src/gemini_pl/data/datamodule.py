"""The Lightning data module shared by every gemini-pl LightningModule.

One :class:`GeminiDataModule` serves pre-training, semi-supervised training, segmentation and
registration for every dataset (its :mod:`spec <gemini_pl.data.specs>` says where the files are,
the label table and the preprocessing). Layout (see ``data/README.md``)::

    <root>/<folder>/train/unlabeled/image/<name>     # training pairs (no labels needed)
    <root>/<folder>/train/labeled/{image,label}/<name>   # the few-shot labeled training set
    <root>/<folder>/val/labeled/{image,label}/<name>     # validation (optional: the split's val)
    <root>/<folder>/test/labeled/{image,label}/<name>    # test (never validation)

Batches and what LightningModules may read (``spatial_dims``, ``label_kind``, ``num_classes``,
``class_names``, ``patch_size``, ``train_mode``, ``eval_mode``, ``atlas_cases()``; valid right
after construction) are the data contract, :mod:`gemini_pl.data.contract`. Names with a leading
underscore are private.

Where the parts are: which files serve which role under the split is
:mod:`gemini_pl.data.records`; reading, caching and checking them is :mod:`gemini_pl.data.cache`;
the batch datasets are :mod:`gemini_pl.data.pairs`; the training order and loaders are
:mod:`gemini_pl.data.sampling`; generated phantoms are the ``phantom`` option
(:mod:`gemini_pl.data.phantom_options`). This module assembles them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
from monai.data import DataLoader as MonaiDataLoader
from torch.utils.data import Dataset, Sampler

from gemini_pl.data.cache import cache_mode, check_items, disk_cache_dir, labeled_crops, read_items, with_random
from gemini_pl.data.contract import DataContract
from gemini_pl.data.grid import common_grid
from gemini_pl.data.layout import LISTED_KEYS, Layout
from gemini_pl.data.pairs import CaseDataset, LabeledDataset, LabeledPairDataset, PairDataset, PairsWithLabeled
from gemini_pl.data.phantom_options import PhantomOptions
from gemini_pl.data.records import SplitRecords, check_val_monitors
from gemini_pl.data.sampling import eval_sampler, make_loader
from gemini_pl.data.sitk_io import header_geometry, header_spatial_dims
from gemini_pl.data.specs import INTENSITY_MODES, SPECS, get_spec
from gemini_pl.data.transforms import case_transforms
from gemini_pl.errors import ConfigError, DataError

__all__ = [
    "GeminiDataModule", "PhantomDataModule", "PhantomOptions", "PairDataset", "LabeledPairDataset",
    "INTENSITY_MODES",
]

log = logging.getLogger(__name__)


class GeminiDataModule(DataContract, L.LightningDataModule):
    """Pairs, few-shot labeled samples and evaluation cases of one dataset (see module doc; what
    LightningModules read: :class:`~gemini_pl.data.contract.DataContract`)."""

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
        phantom: PhantomOptions | None = None,
    ) -> None:
        """
        Args:
            root: data root folder; the dataset is read from ``<root>/<folder>``.
            dataset: a dataset name of :mod:`gemini_pl.data.specs` (``whs_ct``, ``asoca``,
                ``cat08``, ``candi``, ``scr``, ``kipa22``, ``chestxray8``, ``ppmi``,
                ``phantom2d``, ``phantom3d``, ``mni2d``, ``mni3d``, ``synthseg2d``, ``synthseg3d``) or
                any folder name in the canonical layout (labels then are class indices, intensities
                min-max scaled).
            spatial_dims: 2 or 3; ``None``: the spec's, else read from the first file's header
                when the data module is built. Checked against the files.
            batch_size: items per training batch (pairs, or pairs with a labeled sample).
            val_batch_size: pairs per validation/test batch (``eval_mode="cases"``: always 1).
            num_workers: DataLoader worker processes (0 loads in the main process).
            num_val_pairs: number of fixed held-out pairs ``i -> (i+1) mod n`` of the validation
                cases (validation) and of the test cases (test); ``None``: all ordered pairs.
            intensity: override of the spec's intensity mode (``ct``, ``minmax``, ``xray``,
                ``none``); same as ``preprocessing: {intensity: ...}``.
            cache: ``True``/``memory``: read and preprocess every file once, keep it in memory
                (MONAI CacheDataset); ``disk``: once per dataset and preprocessing, kept in
                ``cache_dir`` across runs (MONAI PersistentDataset; for large sets);
                ``False``/``none``: read the files at every access.
            seed: seed of the training sampling, crops, of an implicit split and of generated
                phantoms.
            train_mode: ``pairs``, ``pairs+labeled`` or ``labeled`` (the batches are described in
                :mod:`gemini_pl.data.contract`).
            eval_mode: ``pairs`` or ``cases`` (see :mod:`gemini_pl.data.contract`).
            num_labeled: few-shot budget: the number of labeled training images used, taken from
                the split (the same every run); ``None``: all ("Full").
            labeled_batch_size: labeled samples per batch in ``train_mode="labeled"``.
            patch_size: random training crops of this size (same location for A and B of a pair
                of one shape, the same relative location for pairs of different shapes;
                foreground-aware for labeled samples); ``None``: whole images.
            split_file: a versioned split JSON (see :mod:`gemini_pl.data.splits`); created from the
                folder listing with ``seed`` if it does not exist. ``None``: the same split built
                in memory from the listing and ``seed`` (its hash is still recorded).
            label_table: override of the spec's label table (value in file -> class index).
            preprocessing: overrides of the spec's preprocessing fields (``intensity``, ``offset``,
                ``clip``, ``brain_mask``, ``orientation``, ``spacing``, ``resize``, ``shape``). A
                folder without a spec whose files differ in shape or spacing, with none of
                ``spacing``/``resize``/``shape`` set, is brought to one grid automatically
                (:mod:`gemini_pl.data.grid`).
            folder: folder under ``root`` (default: the spec's, e.g. ``chestxray`` for ChestX-ray8).
            datalist: a Decathlon-style datalist JSON to read instead of the folder layout.
            eval_pairs: explicit registration test pairs: ``[[name_a, name_b], ...]`` of test case
                names, or a JSON file holding such a list (overrides ``num_val_pairs`` for testing).
            samples_per_epoch: training items per epoch; ``None``: all ordered pairs (pairs modes;
                at most 2**24, beyond that one pair per image), all labeled samples (``labeled``).
            cache_dir: folder of the ``disk`` cache (default ``<root>/cache``; one sub-folder per
                dataset and preprocessing).
            on_error: ``raise``: any unreadable or inconsistent file stops the run with an error
                naming it; ``skip``: such files are left out, counted and reported (opt-in).
            phantom: generate a phantom dataset into ``<root>/<folder>`` (``prepare_data``, and
                ``setup`` on demand) and read it (:class:`PhantomOptions`: ``size``,
                ``num_unlabeled``, ``num_train_labeled``, ``num_val``, ``num_test``, ``generate``). ``dataset``
                is then ``phantom2d``, ``phantom3d`` (``phantom2d`` with ``spatial_dims=3`` means
                ``phantom3d``) or a new folder name. ``None``: read the files that are there.
        """
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error={on_error!r} is not one of raise, skip")
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
        self.cache_mode = cache_mode(cache)
        #: the phantom to generate (``phantom`` option), or None.
        self.phantom: PhantomOptions | None = PhantomOptions.of(phantom)
        if self.phantom is not None:
            dataset = PhantomOptions.dataset_name(dataset, spatial_dims)
        self.save_hyperparameters()
        self.root = root
        self.dataset = dataset
        self.batch_size, self.val_batch_size, self.labeled_batch_size = batch_size, val_batch_size, labeled_batch_size
        self.num_workers, self.num_val_pairs, self.num_labeled = num_workers, num_val_pairs, num_labeled
        self.cache, self.cache_dir, self.seed, self.on_error = cache, cache_dir, seed, on_error
        self.split_file, self.datalist, self.eval_pairs = split_file, datalist, eval_pairs
        self.samples_per_epoch = samples_per_epoch
        prep = dict(preprocessing or {})
        if intensity is not None:
            prep.setdefault("intensity", intensity)
        spec = PhantomOptions.spec(dataset) if self.phantom is not None else get_spec(dataset)
        if prep.get("intensity") == "ct" and spec.preprocessing.clip is None and "clip" not in prep:
            prep["clip"] = (0.0, 2048.0)
        self.spec = spec.with_overrides(
            label_table=label_table, preprocessing=prep, folder=folder, spatial_dims=spatial_dims,
        )
        self._records = SplitRecords(root, self.spec, datalist=datalist, split_file=split_file,
                                     seed=seed, on_error=on_error, num_labeled=num_labeled)
        self._spatial_dims: int | None = self.spec.spatial_dims
        if self._spatial_dims is None and self.phantom is None:
            self._spatial_dims = self._header_dims()
        self.intensity = self.spec.preprocessing.intensity
        self.train_mode = train_mode  # type: ignore[assignment]  # the setters check them
        self.eval_mode = eval_mode  # type: ignore[assignment]
        self.patch_size = patch_size
        resolved: dict[str, Any] = {"dataset": dataset, "phantom": None if self.phantom is None
                                    else dataclasses.asdict(self.phantom)}
        if self._spatial_dims is not None:
            resolved["spatial_dims"] = self._spatial_dims
        self._update_hparams(**resolved)
        self._grid_done = False
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._num_classes: int | None = None
        self._labeled_items: Dataset | None = None
        self._eval_records: list[dict] | None = None
        self._atlas_cache: Dataset | None = None
        self._val_ready = False

    def _update_hparams(self, drop: tuple[str, ...] = (), **kw: Any) -> None:
        """Record resolved values (spatial dims, split hash) as logged hyperparameters; ``drop``:
        keys to leave out."""
        if all(self.hparams.get(k) == v for k, v in kw.items()) and not set(drop) & set(self.hparams):
            return
        for key in drop:
            self.hparams.pop(key)
        self.save_hyperparameters(dict(self.hparams, **kw))  # (also the initial, logged copy)

    # ---------------------------------------------------------------- files and split
    @property
    def data_dir(self) -> Path:
        """``<root>/<folder>``."""
        return self._records.data_dir

    @property
    def layout(self) -> Layout:
        return self._records.layout

    @property
    def split(self) -> dict[str, Any] | None:
        """The split (:mod:`gemini_pl.data.splits`) once fixed (``setup``), else None."""
        return self._records.split

    @property
    def split_hash(self) -> str | None:
        """sha256 of the split file (or of what it would be); None before ``setup``."""
        return self._records.split_hash

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(file, reason)`` of everything left out in ``on_error="skip"`` mode."""
        return self._records.skipped

    def _ensure_split(self) -> dict[str, Any]:
        return self._records.ensure_split()

    def no_validation(self) -> str | None:
        """Why there is no validation (one line naming the fix), None when there is (the split's
        ``val`` cases; never test cases). Generates a phantom and fixes the split; reads no image."""
        self._check_files()
        return self._records.no_val_reason(self.label_kind is not None, self.eval_mode == "pairs")

    def _select(self, key: str, names: list[str] | None = None) -> list[dict]:
        return self._records.select(key, names)

    def _usable(self, records: list[dict], labeled: bool, role: str, k_source: bool = False) -> list[dict]:
        return self._records.usable(records, labeled, role, self.spatial_dims,
                                    self._label_limit(labeled, k_source))

    def _label_limit(self, labeled: bool, k_source: bool) -> int | None:
        """K the label values of labeled files are checked against (see ``LoadCased``): that of
        the label table, or for a dataset without one that inferred from the labels — except for
        the files it is inferred from (``k_source``: their values are below it by definition)."""
        if not labeled or (k_source and self.spec.num_classes is None):
            return None
        return self.num_classes

    def _few_shot_records(self) -> list[dict]:
        return self._usable(self._records.few_shot(self.num_labeled), True, "labeled training")

    def _atlas_items(self) -> Dataset:
        if self._atlas_cache is None:
            self._need_labels("the atlases (labeled training images)")
            self._check_files()
            self._atlas_cache = self._items(self._few_shot_records(), labeled=True, role="atlases",
                                            same_shape=False, patch_check=False)
        return self._atlas_cache

    def _check_files(self) -> dict[str, Any]:
        """Generate the phantom (if asked), check the root, fix the split and the voxel grid."""
        self._write_phantom()
        self.layout.check()
        split = self._ensure_split()
        self._resolve_grid()
        return split

    def _listed_records(self) -> list[dict]:
        """Records of every role the files list (reads no image)."""
        layout = self.layout
        return [r for key in LISTED_KEYS if layout.has(key) for r in layout.records(key)]

    def _header_dims(self) -> int | None:
        """2 or 3 from the header of the first listed image; None when nothing can be listed yet
        (the root is missing: ``setup`` reports it)."""
        try:
            layout = self.layout
            first = next((layout.records(key)[0]["image"] for key in LISTED_KEYS if layout.has(key)), None)
        except (DataError, OSError, RuntimeError, ValueError):
            return None
        if first is None:
            return None
        try:
            return header_spatial_dims(first)  # a DataError names the file (empty, not gzip, ...)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"cannot read the header of {first}: {type(exc).__name__}: {exc}") from None

    def _resolve_grid(self) -> None:
        """A dataset whose spec fixes no geometry, with files of different shapes or spacings:
        bring them to one grid (:func:`gemini_pl.data.grid.common_grid`), logged once and recorded
        in the hyperparameters (``grid``)."""
        if self._grid_done:
            return
        self._grid_done = True
        p = self.spec.preprocessing
        if self.phantom is not None or self.spec.name in SPECS or p.spacing or p.resize or p.shape:
            return
        records = self._listed_records()
        try:
            geoms = [header_geometry(r["image"]) for r in records]
        except (DataError, OSError, RuntimeError, ValueError) as exc:  # the file is named when it is read
            log.warning("dataset %s: cannot read every header (%s); images are used as they are",
                        self.spec.name, exc)
            return
        grid = common_grid(geoms, patches=bool(self.patch_size))
        if not grid:
            return
        self.spec = self.spec.with_overrides(preprocessing=grid)
        self._records.spec = self.spec
        # recorded as preprocessing too: what a checkpoint's user (gemini-pl register / segment) applies
        chosen = {k: list(v) for k, v in grid.items()}
        self._update_hparams(grid=chosen, preprocessing={**dict(self.hparams.get("preprocessing") or {}), **chosen})
        log.warning(
            "dataset %s: its %d images differ in shape or spacing; they are brought to one grid: %s "
            "(set data.preprocessing: {spacing: [...], shape: [...]} or data.patch_size to choose)",
            self.spec.name, len(records), ", ".join(f"{k} {list(v)}" for k, v in grid.items()),
        )

    def _write_phantom(self) -> None:
        if self.phantom is not None:
            self.phantom.write(self.root, self.spec.dir_name, self.spatial_dims or 2, self.seed)

    # ---------------------------------------------------------------- datasets
    def _items(self, records: list[dict], labeled: bool, *, role: str, random: list | None = None,
               same_shape: bool = True, patch_check: bool = True, k_source: bool = False) -> Dataset:
        """Preprocessed items of ``records``, read once (see ``cache``); ``random`` transforms
        (training crops) are applied after the cache, at every access. ``k_source``: the files
        ``num_classes`` is inferred from (no label table)."""
        k = self._label_limit(labeled, k_source)
        chain = case_transforms(self.spec, self.spatial_dims, labeled, k)
        disk = disk_cache_dir(self.root, self.cache_dir, self.spec, self.spatial_dims, k) if self.cache_mode == "disk" else None
        items = read_items(records, chain, self.cache_mode, disk)
        # Checks of the preprocessed items: all of them when in memory, else the first.
        count = len(records) if self.cache_mode == "memory" else min(1, len(records))
        dims = check_items(items, count, patch_size=self.patch_size if patch_check else None,
                           same_shape=same_shape, role=role)
        if self._spatial_dims is None:
            self._spatial_dims = dims
        return with_random(items, random or [])

    def _need_labels(self, what: str) -> None:
        if self.label_kind is None:
            raise ConfigError(
                f"dataset {self.spec.name} has no labels, but {what} needs them; use "
                "train_mode 'pairs' (and no validation), or a labeled dataset"
            )

    def _num_classes_from_labels(self) -> int | None:
        split = self._check_files()
        if "test" in split:
            items = self._build_eval_items()
        elif split.get("train_labeled"):
            records = self._usable(self._select("train_labeled"), True, "labeled training", k_source=True)
            items = self._items(records, labeled=True, role="labeled training", same_shape=False,
                                patch_check=False, k_source=True)
        else:
            return None
        return 1 + max(int(items[i]["label"].max()) for i in range(len(items)))  # type: ignore[arg-type]

    def _pairs(self) -> PairDataset:
        records = self._usable(self._select("train_unlabeled"), False, "training image")
        groups = self._records.pair_groups(records)
        items = self._items(records, labeled=False, role="training pairs", same_shape=not self.patch_size)
        return PairDataset(items, groups=groups, patch_size=self.patch_size, seed=self.seed)

    def _train_batch_size(self) -> int:
        return self.labeled_batch_size if self.train_mode == "labeled" else self.batch_size

    def _labeled_train(self) -> LabeledDataset:
        self._need_labels(f"train_mode={self.train_mode!r}")
        items = self._items(self._few_shot_records(), labeled=True, random=labeled_crops(self.patch_size),
                            same_shape=self._train_batch_size() > 1 and not self.patch_size,
                            role="labeled training")
        return LabeledDataset(items)

    def _labeled_eval_items(self, key: str, role: str) -> tuple[list[dict], Dataset]:
        source = key == "test"  # num_classes without a label table comes from the test labels
        records = self._usable(self._select(key), True, "validation" if key == "val" else key, k_source=source)
        return records, self._items(records, labeled=True, same_shape=self.eval_mode == "pairs", role=role,
                                    k_source=source)

    def _build_eval_items(self) -> Dataset:
        if self._labeled_items is None:
            self._need_labels("validation/test")
            self._eval_records, self._labeled_items = self._labeled_eval_items("test", "test pairs")
        return self._labeled_items

    def _eval_set(self, key: str) -> Dataset:
        if key == "val":  # the split's val cases (never test cases)
            records, items = self._labeled_eval_items("val", "validation pairs")
        else:
            items = self._build_eval_items()
            records = self._eval_records or []
        if self.eval_mode == "cases":
            return CaseDataset(items)
        if len(records) < 2:
            where = self._records.expected_folder("test") if key == "test" else "the split's val list"
            raise DataError(f"{where} holds {len(records)} labeled image; evaluation pairs need at least 2")
        if self.eval_pairs is not None and key == "test":
            return LabeledPairDataset(items, pairs=self._records.pair_indices(self.eval_pairs, records))
        return LabeledPairDataset(items, self.num_val_pairs)

    # ---------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Generate the phantom dataset (``phantom`` option; a fast no-op when it is there) and
        create a missing ``split_file`` (Lightning runs this on one process)."""
        self._write_phantom()
        if self.split_file is not None and not Path(self.split_file).exists():
            self.layout.check()
            self._ensure_split()

    def setup(self, stage: str | None = None) -> None:
        """Check the files and build the datasets the stage needs (DataError before any training)."""
        split = self._check_files()
        if stage in (None, "fit") and self.train_set is None:
            if self.train_mode == "pairs":
                self.train_set = self._pairs()
            elif self.train_mode == "labeled":
                self.train_set = self._labeled_train()
            else:
                self.train_set = PairsWithLabeled(self._pairs(), self._labeled_train(), seed=self.seed)
        no_val = self.no_validation()
        if stage in (None, "fit", "validate"):
            if no_val is None and self.val_set is None:
                self.val_set = self._eval_set("val")
            elif no_val is not None:
                if stage == "validate":
                    raise ConfigError(f"validate needs a validation split: {no_val}")
                if not self._val_ready:
                    log.warning("dataset %s: no validation: %s", self.spec.name, no_val)
                check_val_monitors(self.trainer, no_val)  # a monitored val/... checkpoint: refused
            self._val_ready = True
        has_test = self.label_kind is not None and "test" in split
        if stage in (None, "test", "predict") and self.test_set is None:
            if stage is not None or has_test:
                self._need_labels(f"{stage or 'test'}")
                self.test_set = self._eval_set("test")
        self._update_hparams(spatial_dims=self.spatial_dims, split_hash=self.split_hash)
        if has_test or no_val is None:
            _ = self.num_classes
        log.info(
            "data %s (%s): train %s, val %s, test %s; split sha256 %s",
            self.data_dir, self.spec.name, _len(self.train_set), _len(self.val_set),
            _len(self.test_set), self.split_hash,
        )

    # ---------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, sampler: Sampler | None = None) -> MonaiDataLoader:
        return make_loader(ds, batch_size, shuffle=shuffle, seed=self.seed, num_workers=self.num_workers,
                           samples_per_epoch=self.samples_per_epoch, trainer=self.trainer, sampler=sampler)

    def train_dataloader(self) -> MonaiDataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, self._train_batch_size(), shuffle=True)

    def _eval_loader(self, ds: Dataset | None, what: str) -> MonaiDataLoader | list:
        if ds is None:
            log.info("dataset %s: no %s batches", self.spec.name, what)
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
        return self._eval_loader(self.val_set, "validation")

    def test_dataloader(self) -> MonaiDataLoader | list:
        if self.test_set is None:
            self.setup("test")
        return self._eval_loader(self.test_set, "test")

    def predict_dataloader(self) -> MonaiDataLoader | list:
        """The held-out test items, as for testing."""
        return self.test_dataloader()


def _len(ds: Dataset | None) -> str:
    return "-" if ds is None else str(len(ds))  # type: ignore[arg-type]


class PhantomDataModule(GeminiDataModule):
    """:class:`GeminiDataModule` over a generated phantom dataset (the name the demo configs use).

    ``PhantomDataModule(size=s, num_unlabeled=u, num_labeled=l, num_val=v, num_test=t, generate=g,
    **kw)`` is ``GeminiDataModule(phantom=PhantomOptions(size=s, num_unlabeled=u,
    num_train_labeled=l, num_val=v, num_test=t, generate=g), num_labeled=l, **kw)``:
    ``prepare_data`` writes the phantom to ``<root>/<dataset>`` (a no-op when it is there with the
    same settings), which is then read like real data; the few-shot set is every generated labeled
    training phantom, validation uses the ``num_val`` validation phantoms. Every other argument
    (``root``, ``dataset``, ``spatial_dims``, ``train_mode``, ``label_table``, ...) is
    :class:`GeminiDataModule`'s; ``spatial_dims`` defaults to the dataset's (2 or 3).
    """

    def __init__(self, *, size: int = 64, num_unlabeled: int = 40, num_labeled: int = 5, num_val: int = 4,
                 num_test: int = 10, generate: bool = True, **kwargs: Any) -> None:
        """
        Args:
            size: phantom edge length in voxels (64 for 2D, 32 for 3D are good CPU sizes).
            num_unlabeled: phantom images in ``train/unlabeled``.
            num_labeled: labeled phantom images in ``train/labeled``; all of them are the few-shot set.
            num_val: labeled phantom images in ``val/labeled`` (validation; 0: no validation).
            num_test: labeled phantom images in ``test/labeled`` (test).
            generate: write the phantom dataset in ``prepare_data`` when it is missing or was
                written with other parameters; with ``False`` it must already exist.
            **kwargs: the arguments of :class:`GeminiDataModule` (except ``phantom``).
        """
        phantom = PhantomOptions(size=size, num_unlabeled=num_unlabeled, num_train_labeled=num_labeled,
                                 num_val=num_val, num_test=num_test, generate=generate)
        super().__init__(num_labeled=num_labeled, phantom=phantom, **kwargs)
        self._update_hparams(drop=("phantom",))  # its settings are this class's own arguments
        self.size, self.num_unlabeled, self.num_val, self.num_test = size, num_unlabeled, num_val, num_test
        self.generate = generate
