"""Finding a dataset's files: the canonical layout, flat folders, X-ray groups, datalist JSON.

:class:`Layout` turns ``<root>/<folder>`` (or a Decathlon-style datalist JSON) into *records*
per split (see :mod:`gemini_pl.data.transforms`)::

    {"image": path, "name": case name, "rel": file name relative to the split's image folder,
     "label": path | [path per channel], "mask_path": brain-mask path | None, "group": str}

``mask_path`` is the path the brain mask is expected at (it may not exist: loading the record then
raises a DataError naming it); None when ``preprocessing.brain_mask`` is ``none``.

Split keys: ``train_unlabeled``, ``train_labeled``, ``test`` and ``val`` (an optional
``val/labeled`` folder, or a datalist's ``validation`` list: held-out cases for model selection).
Missing folders, empty folders and labeled images without their label raise
:class:`~gemini_pl.errors.DataError` when the split is asked for, naming the folder or file.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from gemini_pl.data.io import case_name, check_root, list_images, pair_with_labels
from gemini_pl.data.specs import DatasetSpec, get_spec
from gemini_pl.errors import DataError

__all__ = ["Layout", "listing_of"]

log = logging.getLogger(__name__)

_DATALIST_KEYS = {"train": "training", "val": "validation", "test": "test"}
#: the split keys a folder listing (or a datalist) can fill; ``val`` only where the data has one.
LISTED_KEYS = ("train_unlabeled", "train_labeled", "val", "test")


class Layout:
    """The files of one dataset, per split.

    Args:
        root: data root; the dataset is ``<root>/<spec.dir_name>``.
        spec: the dataset spec (layout, label kind, mask folders).
        datalist: optional Decathlon-style JSON (``{"training": [{"image", "label"}], "validation":
            [...], "test": [...]}``) used instead of the folders; relative paths are relative to
            ``base_dir`` (default: the JSON's folder).
        base_dir: see ``datalist``.
        skip_missing: for the metadata CSV of ``groups`` datasets: leave out (and report in
            :attr:`skipped`) listed images that are not on disk instead of raising.
    """

    def __init__(self, root: str | os.PathLike, spec: DatasetSpec, datalist: str | None = None,
                 base_dir: str | None = None, skip_missing: bool = False) -> None:
        self.root = Path(root)
        self.spec = spec
        self.datalist = datalist
        self.base_dir = base_dir
        self.skip_missing = skip_missing
        self.skipped: list[tuple[str, str]] = []
        self._cache: dict[str, list[dict]] = {}
        self.source: dict[str, str] = {}

    @property
    def data_dir(self) -> Path:
        return self.root / self.spec.dir_name

    def split_dir(self, key: str) -> Path:
        """The folder holding ``image/`` (and ``label/``) of split ``key`` (canonical layout)."""
        return self.data_dir / {"train_unlabeled": "train/unlabeled", "train_labeled": "train/labeled",
                                "test": "test/labeled", "val": "val/labeled"}[key]

    def check(self) -> None:
        if self.datalist is None:
            check_root(self.root)
            check_root(self.data_dir)

    # ------------------------------------------------------------------ public
    def has(self, key: str) -> bool:
        """Whether split ``key`` has a source (a folder, a CSV or datalist entries)."""
        if self.datalist is not None:
            try:
                return bool(self.records(key))
            except DataError:
                return False
        if key == "train_unlabeled" and self.spec.layout == "groups":
            return self._csv_path() is not None or any(
                (self.data_dir / g).is_dir() for g in self.spec.groups
            ) or (self.split_dir(key) / "image").is_dir()
        if key == "train_unlabeled" and self.spec.layout == "flat":
            return (self.split_dir(key) / "image").is_dir() or _holds_images(self.data_dir)
        return (self.split_dir(key) / "image").is_dir()

    def records(self, key: str) -> list[dict]:
        """Records of split ``key`` (sorted by ``rel``); DataError when the source is unusable."""
        if key not in self._cache:
            if self.datalist is not None:
                self._cache[key] = self._datalist_records(key)
            else:
                self.check()
                if key == "train_unlabeled":
                    self._cache[key] = self._unlabeled()
                elif key in ("train_labeled", "test", "val"):
                    self._cache[key] = self._labeled(self.split_dir(key), key)
                else:
                    raise KeyError(key)
        return self._cache[key]

    # ------------------------------------------------------------------ folders
    def _mask(self, split_dir: Path, kind: str, name: str) -> str | None:
        """The brain mask of image ``name``: the first of the spec's mask folders holding it, else
        the path expected in the first folder (loading then names it in its error); None when
        masking is off or the spec has no mask folder for ``kind``."""
        if self.spec.preprocessing.brain_mask == "none":
            return None
        candidates = [split_dir / sub / name for sub in self.spec.mask_dirs.get(kind, ())]
        found = next((p for p in candidates if p.is_file()), candidates[0] if candidates else None)
        return None if found is None else str(found)

    def _unlabeled(self) -> list[dict]:
        spec = self.spec
        if spec.layout == "groups":
            csv_path = self._csv_path()
            if csv_path is not None:
                return self._csv_records(csv_path)
            groups = [g for g in spec.groups if (self.data_dir / g).is_dir()]
            if groups:
                recs = []
                for g in groups:
                    for p in list_images(self.data_dir / g, strict=False):
                        recs.append({"image": str(p), "name": case_name(p), "rel": f"{g}/{p.name}",
                                     "group": g, "mask_path": None})
                self.source["train_unlabeled"] = f"{self.data_dir}/{{{','.join(groups)}}}"
                return recs
        folder = self.split_dir("train_unlabeled")
        if spec.layout == "flat" and not (folder / "image").is_dir():
            images = list_images(self.data_dir, strict=False)
            self.source["train_unlabeled"] = str(self.data_dir)
            return [{"image": str(p), "name": case_name(p), "rel": p.name, "group": "",
                     "mask_path": self._mask(self.data_dir, "unlabeled", p.name)} for p in images]
        images = list_images(folder / "image")
        self.source["train_unlabeled"] = str(folder / "image")
        return [{"image": str(p), "name": case_name(p), "rel": p.name, "group": "",
                 "mask_path": self._mask(folder, "unlabeled", p.name)} for p in images]

    def _labeled(self, folder: Path, key: str) -> list[dict]:
        images = list_images(folder / "image")
        self.source[key] = str(folder / "image")
        recs = []
        if self.spec.label_kind == "multilabel":
            for p in images:
                labels = []
                for ch in self.spec.label_channels:
                    lp = folder / "label" / ch / p.name
                    if not lp.is_file():
                        raise DataError(
                            f"image {p} has no {ch} label: expected {lp} (one mask per channel "
                            f"{', '.join(self.spec.label_channels)}, same file name as the image)"
                        )
                    labels.append(str(lp))
                recs.append({"image": str(p), "name": case_name(p), "rel": p.name, "label": labels,
                             "group": "", "mask_path": self._mask(folder, "labeled", p.name)})
        else:
            for p, lp in pair_with_labels(images, folder / "label"):
                recs.append({"image": str(p), "name": case_name(p), "rel": p.name, "label": str(lp),
                             "group": "", "mask_path": self._mask(folder, "labeled", p.name)})
        return recs

    # ------------------------------------------------------------------ metadata CSV
    def _csv_path(self) -> Path | None:
        if self.spec.metadata_csv:
            p = self.data_dir / self.spec.metadata_csv
            if p.is_file():
                return p
        return None

    def _csv_records(self, path: Path) -> list[dict]:
        spec = self.spec
        image_dir = self.data_dir / spec.csv_image_dir
        if not image_dir.is_dir():
            raise DataError(
                f"{path} lists the images but their folder {image_dir} does not exist; extract the "
                "image archives there (see data/README.md)"
            )
        on_disk = {e.name for e in os.scandir(image_dir) if e.is_file()}
        recs, missing, bad_group = [], [], []
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cols = [spec.csv_name_column, *spec.csv_group_columns]
                absent = [c for c in cols if c not in (reader.fieldnames or [])]
                if absent:
                    raise DataError(f"{path} has no column(s) {absent}; found {reader.fieldnames}")
                for row in reader:
                    name = row[spec.csv_name_column].strip()
                    group = "_".join(row[c].strip() for c in spec.csv_group_columns)
                    if spec.groups and group not in spec.groups:
                        bad_group.append(f"{name} ({group})")
                        continue
                    if name not in on_disk:
                        missing.append(name)
                        continue
                    recs.append({"image": str(image_dir / name), "name": case_name(name), "rel": name,
                                 "group": group, "mask_path": None})
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        for what, names in (("not on disk under " + str(image_dir), missing),
                            ("in a group other than " + "/".join(spec.groups), bad_group)):
            if not names:
                continue
            if not self.skip_missing:
                raise DataError(
                    f"{path} lists {len(names)} image(s) {what}: {', '.join(names[:5])}"
                    f"{' ...' if len(names) > 5 else ''}; add them, or set data.on_error: skip to "
                    "leave them out (they are counted and reported)"
                )
            self.skipped += [(str(image_dir / n), what) for n in names]
        if not recs:
            raise DataError(f"{path} lists no image present under {image_dir}")
        recs.sort(key=lambda r: r["rel"])
        self.source["train_unlabeled"] = str(path)
        return recs

    # ------------------------------------------------------------------ datalist JSON
    def _datalist_records(self, key: str) -> list[dict]:
        from monai.data import load_decathlon_datalist

        path = Path(self.datalist)  # type: ignore[arg-type]
        if not path.is_file():
            raise DataError(f"datalist {path} does not exist")
        base = Path(self.base_dir) if self.base_dir else path.parent
        dl_key = _DATALIST_KEYS["train" if key.startswith("train") else key]
        try:
            items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=dl_key,
                                            base_dir=str(base))
        except ValueError as exc:
            if "data list" in str(exc) or dl_key in str(exc):
                raise DataError(f"datalist {path} has no {dl_key!r} list (needed for {key})") from exc
            raise DataError(f"cannot read datalist {path}: {exc}") from exc
        except Exception as exc:
            raise DataError(f"cannot read datalist {path}: {type(exc).__name__}: {exc}") from exc
        recs = []
        for item in items:
            if not isinstance(item, dict) or "image" not in item:
                raise DataError(f"datalist {path}: every {dl_key!r} entry needs an 'image' key, got {item!r}")
            has_label = item.get("label") not in (None, "", [])
            if key == "train_unlabeled" and has_label:
                continue
            if key != "train_unlabeled" and not has_label:
                if key == "train_labeled":
                    continue
                raise DataError(f"datalist {path}: {dl_key!r} entry {item['image']} has no label")
            image = Path(item["image"])
            if not image.is_file():
                raise DataError(f"datalist {path}: image file {image} does not exist")
            rec: dict[str, Any] = {"image": str(image), "name": case_name(image),
                                   "rel": _rel(image, base), "group": str(item.get("group", "")),
                                   "mask_path": item.get("mask")}
            if has_label:
                labels = item["label"] if isinstance(item["label"], list) else [item["label"]]
                for lp in labels:
                    if not Path(lp).is_file():
                        raise DataError(f"image {image} has no label: {lp} does not exist (datalist {path})")
                if self.spec.label_kind == "multilabel":
                    if len(labels) != len(self.spec.label_channels):
                        raise DataError(
                            f"datalist {path}: {image} has {len(labels)} label files but "
                            f"{self.spec.name} needs {len(self.spec.label_channels)} "
                            f"({', '.join(self.spec.label_channels)})"
                        )
                    rec["label"] = [str(lp) for lp in labels]
                else:
                    rec["label"] = str(labels[0])
            recs.append(rec)
        if not recs:
            raise DataError(f"datalist {path} holds no {key.replace('_', ' ')} entries (in {dl_key!r})")
        self.source[key] = f"{path}:{dl_key}"
        return sorted(recs, key=lambda r: r["rel"])


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds an image file (a flat dataset folder)."""
    try:
        return bool(list_images(folder, strict=False))
    except DataError:
        return False


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def listing_of(root: str | os.PathLike, dataset: str, folder: str | None = None,
               datalist: str | None = None) -> dict[str, list[str]]:
    """``{split key: [file names]}`` of every split the dataset has (for :func:`make_split`)."""
    spec = get_spec(dataset).with_overrides(folder=folder)
    layout = Layout(root, spec, datalist=datalist)
    layout.check()
    out = {}
    for key in LISTED_KEYS:
        if layout.has(key):
            out[key] = [r["rel"] for r in layout.records(key)]
    if not out:
        raise DataError(f"no split folders under {layout.data_dir}; see data/README.md")
    return out

