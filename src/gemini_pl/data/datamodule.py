"""Lightning data modules reading a dataset in the canonical on-disk layout.

Layout (see ``data/README.md``)::

    <root>/<dataset>/train/unlabeled/image/<name>     # training pairs (no labels needed)
    <root>/<dataset>/test/labeled/image/<name>        # validation/test pairs ...
    <root>/<dataset>/test/labeled/label/<name>        # ... with labels of the same file name

Batches:

* train: ``{"image_a": (B, 1, *S) float32 in [0, 1], "image_b": (B, 1, *S) float32}``, a random
  ordered pair ``a != b`` of unlabeled training images;
* val/test: ``{"image_a", "image_b": (B, 1, *S) float32, "label_a", "label_b": (B, 1, *S) int64,
  "name_a", "name_b": list of case names}``, fixed pairs of held-out labeled images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from monai.data import CacheDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, MapTransform, ScaleIntensityd
from torch.utils.data import DataLoader, Dataset

from gemini_pl.data.io import (
    LoadImageSafed,
    case_name,
    check_root,
    find_data_error,
    list_images,
    pair_with_labels,
)
from gemini_pl.data.phantom import generate_phantom_dataset
from gemini_pl.errors import ConfigError, DataError

__all__ = ["GeminiDataModule", "PhantomDataModule", "PairDataset", "LabeledPairDataset"]

log = logging.getLogger(__name__)

INTENSITY_MODES = ("minmax", "ct", "none")


class _ClipAndScale(MapTransform):
    """Intensity preprocessing of the image keys (see ``GeminiDataModule``'s ``intensity``)."""

    def __init__(self, keys, mode: str) -> None:
        super().__init__(keys)
        self.mode = mode
        self._minmax = ScaleIntensityd(keys=keys, minv=0.0, maxv=1.0)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            if self.mode == "minmax":
                d[key] = d[key].clamp_min(0.0)
            elif self.mode == "ct":
                d[key] = d[key].clamp(0.0, 2048.0) / 2048.0
        if self.mode == "minmax":
            d = self._minmax(d)
        return d


def _plain(x: torch.Tensor) -> torch.Tensor:
    """MetaTensor -> plain torch.Tensor (batches hold ordinary tensors)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class _Safe(Dataset):
    """Re-raise the DataError hidden inside MONAI's RuntimeError wrapping."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict:
        try:
            return self.ds[i]
        except Exception as exc:
            err = find_data_error(exc)
            if err is not None:
                raise DataError(str(err)) from exc
            raise


class PairDataset(Dataset):
    """All ordered pairs ``(a, b)``, ``a != b``, of the items of ``images`` (``n * (n - 1)``)."""

    def __init__(self, images: Dataset) -> None:
        self.images = images
        self.n = len(images)  # type: ignore[arg-type]
        if self.n < 2:
            raise ValueError("a pair dataset needs at least two images")

    def __len__(self) -> int:
        return self.n * (self.n - 1)

    def pair(self, index: int) -> tuple[int, int]:
        """Indices ``(a, b)`` of pair ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        a, r = divmod(index, self.n - 1)
        return a, (r if r < a else r + 1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a, b = self.pair(index)
        return {"image_a": _plain(self.images[a]["image"]), "image_b": _plain(self.images[b]["image"])}


class LabeledPairDataset(Dataset):
    """Fixed pairs of labeled images: pair ``k`` is ``(k mod n) -> (k mod n + 1 + k // n) mod n``.

    The first ``n`` pairs are ``i -> (i + 1) mod n``; more pairs use larger offsets, up to the
    ``n * (n - 1)`` distinct ordered pairs.
    """

    def __init__(self, items: Dataset, num_pairs: int) -> None:
        self.items = items
        n = len(items)  # type: ignore[arg-type]
        if n < 2:
            raise ValueError("a pair dataset needs at least two images")
        num_pairs = min(int(num_pairs), n * (n - 1))
        self.pairs = []
        for k in range(num_pairs):
            a = k % n
            b = (a + 1 + (k // n) % (n - 1)) % n
            self.pairs.append((a, b))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a, b = self.pairs[index]
        ia, ib = self.items[a], self.items[b]
        return {
            "image_a": _plain(ia["image"]),
            "image_b": _plain(ib["image"]),
            "label_a": _plain(ia["label"]),
            "label_b": _plain(ib["label"]),
            "name_a": ia["name"],
            "name_b": ib["name"],
        }


class GeminiDataModule(L.LightningDataModule):
    """Registration pairs from a dataset in the canonical layout ``<root>/<dataset>/...``.

    Training uses random ordered pairs of ``train/unlabeled/image``; validation and testing use
    fixed pairs of ``test/labeled`` (image + label of the same file name).
    """

    def __init__(
        self,
        root: str = "data",
        dataset: str = "phantom2d",
        spatial_dims: int = 2,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 0,
        num_val_pairs: int = 8,
        intensity: str = "minmax",
        cache: bool = True,
        seed: int = 0,
    ) -> None:
        """
        Args:
            root: data root folder; the dataset is read from ``<root>/<dataset>``.
            dataset: dataset folder name inside ``root`` (e.g. ``phantom2d``, ``phantom3d``,
                ``candi``); see ``data/README.md`` for the layout.
            spatial_dims: 2 for 2D images (e.g. PNG X-rays), 3 for volumes; checked against
                the files.
            batch_size: pairs per training batch.
            val_batch_size: pairs per validation/test batch.
            num_workers: DataLoader worker processes (0 loads in the main process).
            num_val_pairs: number of fixed held-out pairs ``i -> (i+1) mod n`` of the sorted
                ``test/labeled`` cases used for validation and testing (at most ``n*(n-1)``).
            intensity: intensity preprocessing: ``minmax`` (negatives -> 0, then each image
                min-max scaled to [0, 1]; brain MRI, phantoms), ``ct`` (clip to [0, 2048] and
                divide by 2048; cardiac CT stored with a +1024 offset) or ``none``.
            cache: load and preprocess every image once and keep it in memory (MONAI
                CacheDataset); otherwise read files at every access.
            seed: seed of the training-pair shuffling.
        """
        super().__init__()
        if intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity={intensity!r} is not one of {', '.join(INTENSITY_MODES)}")
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for arg, value, low in (
            ("batch_size", batch_size, 1), ("val_batch_size", val_batch_size, 1),
            ("num_workers", num_workers, 0), ("num_val_pairs", num_val_pairs, 1),
        ):
            if value < low:
                raise ConfigError(f"{arg} must be >= {low}, got {value}")
        self.save_hyperparameters()
        self.root = root
        self.dataset = dataset
        self.spatial_dims = spatial_dims
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.num_val_pairs = num_val_pairs
        self.intensity = intensity
        self.cache = cache
        self.seed = seed
        self.train_set: PairDataset | None = None
        self.val_set: LabeledPairDataset | None = None
        self._num_classes: int | None = None
        self._labeled_items: Dataset | None = None

    # ---------------------------------------------------------------- paths
    @property
    def data_dir(self) -> Path:
        """``<root>/<dataset>``."""
        return Path(self.root) / self.dataset

    @property
    def unlabeled_dir(self) -> Path:
        return self.data_dir / "train" / "unlabeled" / "image"

    @property
    def test_image_dir(self) -> Path:
        return self.data_dir / "test" / "labeled" / "image"

    @property
    def test_label_dir(self) -> Path:
        return self.data_dir / "test" / "labeled" / "label"

    # ---------------------------------------------------------------- datasets
    def _image_transform(self, label: bool) -> Compose:
        keys = ["image", "label"] if label else ["image"]
        return Compose([
            LoadImageSafed(keys, label_keys=["label"]),
            _ClipAndScale(["image"], self.intensity),
        ])

    def _items(self, records: list[dict], label: bool) -> Dataset:
        transform = self._image_transform(label)
        try:
            if self.cache:
                ds: Dataset = CacheDataset(
                    records, transform=transform, cache_rate=1.0, num_workers=1,
                    progress=False, copy_cache=False,
                )
            else:
                ds = MonaiDataset(records, transform=transform)
        except Exception as exc:
            err = find_data_error(exc)
            if err is not None:
                raise DataError(str(err)) from exc
            raise
        ds = _Safe(ds)
        # Validate dimensionality / shapes on the first item (all items when cached).
        check = range(len(records)) if self.cache else range(min(1, len(records)))
        shape0 = None
        for i in check:
            item = ds[i]
            img = item["image"]
            path = records[i]["image"]
            if img.dim() - 1 != self.spatial_dims:
                raise DataError(
                    f"{path} has {img.dim() - 1} spatial dimensions (shape {tuple(img.shape[1:])}) "
                    f"but spatial_dims={self.spatial_dims}; set data.spatial_dims accordingly"
                )
            if label and tuple(item["label"].shape[1:]) != tuple(img.shape[1:]):
                raise DataError(
                    f"label {records[i]['label']} has shape {tuple(item['label'].shape[1:])} but "
                    f"its image {path} has shape {tuple(img.shape[1:])}; they must match"
                )
            if shape0 is None:
                shape0 = (path, tuple(img.shape[1:]))
            elif tuple(img.shape[1:]) != shape0[1]:
                raise DataError(
                    f"{path} has shape {tuple(img.shape[1:])} but {shape0[0]} has {shape0[1]}: "
                    "images of one split must share one shape (pairs are compared voxel by "
                    "voxel); resample/crop them to a common shape"
                )
        return ds

    def _labeled_records(self) -> list[dict]:
        check_root(self.root)
        check_root(self.data_dir)
        images = list_images(self.test_image_dir)
        pairs = pair_with_labels(images, self.test_label_dir)
        if len(pairs) < 2:
            raise DataError(
                f"{self.test_image_dir} holds {len(pairs)} labeled image; validation pairs need "
                "at least 2"
            )
        return [{"image": str(i), "label": str(lb), "name": case_name(i)} for i, lb in pairs]

    def _build_labeled(self) -> Dataset:
        if self._labeled_items is None:
            self._labeled_items = self._items(self._labeled_records(), label=True)
            self._num_classes = None
        return self._labeled_items

    def setup(self, stage: str | None = None) -> None:
        """Check the folders and build the datasets (raises DataError before any training)."""
        check_root(self.root)
        check_root(self.data_dir)
        if stage in (None, "fit") and self.train_set is None:
            images = list_images(self.unlabeled_dir)
            if len(images) < 2:
                raise DataError(
                    f"{self.unlabeled_dir} holds {len(images)} image; training pairs need at least 2"
                )
            records = [{"image": str(p), "name": case_name(p)} for p in images]
            self.train_set = PairDataset(self._items(records, label=False))
        if self.val_set is None:
            self.val_set = LabeledPairDataset(self._build_labeled(), self.num_val_pairs)
        _ = self.num_classes
        if self.train_set is not None:
            log.info(
                "data %s: %d training images (%d pairs), %d validation pairs, %d classes",
                self.data_dir, self.train_set.n, len(self.train_set), len(self.val_set),
                self.num_classes,
            )

    # ---------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        """Number of label classes: the largest value in the test labels + 1 (background 0)."""
        if self._num_classes is None:
            items = self._build_labeled()
            top = 0
            for i in range(len(items)):  # type: ignore[arg-type]
                top = max(top, int(items[i]["label"].max()))
            self._num_classes = top + 1
        return self._num_classes

    # ---------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("test")
        assert self.val_set is not None
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The held-out pairs, as for validation and test."""
        return self.test_dataloader()


class PhantomDataModule(GeminiDataModule):
    """:class:`GeminiDataModule` over a generated phantom dataset (the default dataset).

    ``prepare_data`` writes the phantom dataset to ``<root>/<dataset>`` (a no-op when it is
    already there with the same parameters); it is then read from disk exactly like real data.
    """

    def __init__(
        self,
        root: str = "data",
        dataset: str = "phantom2d",
        spatial_dims: int = 2,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 0,
        num_val_pairs: int = 8,
        intensity: str = "minmax",
        cache: bool = True,
        seed: int = 0,
        size: int = 64,
        num_unlabeled: int = 40,
        num_labeled: int = 5,
        num_test: int = 10,
        generate: bool = True,
    ) -> None:
        """
        Args:
            root: data root folder; the phantom is written to and read from ``<root>/<dataset>``.
            dataset: dataset folder name; ``phantom2d`` with ``spatial_dims=3`` is taken to mean
                ``phantom3d``.
            spatial_dims: 2 (images of size x size) or 3 (volumes of size^3).
            batch_size: pairs per training batch.
            val_batch_size: pairs per validation/test batch.
            num_workers: DataLoader worker processes (0 loads in the main process).
            num_val_pairs: number of fixed held-out test pairs used for validation and testing.
            intensity: intensity preprocessing (``minmax``, ``ct`` or ``none``).
            cache: keep the preprocessed images in memory.
            seed: seed of the phantom generator and of the training-pair shuffling.
            size: phantom edge length in voxels (64 for 2D, 32 for 3D are good CPU sizes).
            num_unlabeled: phantom images in ``train/unlabeled``.
            num_labeled: labeled phantom images in ``train/labeled`` (fine-tuning).
            num_test: labeled phantom images in ``test/labeled`` (validation/test pairs).
            generate: write the phantom dataset in ``prepare_data`` when it is missing or was
                written with other parameters; with ``False`` it must already exist.
        """
        if dataset == "phantom2d" and spatial_dims == 3:
            dataset = "phantom3d"
        super().__init__(
            root=root, dataset=dataset, spatial_dims=spatial_dims, batch_size=batch_size,
            val_batch_size=val_batch_size, num_workers=num_workers, num_val_pairs=num_val_pairs,
            intensity=intensity, cache=cache, seed=seed,
        )
        self.size = size
        self.num_unlabeled = num_unlabeled
        self.num_labeled = num_labeled
        self.num_test = num_test
        self.generate = generate

    def prepare_data(self) -> None:
        """Generate the phantom dataset (fast no-op when it already exists)."""
        if self.generate:
            generate_phantom_dataset(
                self.root, name=self.dataset, spatial_dims=self.spatial_dims, size=self.size,
                num_unlabeled=self.num_unlabeled, num_labeled=self.num_labeled,
                num_test=self.num_test, seed=self.seed,
            )

    def setup(self, stage: str | None = None) -> None:
        # Outside a Trainer (which calls prepare_data first) generate on demand too; after
        # prepare_data this is the generator's fast path (one manifest read).
        self.prepare_data()
        super().setup(stage)
