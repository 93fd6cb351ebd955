"""``gemini-pl check-data``: read every file of a dataset and report what is there and what is wrong.

Usage::

    gemini-pl check-data --config experiments/data/candi.yaml --data.root /data/gemini
    gemini-pl check-data --config experiments/data/chestxray8.yaml --data.root DIR --max_files 500

The ``data:`` section is parsed exactly as ``gemini-pl fit`` parses it (jsonargparse, the same
YAML files and ``--data.<arg>`` flags). The report lists the split source and its sha256, the
number of images per split (and per group), image shapes, spacings and intensity ranges, the label
values found versus the label table (or versus the classes inferred from the test labels when
there is no table), and every problem: unreadable files, shape or geometry mismatches between an
image and its label or mask, label values outside the table or beyond the classes, multilabel
channels that are not binary, missing labels, missing brain masks (``brain_mask`` ``file``/``label``),
empty splits, settings the data cannot serve (e.g. a patch larger than an image), and every check
of the one read path (:mod:`gemini_pl.data.io`: empty, truncated, non-gzip, unsupported files,
dangling links, NaN/Inf, non-integer labels; constant images are warnings) and of the split
(two files of one case, a case or identical bytes in two of train_labeled/val/test). Each file
is read once for the report (the chain's loader reports what it read). The exit
status is 0 when there is no problem, 1 otherwise (2 for a usage error).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from gemini_pl.data.io import DataWarning, label_values
from gemini_pl.data.specs import SPECS
from gemini_pl.data.transforms import case_transforms
from gemini_pl.errors import GeminiError, find_error

__all__ = ["CheckReport", "check_data", "main"]

_SPLITS = ("train_unlabeled", "train_labeled", "val", "test")


@dataclass
class CheckReport:
    """What :func:`check_data` found: ``lines`` to print and ``problems``."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        out = list(self.lines)
        if self.warnings:
            out.append(f"warnings ({len(self.warnings)}):")
            out += [f"  - {w}" for w in self.warnings]
        if self.problems:
            out.append(f"PROBLEMS ({len(self.problems)}):")
            out += [f"  - {p}" for p in self.problems]
        else:
            out.append("OK: no problems found")
        return "\n".join(out)


