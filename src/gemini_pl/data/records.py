"""Which files a data module uses: the dataset's listing, its split, and the records of a role.

A *record* is the dict :class:`~gemini_pl.data.layout.Layout` lists for one case (``"image"``,
``"label"`` for labeled cases, ``"rel"``: the file name the split refers to, ``"name"``, and
``"group"`` / ``"mask_path"`` where the dataset has them). A *role* is a key of the split:
``train_unlabeled`` (training pairs), ``train_labeled`` (the few-shot set), ``test`` and ``val``
(validation: held-out cases that are never test cases; no validation when the split has none).

:class:`SplitRecords` fixes the split once — read from ``split_file``, or built from the folder
listing and ``seed`` (see :mod:`gemini_pl.data.splits`) — and then hands out the records of each
role in the split's order. It reads no image: turning records into tensors is
:mod:`gemini_pl.data.cache`'s job.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from monai.transforms import Compose

from gemini_pl.data.io import case_name, sha256_file
from gemini_pl.data.layout import LISTED_KEYS, Layout
from gemini_pl.data.specs import DatasetSpec
from gemini_pl.data.splits import MIN_TRAIN, few_shot, load_split, make_split, split_bytes, split_sha256, write_split
from gemini_pl.data.transforms import case_transforms
from gemini_pl.errors import ConfigError, DataError, find_error

__all__ = ["SplitRecords", "check_val_monitors"]

log = logging.getLogger(__name__)

#: where the files of a split's ``val`` names are looked for: a val folder (or datalist list), the
#: labeled training cases (a split made from the listing), the test folder (a split file that
#: holds some of it out of ``test``).
VAL_SOURCES = ("val", "train_labeled", "test")


class SplitRecords:
    """The records of one dataset per role, under one fixed split.

    Args:
        root: data root; the dataset is ``<root>/<spec.dir_name>``.
        spec: the dataset spec (layout, label kind, folder).
        datalist: a Decathlon-style datalist JSON read instead of the folders (see ``Layout``).
        split_file: a split JSON; created from the listing with ``seed`` when missing. ``None``:
            the same split built in memory.
        seed: seed of a split built from the listing.
        on_error: ``skip`` leaves out (and lists in :attr:`skipped`) files that fail to load.
    """

    def __init__(self, root: str, spec: DatasetSpec, *, datalist: str | None = None,
                 split_file: str | None = None, seed: int = 0,
                 on_error: str = "raise", num_labeled: int | None = None) -> None:
        self.root = root
        self.spec = spec
        self.datalist = datalist
        self.split_file = split_file
        self.seed = seed
        self.on_error = on_error
        #: the few-shot budget: a split built from the listing leaves this many labeled training
        #: cases for training (validation takes only what is left beyond it, see make_split)
        self.num_labeled = num_labeled
        #: the split (see :mod:`gemini_pl.data.splits`) once :meth:`ensure_split` ran.
        self.split: dict[str, Any] | None = None
        #: sha256 of the split file (or of what it would be for an in-memory split).
        self.split_hash: str | None = None
        #: ``(file, reason)`` of everything left out in ``on_error="skip"`` mode.
        self.skipped: list[tuple[str, str]] = []
        self._layout: Layout | None = None

    # ---------------------------------------------------------------- where the files are
    @property
    def layout(self) -> Layout:
        """The dataset's files (created on first use; lists nothing until asked)."""
        if self._layout is None:
            self._layout = Layout(self.root, self.spec, datalist=self.datalist,
                                  skip_missing=self.on_error == "skip")
        return self._layout

    @property
    def data_dir(self) -> Path:
        """``<root>/<folder>``."""
        return Path(self.root) / self.spec.dir_name

    def expected_folder(self, key: str) -> str:
        """Where the files of role ``key`` are looked for (for error messages)."""
        if key == "train_unlabeled" and self.spec.layout == "groups":
            return f"{self.data_dir}/{{{','.join(self.spec.groups)}}} (or {self.spec.metadata_csv})"
        return str(self.layout.split_dir(key) / "image")

    # ---------------------------------------------------------------- the split
    def listing(self) -> dict[str, list[str]]:
        """``{role: [file name, ...]}`` of the roles the dataset has files for."""
        layout = self.layout
        return {k: [r["rel"] for r in layout.records(k)] for k in LISTED_KEYS if layout.has(k)}

    def no_val_reason(self, labeled: bool = True, pairs: bool = False) -> str | None:
        """Why there is no validation (one line naming the fix), or None when there is: the split's
        ``val`` cases (of a labeled dataset: ``labeled``; at least two for validation ``pairs``).
        Fixes the split.

        Validation is model selection, so it never falls back to the test cases: without a ``val``
        list the data module logs this reason once and validates nothing, ``validate`` is a
        ConfigError, and so is a ``ModelCheckpoint`` monitoring a ``val/…`` key
        (:func:`check_val_monitors`)."""
        if not labeled:
            return f"dataset {self.spec.name} has no labels"
        val = self.ensure_split().get("val") or []
        if len(val) >= (2 if pairs else 1):
            return None
        where = f"split file {self.split_file}" if self.split_file else f"the split built from {self.data_dir}"
        what = "has no val list" if not val else "has 1 val case (validation pairs need 2)"
        return (f"{where} {what}, and the test cases are never used for validation; add one: "
                "python -m gemini_pl.data.splits --num-val 5 (a new split file; or a 'val' list of "
                "labeled cases outside 'test', or a val/labeled folder: data/README.md)")

    def ensure_split(self) -> dict[str, Any]:
        """Fix the split (once): read ``split_file`` (written first when missing) or build it."""
        if self.split is None:
            if self.split_file is not None:
                path = Path(self.split_file)
                if not path.exists():
                    split = make_split(self.spec.name, self.listing(), seed=self.seed, min_train=self._min_train())
                    write_split(split, path)
                    log.warning("created split file %s from the listing of %s (seed %d): keep it "
                                "with your experiments so that every run uses the same cases",
                                path, self.data_dir, self.seed)
                self.split, self.split_hash = load_split(path, dataset=self.spec.name)
            else:
                self.split = make_split(self.spec.name, self.listing(), seed=self.seed, min_train=self._min_train())
                self.split_hash = split_sha256(split_bytes(self.split))
            self.check_identical_files()
        return self.split

    def check_identical_files(self) -> None:
        """DataError naming both files when a file of ``test`` or ``val`` has the same bytes as a
        file of another of ``train_labeled``, ``val``, ``test`` (one case under two names). Only
        files of equal size, and of them those equal in two probed chunks, are hashed whole."""
        import hashlib

        split = self.split or {}
        by_size: dict[int, list[tuple[str, str]]] = {}
        for key in ("train_labeled", "val", "test"):
            if not split.get(key):
                continue
            try:
                records = self.select(key)
            except DataError:
                continue  # reported when the role is used
            for r in records:
                try:
                    by_size.setdefault(os.path.getsize(r["image"]), []).append((key, r["image"]))
                except OSError:
                    continue  # named when it is read

        def digest(path: str, probe: bool) -> str:
            """sha256 of the whole file, or (``probe``) of 64 KiB from its middle and its end: files
            of one size (uncompressed volumes of one shape) differ there unless identical."""
            if not probe:
                return sha256_file(path)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                for at in (size // 2, max(0, size - (1 << 16))):
                    f.seek(at)
                    h.update(f.read(1 << 16))
            return h.hexdigest()

        groups = []
        for group in by_size.values():
            if len({k for k, _ in group}) < 2:
                continue
            probed: dict[str, list[tuple[str, str]]] = {}
            for key, path in group:
                probed.setdefault(digest(path, probe=True), []).append((key, path))
            groups += [g for g in probed.values() if len({k for k, _ in g}) > 1]
        for group in groups:
            seen: dict[str, tuple[str, str]] = {}
            for key, path in group:
                full = digest(path, probe=False)
                other = seen.get(full)
                if other is not None and other[0] != key:
                    raise DataError(f"{other[1]} ({other[0]}) and {path} ({key}) are identical files: one case in two "
                                    "splits; remove one of them")
                seen.setdefault(full, (key, path))

    def _min_train(self) -> int:
        """Labeled training cases a split built from the listing keeps for training: the paper's
        five, or the few-shot budget when larger (SCR25: all 25 train; validation does not eat the
        budget, it takes only cases beyond it)."""
        return max(MIN_TRAIN, self.num_labeled or 0)

    def select(self, key: str, names: list[str] | None = None) -> list[dict]:
        """Records of split ``key`` restricted to (and ordered as) the split's file names (``val``:
        looked for in :data:`VAL_SOURCES`)."""
        split = self.ensure_split()
        if names is None:
            if key not in split:
                where = self.split_file or "the folder listing"
                raise DataError(
                    f"{where} has no {key.replace('_', ' ')} split: {self.expected_folder(key)} is "
                    "missing or empty"
                )
            names = list(split[key])
        if not names:
            raise DataError(f"split {key} of {self.spec.name} is empty ({self.split_file or self.data_dir})")
        layout = self.layout
        sources = [k for k in VAL_SOURCES if layout.has(k)] if key == "val" else [key]
        by_rel: dict[str, dict] = {}
        for source in reversed(sources):  # the first source wins
            by_rel.update({r["rel"]: r for r in layout.records(source)})
        missing = [n for n in names if n not in by_rel]
        if missing:
            found_in = ", ".join(layout.source.get(k, k) for k in sources) or str(self.data_dir)
            raise DataError(
                f"split {key} ({self.split_file or 'listing'}) names {len(missing)} file(s) not found in "
                f"{found_in}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        unused = len(by_rel) - len(set(names))
        if unused > 0 and key not in ("train_labeled", "val"):
            log.info("%s: %d file(s) of %s are not in the split and are not used", self.spec.name,
                     unused, key)
        return [by_rel[n] for n in names]

    def few_shot(self, num_labeled: int | None) -> list[dict]:
        """Records of the few-shot labeled training set of budget ``num_labeled`` (None: all)."""
        split = self.ensure_split()
        labeled = len(split.get("train_labeled") or [])
        held = [n for n in split.get("val") or () if n in set(self.listing().get("train_labeled", []))]
        if num_labeled is not None and num_labeled > labeled and held and str(num_labeled) not in split.get("few_shot", {}):
            where = f"split file {self.split_file}" if self.split_file else f"the split of {self.data_dir}"
            raise ConfigError(
                f"data.num_labeled={num_labeled} but {where} holds {len(held)} of the {labeled + len(held)} labeled "
                f"training images out for validation (val), leaving {labeled}: rebuild the split without them "
                f"(python -m gemini_pl.data.splits --num-val 0 --out {self.split_file or 'FILE'}), add a "
                "val/labeled folder, or lower num_labeled"
            )
        names = few_shot(split, num_labeled, where=str(self.split_file or self.data_dir))
        if not names:
            raise DataError(f"{self.expected_folder('train_labeled')}: no labeled training images")
        return self.select("train_labeled", names)

    def pair_groups(self, records: list[dict]) -> list[list[int]]:
        """Indices of ``records`` per group (``"group"`` key; one group without): training pairs
        are drawn within a group. DataError when no group holds two images."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(r.get("group", ""), []).append(i)
        small = {g: len(ix) for g, ix in groups.items() if len(ix) < 2}
        if small and len(groups) == len(small):
            raise DataError(
                f"{self.expected_folder('train_unlabeled')} holds {len(records)} image(s)"
                f"{' per group' if len(groups) > 1 else ''}; training pairs need at least 2"
            )
        if small:
            log.warning("%s: group(s) %s hold one image and give no pair", self.spec.name, small)
        return list(groups.values())

    # ---------------------------------------------------------------- unreadable files
    def usable(self, records: list[dict], labeled: bool, role: str,
               spatial_dims: int | None, num_classes: int | None = None) -> list[dict]:
        """``on_error="skip"``: drop (and list in :attr:`skipped`) the records whose files fail
        to load or check (each file is read once more for this; label values against
        ``num_classes``, see :class:`~gemini_pl.data.transforms.LoadCased`); ``raise``: all records."""
        if self.on_error != "skip":
            return records
        good = []
        transform = Compose(case_transforms(self.spec, spatial_dims, labeled, num_classes))
        for rec in records:
            try:
                transform(rec)
            except Exception as exc:
                err = find_error(exc)
                if err is None:
                    raise
                if (rec["image"], str(err)) not in self.skipped:
                    self.skipped.append((rec["image"], str(err)))
                    log.warning("skipped %s: %s", rec["image"], err)
                continue
            good.append(rec)
        if not good:
            raise DataError(f"every {role} file of {self.spec.name} was skipped (on_error=skip)")
        return good

    # ---------------------------------------------------------------- evaluation pairs
    def pair_indices(self, pairs: Sequence[Sequence[str]] | str, records: list[dict]) -> list[tuple[int, int]]:
        """``[[name_a, name_b], ...]`` (or a JSON file of such a list) as indices into ``records``;
        names may be file names or case names (without the suffix)."""
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


def check_val_monitors(trainer: Any, reason: str) -> None:
    """Refuse, before training, a ``ModelCheckpoint`` of ``trainer`` (None: nothing to check) that
    monitors a ``val/…`` key when there is no validation (``reason``): its metric would never be
    logged, and a "best" checkpoint would not be one."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    keys = sorted({c.monitor for c in getattr(trainer, "callbacks", None) or []
                   if isinstance(c, ModelCheckpoint) and str(c.monitor or "").startswith("val/")})
    if keys:
        raise ConfigError(
            f"a ModelCheckpoint monitors {', '.join(keys)}, but there is no validation split: {reason}; "
            "or drop that checkpoint callback (experiments/callbacks/best_seg.yaml, best_reg.yaml)"
        )
