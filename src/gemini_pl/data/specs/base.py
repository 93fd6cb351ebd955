"""The dataset spec: what the data module needs to know about one dataset.

A :class:`DatasetSpec` says where the files are (folder and layout), how labels are stored and
mapped to class indices (the *label table*), and how intensities are preprocessed. There is one
spec per dataset, each in its own module of :mod:`gemini_pl.data.specs` (``candi.py`` holds the
CANDI label table, ``whs_ct.py`` the MM-WHS one, ...). Every field can be overridden from YAML
through the data module (``data.init_args.label_table``, ``data.init_args.preprocessing``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from gemini_pl.errors import ConfigError

__all__ = ["DatasetSpec", "Preprocessing", "INTENSITY_MODES", "BRAIN_MASK_MODES"]

#: ``ct``: add ``offset``, clip to ``clip`` and scale that range to [0, 1];
#: ``minmax``: negatives -> 0, then min-max to [0, 1] per image (MR, phantoms);
#: ``xray``: 8-bit grayscale divided by 255 (values above 255 are an error);
#: ``none``: intensities as stored.
INTENSITY_MODES = ("ct", "minmax", "xray", "none")

#: One policy for every image of every split (unlabeled, labeled training, validation, test):
#: ``none``: no brain masking; ``file``: every image is multiplied by its brain-mask file (label > 0;
#: see ``DatasetSpec.mask_dirs``), a missing one is a DataError naming the image and the path looked
#: for; ``label``: labeled cases are masked with their own label map > 0 (the published test
#: loader's behaviour: it leaks labels into the input; parity only), unlabeled ones with their mask
#: file (required). There is no "where a mask exists" mode: masking some cases and not others is a
#: train/test domain gap.
BRAIN_MASK_MODES = ("none", "file", "label")


@dataclass(frozen=True)
class Preprocessing:
    """Intensity and geometry preprocessing of one dataset (applied in this order)."""

    #: one of :data:`INTENSITY_MODES`.
    intensity: str = "minmax"
    #: added to the stored values before clipping (``ct``); e.g. 1024 for files stored in HU.
    offset: float = 0.0
    #: ``[low, high]`` clip range of ``ct`` (after ``offset``); mapped to [0, 1].
    clip: tuple[float, float] | None = None
    #: one of :data:`BRAIN_MASK_MODES`.
    brain_mask: str = "none"
    #: reorient volumes to this axis code (e.g. ``RAS``); ``None`` keeps the file's voxel order.
    orientation: str | None = None
    #: resample to this voxel spacing (mm); ``None`` keeps the file's spacing.
    spacing: tuple[float, ...] | None = None
    #: resize every image to this shape (labels nearest); ``None`` keeps the shape.
    resize: tuple[int, ...] | None = None
    #: pad (zeros: background) or crop every image, centred, to this shape after intensity
    #: preprocessing (the voxels keep their size; the affine follows); ``None`` keeps the shape.
    #: With ``spacing`` this brings images of any shape and spacing to one grid.
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(
                f"data.preprocessing.intensity={self.intensity!r} is not one of "
                f"{', '.join(INTENSITY_MODES)}"
            )
        if self.brain_mask == "auto":
            raise ConfigError(
                "data.preprocessing.brain_mask='auto' is no longer supported: it masked only the "
                "images that had a mask file (a train/test domain gap); use 'file' (every image "
                "masked, a missing mask is an error) or 'none' (no masking)"
            )
        if self.brain_mask not in BRAIN_MASK_MODES:
            raise ConfigError(
                f"data.preprocessing.brain_mask={self.brain_mask!r} is not one of "
                f"{', '.join(BRAIN_MASK_MODES)}"
            )
        if self.intensity == "ct":
            if self.clip is None or len(self.clip) != 2 or not self.clip[0] < self.clip[1]:
                raise ConfigError(
                    f"data.preprocessing.clip must be [low, high] with low < high for "
                    f"intensity 'ct', got {self.clip}"
                )
        for name in ("spacing", "resize", "shape"):
            value = getattr(self, name)
            if value is not None and (len(value) not in (2, 3) or min(value) <= 0):
                raise ConfigError(f"data.preprocessing.{name} must be 2 or 3 positive numbers, got {value}")

    def replace(self, overrides: Mapping[str, Any] | None) -> "Preprocessing":
        """A copy with the fields in ``overrides`` changed (unknown keys are a ConfigError)."""
        if not overrides:
            return self
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"data.preprocessing has unknown keys {unknown}; known: {sorted(names)}"
            )
        values = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(overrides).items()
        }
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything dataset-specific: layout, labels and preprocessing.

    Layouts (``<data>`` is ``<root>/<folder>``):

    * ``canonical``: ``<data>/train/unlabeled/image``, ``<data>/train/labeled/{image,label}``,
      ``<data>/test/labeled/{image,label}`` (label files have the image's file name);
    * ``flat``: every image directly in ``<data>`` is an unlabeled training image (PPMI); a
      canonical tree under ``<data>`` is used instead when there is one;
    * ``groups``: unlabeled training images in group folders ``<data>/<group>/<name>``, pairs are
      drawn within one group (ChestX-ray8: ``AP_F``, ``AP_M``, ``PA_F``, ``PA_M``), or listed in
      a metadata CSV (``metadata_csv``) that gives each image's group.
    """

    #: registry name (``data.dataset``).
    name: str
    #: human-readable title.
    title: str = ""
    #: folder under ``data.root`` (defaults to ``name``).
    folder: str = ""
    #: 2 or 3; ``None``: taken from the files.
    spatial_dims: int | None = None
    #: ``canonical``, ``flat`` or ``groups``.
    layout: Literal["canonical", "flat", "groups"] = "canonical"
    #: image file endings the dataset is distributed with (documentation and ``check-data``).
    suffixes: tuple[str, ...] = (".nii.gz", ".nii")
    #: ``multiclass`` (one label map), ``multilabel`` (one binary mask file per channel) or
    #: ``None`` (no labels are used).
    label_kind: Literal["multiclass", "multilabel"] | None = "multiclass"
    #: multiclass: value in the file -> class index (1..K-1; 0 is background and always allowed).
    #: ``None``: values are class indices already (K = largest value + 1).
    label_table: Mapping[int, int] | None = None
    #: what to do with label values that are not in the table: ``error`` or ``background`` (-> 0).
    unmapped_labels: Literal["error", "background"] = "error"
    #: class names, index 0 (background) first (documentation and metrics).
    class_names: tuple[str, ...] = ()
    #: multilabel: one sub-folder of ``label/`` per channel, in channel order.
    label_channels: tuple[str, ...] = ()
    #: sub-folders (next to ``image/``) holding the brain mask of the same file name, per split
    #: kind (``unlabeled``, ``labeled``), in the order they are looked in; the first is the one an
    #: error names when no mask is found (``preprocessing.brain_mask`` ``file``/``label``).
    mask_dirs: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"unlabeled": ("mask",), "labeled": ("mask",)}
    )
    #: group folder names (``groups`` layout).
    groups: tuple[str, ...] = ()
    #: metadata CSV file name inside ``<data>`` (``groups`` layout), e.g. ``Data_Entry_2017.csv``.
    metadata_csv: str | None = None
    #: CSV columns: file name, and the columns whose values form the group (joined by ``_``).
    csv_name_column: str = ""
    csv_group_columns: tuple[str, ...] = ()
    #: folder (relative to ``<data>``) of the images listed in the CSV.
    csv_image_dir: str = "images"
    #: default preprocessing.
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    #: default data-module settings of this dataset (cache mode, patch size, ...): documentation.
    notes: str = ""

    @property
    def dir_name(self) -> str:
        return self.folder or self.name

    @property
    def num_classes(self) -> int | None:
        """K: classes incl. background (multiclass) or channels (multilabel); None if unknown."""
        if self.label_kind == "multilabel":
            return len(self.label_channels)
        if self.label_kind == "multiclass" and self.label_table is not None:
            return max([0, *self.label_table.values()]) + 1
        return None

    def with_overrides(
        self,
        *,
        label_table: Mapping[Any, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        folder: str | None = None,
        spatial_dims: int | None = None,
    ) -> "DatasetSpec":
        """A copy with YAML overrides applied (and checked)."""
        spec = self
        if label_table is not None:
            spec = dataclasses.replace(spec, label_table=_parse_table(label_table))
        if preprocessing:
            spec = dataclasses.replace(spec, preprocessing=spec.preprocessing.replace(preprocessing))
        if folder:
            spec = dataclasses.replace(spec, folder=folder)
        if spatial_dims is not None:
            spec = dataclasses.replace(spec, spatial_dims=spatial_dims)
        return spec

    def __post_init__(self) -> None:
        if self.label_table is not None:
            object.__setattr__(self, "label_table", _parse_table(self.label_table))
        if self.label_kind == "multilabel" and not self.label_channels:
            raise ConfigError(f"dataset spec {self.name}: multilabel needs label_channels")


def _parse_table(table: Mapping[Any, Any]) -> dict[int, int]:
    """``{205: 1, "420": 2}`` -> ``{205: 1, 420: 2}``; classes must be 0..K-1 without gaps."""
    try:
        parsed = {int(k): int(v) for k, v in dict(table).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.label_table must map integers to integers, got {table!r}") from exc
    classes = sorted(set(parsed.values()) - {0})
    if classes and classes != list(range(1, classes[-1] + 1)):
        raise ConfigError(
            f"data.label_table maps to classes {classes}; they must be 1..K-1 without gaps"
        )
    if any(v < 0 for v in parsed.values()):
        raise ConfigError(f"data.label_table has negative class indices: {table!r}")
    return parsed


def generated_specs(prefix: str, title: str, label_table: Mapping[int, int],
                    class_names: Sequence[str]) -> tuple[DatasetSpec, DatasetSpec]:
    """The 2D and 3D specs (``<prefix>2d``, ``<prefix>3d``) of a generated dataset: class-index
    labels, min-max intensities."""
    return tuple(  # type: ignore[return-value]
        DatasetSpec(name=f"{prefix}{d}d", title=f"{d}D {title}", spatial_dims=d, label_table=dict(label_table),
                    class_names=tuple(class_names), preprocessing=Preprocessing(intensity="minmax"))
        for d in (2, 3)
    )