def _fmt_counter(c: Counter, limit: int = 6) -> str:
    items = c.most_common()
    text = ", ".join(f"{k} x{n}" for k, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _spacing(x: torch.Tensor) -> tuple[float, ...]:
    aff = getattr(x, "affine", None)
    n = x.dim() - 1
    if aff is None:
        return (1.0,) * n
    aff = np.asarray(aff, dtype=np.float64)
    return tuple(round(float(s), 4) for s in np.linalg.norm(aff[:n, :n], axis=0))


def check_data(dm: Any, max_files: int | None = None) -> CheckReport:
    """Check the dataset of a :class:`~gemini_pl.data.GeminiDataModule` (reads every file)."""
    import warnings

    rep = CheckReport()
    spec = dm.spec
    rep.add(f"dataset {spec.name} ({spec.title or spec.name}) at {dm.data_dir}"
            + (f", datalist {dm.datalist}" if dm.datalist else ""))
    p = spec.preprocessing
    rep.add(f"  {spec.spatial_dims or dm.spatial_dims or '?'}D, labels: {spec.label_kind or 'none'}"
            + (f" ({len(spec.label_channels)} channels: {', '.join(spec.label_channels)})"
               if spec.label_kind == "multilabel" else "")
            + f"; preprocessing: intensity {p.intensity}"
            + (f" (offset {p.offset:g}, clip {list(p.clip)})" if p.intensity == "ct" else "")
            + (f", brain mask {p.brain_mask}" if p.brain_mask != "none" else "")
            + (f", resize {list(p.resize)}" if p.resize else "")
            + (f", orientation {p.orientation}" if p.orientation else "")
            + (f", spacing {list(p.spacing)}" if p.spacing else "")
            + (f", pad/crop to {list(p.shape)}" if p.shape else ""))
    try:
        dm.layout.check()
    except GeminiError as exc:
        rep.problem(str(exc))
        return rep

    layout = dm.layout
    present = []
    for key in _SPLITS:
        try:
            if layout.has(key):
                layout.records(key)
                present.append(key)
            elif key != "val":  # a val folder is optional (the split may take val from train/labeled)
                rep.add(f"{key}: none ({dm._records.expected_folder(key)} not found)")
        except GeminiError as exc:
            rep.problem(str(exc))
    if not present and not rep.problems:
        rep.problem(f"no images found under {dm.data_dir}; expected layout in data/README.md")
    for path, why in layout.skipped:
        rep.warnings.append(f"skipped {path}: {why}")

    # split
    try:
        dm._ensure_split()
        src = f"split file {dm.split_file}" if dm.split_file else f"split built from the listing (seed {dm.seed})"
        rep.add(f"{src}: sha256 {dm.split_hash}")
        no_val = dm.no_validation()
        val = dm.split.get("val") or []  # type: ignore[union-attr]
        rep.add(f"validation: {len(val)} case(s) of the split's val list" if no_val is None else f"no validation: {no_val}")
    except GeminiError as exc:
        rep.problem(str(exc))

    table = spec.label_table
    found: Counter = Counter()
    k = _num_classes(dm)
    for key in present:
        try:
            records = layout.records(key)
        except GeminiError:
            continue
        labeled = key != "train_unlabeled" and spec.label_kind is not None
        groups = Counter(r.get("group", "") for r in records)
        line = f"{key}: {len(records)} image(s) from {layout.source.get(key, '?')}"
        if len(groups) > 1 or "" not in groups:
            line += " — groups: " + ", ".join(f"{g} {n}" for g, n in sorted(groups.items()))
        if dm.split is not None and key in dm.split:
            line += f"; {len(dm.split[key])} in the split"
            if key == "train_labeled":
                line += f", few-shot num_labeled={dm.num_labeled}"
        if p.brain_mask == "label" and labeled:
            line += "; brain masks: the label maps (brain_mask: label)"
        elif p.brain_mask != "none":  # a missing one is a problem of its image (listed below)
            masks = sum(1 for r in records if r.get("mask_path") and Path(r["mask_path"]).is_file())
            line += f"; brain masks: {masks}/{len(records)}"
        rep.add(line)
        if spec.name in SPECS:
            odd = [r["image"] for r in records if not r["image"].lower().endswith(spec.suffixes)]
            if odd:
                rep.warnings.append(
                    f"{key}: {len(odd)} file(s) are not {'/'.join(spec.suffixes)} as {spec.name} is "
                    f"distributed (e.g. {odd[0]}); they are read anyway"
                )
        todo = records if max_files is None else records[:max_files]
        if len(todo) < len(records):
            rep.add(f"  (checking the first {len(todo)} of {len(records)} files: --max_files)")
        shapes: Counter = Counter()
        spacings: Counter = Counter()
        lo, hi = float("inf"), float("-inf")
        steps = case_transforms(spec, dm.spatial_dims, labeled, k if labeled else None)
        stats = {"lo": float("inf"), "hi": float("-inf")}

        def observe(kind: str, path: Any, x: torch.Tensor, stats=stats, shapes=shapes, spacings=spacings) -> None:
            if kind == "image":  # each file is read once: the chain reports what it read
                shapes[tuple(x.shape[1:])] += 1
                spacings[_spacing(x)] += 1
                plain = x.as_tensor() if hasattr(x, "as_tensor") else x
                stats["lo"], stats["hi"] = min(stats["lo"], float(plain.min())), max(stats["hi"], float(plain.max()))
            elif spec.label_kind is not None:
                found.update(label_values(x))

        steps[0].observe = observe
        chain = Compose(steps)
        for rec in todo:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DataWarning)
                    chain(rec)
                rep.warnings += [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
            except Exception as exc:
                err = find_error(exc)
                if err is None:
                    rep.problem(f"{rec['image']}: {type(exc).__name__}: {exc}")
                else:
                    rep.problem(str(err))
        lo, hi = stats["lo"], stats["hi"]
        if shapes:
            rep.add(f"  shapes: {_fmt_counter(shapes)}")
            rep.add(f"  spacings: {_fmt_counter(spacings)}")
            rep.add(f"  stored intensity range: [{lo:g}, {hi:g}]")

    if spec.label_kind == "multiclass" and found:
        values = sorted(found)
        rep.add(f"label values found: {values}")
        if table is not None:
            outside = [v for v in values if v != 0 and v not in table]
            unused = sorted(set(table) - set(values))
            rep.add(f"label table ({len(table)} values -> classes 1..{max(table.values())}): "
                    f"{dict(sorted(table.items()))}")
            if outside:
                if spec.unmapped_labels == "background":
                    rep.add(f"  values not in the table (mapped to background 0): {outside}")
                else:  # each file is a problem of its own (listed below)
                    rep.add(f"  values NOT in the table: {outside} (the problems below name the files)")
            if unused:
                rep.warnings.append(f"table values never found in the labels: {unused}")
        elif k is not None:
            rep.add(f"no label table: {k} classes 0..{k - 1} (num_classes: the largest label of the test "
                    "cases + 1, of the labeled training images without a test split)")
            absent = sorted(set(range(k)) - set(values))
            if absent:
                rep.warnings.append(
                    f"classes never found in the labels: {_fmt_list(absent)} (num_classes {k} comes "
                    "from the largest label; set data.label_table if a value is not a class)"
                )
    elif spec.label_kind == "multilabel" and found:
        values = sorted(found)
        rep.add(f"mask values found: {values} (> 0 is foreground)")

    # what the configured data module would do with it
    if not rep.problems:
        # test: a labeled dataset; pre-training on a folder without a test split has no test stage
        testing = spec.label_kind is not None and (dm.train_mode != "pairs" or dm.layout.has("test"))
        for stage in ("fit", "test") if testing else ("fit",):
            try:
                dm.setup(stage)
            except GeminiError as exc:
                rep.problem(f"data module ({stage}): {exc}")
            except Exception as exc:  # pragma: no cover - unexpected
                err = find_error(exc)
                rep.problem(f"data module ({stage}): {err or exc}")
        if not rep.problems:
            rep.add(f"data module: train_mode={dm.train_mode}, eval_mode={dm.eval_mode}: train "
                    f"{_n(dm.train_set)} item(s), val {_n(dm.val_set)}, test {_n(dm.test_set)}"
                    + (f"; num_classes {dm.num_classes}" if dm.label_kind else ""))
    for path, why in dm.skipped:
        rep.warnings.append(f"skipped {path}: {why}")
    return rep


def _n(ds: Any) -> str:
    return "-" if ds is None else str(len(ds))


def _fmt_list(values: list[int], limit: int = 12) -> str:
    return str(values) if len(values) <= limit else f"{values[:limit]} ... ({len(values)} in all)"


def _num_classes(dm: Any) -> int | None:
    """The data module's num_classes (label values are checked against it), or None when the
    files it is read from fail (their problems are listed file by file)."""
    try:
        return dm.num_classes
    except GeminiError:
        return None




def build_parser():
    """The jsonargparse parser of ``check-data`` (the ``data:`` section of a gemini-pl config)."""
    import lightning as L
    from jsonargparse import ActionConfigFile, ArgumentParser

    from gemini_pl.cli_errors import OneLineErrors

    class Parser(OneLineErrors, ArgumentParser):
        """check-data's parser: one line per parse error (cli_errors.py)."""

    parser = Parser(
        prog="gemini-pl check-data",
        description="Check a dataset: counts, shapes, spacings, label values, problems.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="config file(s) with a data: section")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True,
                                  help="the data module (as in gemini-pl fit)")
    parser.add_argument("--max_files", type=int | None, default=None,
                        help="check at most this many files per split (default: all)")
    # other sections of a full experiment config are accepted and ignored
    for key in ("trainer", "model", "optimizer", "lr_scheduler", "ckpt_path", "seed_everything"):
        parser.add_argument(f"--{key}", type=Any, default=None, help="(ignored)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``check-data`` on ``argv``; returns the exit status (0 ok, 1 problems, 2 usage)."""
    from gemini_pl.data.datamodule import GeminiDataModule

    parser = build_parser()
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        parser.print_help()
        return 2
    cfg = parser.parse_args(args)
    try:
        init = parser.instantiate_classes(cfg)
    except Exception as exc:  # jsonargparse wraps the data module's own error
        err = find_error(exc)
        if err is None:
            raise
        print(f"gemini-pl check-data: error: {err}", file=sys.stderr)
        return 1
    dm = init.data
    if not isinstance(dm, GeminiDataModule):
        print(f"gemini-pl check-data: error: {type(dm).__name__} is not a GeminiDataModule",
              file=sys.stderr)
        return 2
    try:
        if dm.phantom is not None:  # generate the phantom first, as training would
            dm.prepare_data()
        report = check_data(dm, max_files=cfg.max_files)
    except GeminiError as exc:
        print(f"gemini-pl check-data: error: {exc}", file=sys.stderr)
        return 1
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
