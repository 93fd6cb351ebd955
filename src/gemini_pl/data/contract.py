"""What LightningModules may read from the data module: the data contract (properties, batches).

:class:`~gemini_pl.data.GeminiDataModule` implements :class:`DataContract`. Every property is
cheap and valid right after the data module is constructed — before ``prepare_data`` and
``setup`` — so LightningCLI can link them into the model
(``parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")``):

=================  ===========================================  ====================================
name               type                                         meaning
=================  ===========================================  ====================================
``spatial_dims``   ``int | None``                               2 or 3
``label_kind``     ``"multiclass" | "multilabel" | None``       ``None``: no labels
``num_classes``    ``int | None``                               K (background included); ``None``:
                                                                no labels
``class_names``    ``tuple[str, ...]``                          K names, or ``()``
``patch_size``     ``list[int] | None``                         training crop size
``train_mode``     ``"pairs" | "pairs+labeled" | "labeled"``    what a training batch holds
``eval_mode``      ``"pairs" | "cases"``                        what a validation/test batch holds
``atlas_cases()``  ``list[dict]``                               the few-shot labeled images, whole
=================  ===========================================  ====================================

Batches (``B`` = batch size, ``S`` = spatial shape or ``patch_size``; images float32 in [0, 1]):

``train_mode="pairs"`` (default)
    ``{"image_a", "image_b"}``: (B, 1, *S), a random ordered pair ``a != b`` of unlabeled
    training images (within one group for grouped datasets, e.g. ChestX-ray8 view x sex).
``train_mode="pairs+labeled"``
    the pair keys plus ``{"image", "label"}``: one random few-shot labeled training sample per item.
``train_mode="labeled"``
    ``{"image", "label"}`` of the few-shot labeled training set (``labeled_batch_size``).
``eval_mode="pairs"`` (default; validation and test)
    ``{"image_a", "image_b", "label_a", "label_b", "name_a", "name_b", "spacing_a", "spacing_b"}``:
    fixed pairs of held-out labeled cases; ``spacing_*`` (B, ndim) float32 voxel sizes (tensor-axis
    order), so that registration HD95 is in physical units.
``eval_mode="cases"``
    ``{"image", "label", "name", "spacing", "meta"}``, one whole case per batch (batch size 1):
    ``spacing`` (1, ndim) float32, ``meta`` the geometry to write a prediction back (see
    :func:`gemini_pl.data.io.save_prediction`).

``"label"``: multiclass datasets (one label map) (B, 1, *S) int64 of class indices 0..K-1 (after
the label table); multilabel datasets (SCR) (B, K, *S) float32 0/1 channels. See
:attr:`DataContract.num_classes`, :attr:`~DataContract.label_kind`.

Anything else of the data module (names with a leading underscore above all) is private to
:mod:`gemini_pl.data`.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.utils.data import Dataset

from gemini_pl.data.specs import DatasetSpec
from gemini_pl.errors import ConfigError

__all__ = ["DataContract", "EVAL_MODES", "TRAIN_MODES"]

TRAIN_MODES = ("pairs", "pairs+labeled", "labeled")
EVAL_MODES = ("pairs", "cases")


class DataContract:
    """The public properties of a gemini-pl data module (a mixin of ``GeminiDataModule``).

    The data module sets ``spec``, ``_spatial_dims`` and ``_num_classes`` and provides
    :meth:`_num_classes_from_labels` and :meth:`_atlas_items`.
    """

    spec: DatasetSpec
    _spatial_dims: int | None
    _num_classes: int | None

    @property
    def spatial_dims(self) -> int | None:
        """``int | None``: 2 or 3 (``data.spatial_dims``, else the spec's). ``None`` only for a
        dataset whose spec does not say, until ``setup`` has read its files."""
        return self._spatial_dims

    @property
    def label_kind(self) -> Literal["multiclass", "multilabel"] | None:
        """``"multiclass"`` (one label map of class indices), ``"multilabel"`` (one 0/1 channel
        per structure) or ``None`` for a dataset without labels (the spec's)."""
        return self.spec.label_kind

    @property
    def num_classes(self) -> int | None:
        """``int | None``: K, classes incl. background (multiclass) or label channels (multilabel).

        From the label table: no file is read (phantoms and the paper's labeled datasets have
        one). For a dataset without a table: the largest value of the test labels + 1 (of the
        labeled training images when there is no test split; read once); a larger value in any
        other labeled file is a DataError naming the file, the value and K. ``None`` when the
        dataset has no labels (``label_kind`` None, or no labeled files). A missing data root or
        an unreadable label file raises :class:`~gemini_pl.errors.DataError`.
        """
        if self._num_classes is None:
            k = self.spec.num_classes
            if k is None and self.label_kind is not None:
                k = self._num_classes_from_labels()
            self._num_classes = k
        return self._num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """``tuple[str, ...]``: the spec's names of the K classes (multiclass: background first;
        multilabel: the channels); ``()`` when it has none or they do not fit the label table."""
        names, k = tuple(self.spec.class_names), self.spec.num_classes
        return names if k is None or len(names) == k else ()

    @property
    def patch_size(self) -> list[int] | None:
        """``list[int] | None``: the random training crop size (``data.patch_size``); ``None``:
        whole images."""
        return self._patch_size

    @patch_size.setter
    def patch_size(self, value: list[int] | None) -> None:
        if value is not None:
            if len(value) not in (2, 3) or min(value) < 1:
                raise ConfigError(f"data.patch_size must be 2 or 3 positive sizes, got {value}")
            if self.spatial_dims is not None and len(value) != self.spatial_dims:
                raise ConfigError(f"data.patch_size={value} has {len(value)} sizes but "
                                  f"spatial_dims={self.spatial_dims}")
        self._patch_size = [int(v) for v in value] if value else None

    @property
    def train_mode(self) -> Literal["pairs", "pairs+labeled", "labeled"]:
        """``"pairs"``, ``"pairs+labeled"`` or ``"labeled"``: what a training batch holds."""
        return self._train_mode  # type: ignore[return-value]

    @train_mode.setter
    def train_mode(self, value: str) -> None:
        self._train_mode = _one_of("train_mode", value, TRAIN_MODES)

    @property
    def eval_mode(self) -> Literal["pairs", "cases"]:
        """``"pairs"`` or ``"cases"``: what a validation/test batch holds."""
        return self._eval_mode  # type: ignore[return-value]

    @eval_mode.setter
    def eval_mode(self, value: str) -> None:
        self._eval_mode = _one_of("eval_mode", value, EVAL_MODES)

    def atlas_cases(self, max_cases: int | None = None) -> list[dict[str, Any]]:
        """The few-shot labeled training images (``num_labeled`` of the split), whole.

        Returns a list (split order, at most ``max_cases``) of ``{"image": (C, *S) float32 tensor,
        "label": tensor, "name": str}``; the label as in the batches: (1, *S) int64 class indices
        (multiclass) or (K, *S) float32 0/1 channels (multilabel). Preprocessed, but neither
        cropped nor augmented, whatever ``patch_size`` is. Reads the files on the first call
        (then kept) and changes no setting of the data module; callable before and after
        ``setup``. The tensors are shared with the cache: do not modify them in place.
        ConfigError for a dataset without labels.
        """
        if max_cases is not None and max_cases < 1:
            raise ConfigError(f"atlas_cases: max_cases must be >= 1 or None, got {max_cases}")
        items = self._atlas_items()
        n = len(items)  # type: ignore[arg-type]
        picked = (items[i] for i in range(n if max_cases is None else min(n, max_cases)))
        return [{"image": it["image"], "label": it["label"], "name": it["name"]} for it in picked]

    # ---------------------------------------------------------------- provided by the data module
    def _num_classes_from_labels(self) -> int | None:
        """K from the label files (a dataset without a label table); None without labeled files."""
        raise NotImplementedError

    def _atlas_items(self) -> Dataset:
        """The preprocessed, uncropped items of the few-shot labeled training set (kept)."""
        raise NotImplementedError


def _one_of(arg: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"data.{arg}={value!r} is not one of {', '.join(allowed)}")
    return value
