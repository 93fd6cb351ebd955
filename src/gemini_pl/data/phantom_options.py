"""``GeminiDataModule(phantom=PhantomOptions(...))``: generate the phantom dataset, then read it.

With the ``phantom`` option the data module writes a phantom dataset (:mod:`gemini_pl.data.phantom`)
to ``<root>/<folder>`` in ``prepare_data`` (and in ``setup``, for use outside a Trainer) and then
reads it like any other dataset. In a config::

    data:
      class_path: gemini_pl.data.GeminiDataModule
      init_args:
        dataset: phantom2d            # or phantom3d
        num_labeled: 5                # the few-shot budget, as for real data
        phantom: {size: 64, num_unlabeled: 40, num_train_labeled: 5, num_val: 4, num_test: 10}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gemini_pl.data.phantom import generate_phantom_dataset
from gemini_pl.data.specs import SPECS, DatasetSpec, get_spec
from gemini_pl.errors import ConfigError

__all__ = ["PhantomOptions"]


@dataclass(frozen=True)
class PhantomOptions:
    """What phantom dataset to generate (see :func:`~gemini_pl.data.generate_phantom_dataset`).

    Args:
        size: edge length of every image in voxels (64 for 2D, 32 for 3D are good CPU sizes).
        num_unlabeled: phantom images in ``train/unlabeled``.
        num_train_labeled: labeled phantoms in ``train/labeled`` (the data module's
            ``num_labeled`` is the few-shot budget taken from them).
        num_val: labeled phantoms in ``val/labeled``: the split's ``val`` cases (validation and
            "best" checkpoints select on them, never on the test phantoms); 0: no validation.
        num_test: labeled phantoms in ``test/labeled`` (test).
        generate: write the dataset when it is missing or was written with other settings; with
            ``False`` it must already exist.
    """

    size: int = 64
    num_unlabeled: int = 40
    num_train_labeled: int = 5
    num_val: int = 4
    num_test: int = 10
    generate: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"data.phantom.size must be >= 1, got {self.size}")
        for name in ("num_unlabeled", "num_train_labeled", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.phantom.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def of(cls, value: "PhantomOptions | Mapping[str, Any] | None") -> "PhantomOptions | None":
        """``value`` as options: a mapping (a saved hyperparameter, a YAML dict) is converted."""
        if value is None or isinstance(value, PhantomOptions):
            return value
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ConfigError(f"data.phantom: {exc}") from exc

    @staticmethod
    def dataset_name(dataset: str, spatial_dims: int | None) -> str:
        """``phantom2d`` with ``spatial_dims=3`` means ``phantom3d``; other names stay."""
        return "phantom3d" if dataset == "phantom2d" and spatial_dims == 3 else dataset

    @staticmethod
    def spec(dataset: str) -> DatasetSpec:
        """The phantom spec (label table, class names, min-max intensities) under the name and
        folder ``dataset``; 3D for ``phantom3d``, else 2D unless ``spatial_dims`` says otherwise."""
        if dataset in SPECS and not dataset.startswith("phantom"):
            raise ConfigError(f"data.phantom generates phantoms, but data.dataset={dataset!r} is a real "
                              "dataset; use phantom2d, phantom3d or a new folder name")
        base = get_spec("phantom3d" if dataset == "phantom3d" else "phantom2d")
        return dataclasses.replace(base, name=dataset, folder=dataset)

    def write(self, root: str, folder: str, spatial_dims: int, seed: int) -> Path | None:
        """Generate ``<root>/<folder>`` when :attr:`generate` (a fast no-op when it is there)."""
        if not self.generate:
            return None
        return generate_phantom_dataset(
            root, name=folder, spatial_dims=spatial_dims, size=self.size,
            num_unlabeled=self.num_unlabeled, num_labeled=self.num_train_labeled,
            num_val=self.num_val, num_test=self.num_test, seed=seed,
        )
