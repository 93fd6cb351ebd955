"""The one conversion mechanism: plan -> write -> provenance, idempotent and safe.

A dataset module (``whs_ct.py``, ``scr.py``, ...) knows only its provider's format: it turns the
official download into a :class:`Plan` — a list of :class:`Item` (the output file(s) of one case,
the source files they are made from, and a ``build`` function that writes them) plus the problems
it found in the source, one line per file (an image without its label, a file that does not match
the provider's naming, ...). Everything else happens here:

* **duplicates**: two items that would write one output (a second copy of one case) are both left
  out and reported, naming every source file;
* **test split** (``--num-test N``): N labeled training cases are moved to ``test/labeled``, drawn
  (seeded) by *patient group*, so that no patient straddles train and test;
* **idempotence**: ``<data>/convert.json`` records, per output file, its sha256, size and mtime, its
  source files and their sha256. A rerun skips an item whose sources and outputs are unchanged
  (size and mtime; ``--verify`` re-hashes them), rebuilds one whose sources changed;
* **safety**: an output is built into a temporary file first; an existing file with other bytes
  that the record does not vouch for (written by hand, edited since, or from another source) is
  never replaced without ``--force`` — the case is reported and left as it is. Files are replaced
  atomically (``os.replace``), so an interrupted run leaves no half-written image;
* **provenance**: ``convert.json`` also records the source folder, the settings, what was done to
  each file (``steps``), the patient group of each case and the problems of the last run.

Archives (ChestX-ray8's ``images_0NN.tar.gz``) are read as streams, once per run: an item whose
source is an archive member is built when the member passes by.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gemini_pl.data.io import sha256_file
from gemini_pl.errors import DataError

__all__ = ["Context", "ConvertResult", "Item", "Plan", "Source", "run_plan", "sha256_file"]

RECORD_NAME = "convert.json"
RECORD_FORMAT = "gemini-pl-convert"


@dataclass(frozen=True)
class Source:
    """One input file (``member``: a member of the tar archive ``path``)."""

    path: Path
    member: str | None = None


@dataclass
class Item:
    """The output file(s) of one case.

    ``outputs``: paths relative to the dataset folder (``train/labeled/image/x.nii.gz``, ...).
    ``build(paths, data)`` writes output ``i`` to ``paths[i]`` (temporary files next to the final
    ones) and returns a short description of what it did; ``data`` is the member's bytes when the
    source is an archive member, else None. ``group``: the patient the case belongs to (cases of
    one group never straddle splits); ``case``: the case name.
    """

    outputs: tuple[str, ...]
    sources: tuple[Source, ...]
    build: Callable[[list[Path], bytes | None], str]
    case: str = ""
    group: str = ""
    #: indices of outputs that ``build`` writes but that are not kept (e.g. the label of a case used
    #: as an unlabeled image)
    drop: frozenset[int] = frozenset()

    @property
    def kept(self) -> list[str]:
        return [o for i, o in enumerate(self.outputs) if i not in self.drop]


@dataclass
class Plan:
    """What a dataset module found in the source: items, problems (one line per file), notes."""

    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def one_pair(self, case: str, images: list[Path], labels: list[Path], words: tuple[str, str],
                 expected_image: Path | None, expected_label: Path | None) -> tuple[Path, Path] | None:
        """The one image and one label file of ``case``, or ``None`` with the problem recorded.

        ``words``: what the two are called in the messages, e.g. ``("subject", "segmentation")``;
        ``expected_*``: the counterpart path named when only one of the two was found.
        """
        what, label = words
        if len(images) > 1 or len(labels) > 1:
            self.problems.append(f"{what} {case}: {len(images)} image and {len(labels)} {label} files "
                                 f"({', '.join(map(str, images + labels))}); none converted — keep one of each")
        elif not images:
            self.problems.append(f"{labels[0]}: {label} without its image (expected {expected_image})")
        elif not labels:
            self.problems.append(f"{images[0]}: no {label} (expected {expected_label})")
        else:
            return images[0], labels[0]
        return None


@dataclass
class ConvertResult:
    """What :func:`run_plan` did: counts per action, the report lines and the problems."""

    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    record_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.conflicts

    def render(self) -> str:
        out = list(self.lines)
        out.append(f"written {len(self.written)}, replaced {len(self.replaced)} (source changed"
                   f" or --force), unchanged {len(self.unchanged)}, refused {len(self.conflicts)} file(s)")
        if self.conflicts:
            out.append(f"NOT OVERWRITTEN ({len(self.conflicts)}; rerun with --force to replace them):")
            out += [f"  - {c}" for c in self.conflicts]
        if self.problems:
            out.append(f"SOURCE PROBLEMS ({len(self.problems)}):")
            out += [f"  - {p}" for p in self.problems]
        return "\n".join(out)


class Context:
    """What a dataset module may ask of the mechanism: the source root, the options, and archive
    listings (cached in ``convert.json`` by the archive's size and mtime)."""

    def __init__(self, src: Path, options: dict[str, Any], record: dict[str, Any] | None = None) -> None:
        self.src = src
        self.options = options
        self._record = record or {}
        self.archives: dict[str, dict[str, Any]] = {}

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.src))
        except ValueError:
            return str(path)

    def archive_members(self, path: Path) -> list[str]:
        """The file members of tar archive ``path`` (read once; cached while it is unchanged)."""
        key = self.rel(path)
        st = path.stat()
        old = self._record.get("archives", {}).get(key)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            members = list(old["members"])
        else:
            try:
                with tarfile.open(path, "r|*") as tar:
                    members = [m.name for m in tar if m.isfile()]
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(f"cannot read the archive {path}: {exc}") from None
        self.archives[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "members": members}
        return members


# ---------------------------------------------------------------------------------------------- record
def load_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the conversion record {path}: {exc}; move it away to start afresh") from None
    if rec.get("format") != RECORD_FORMAT:
        raise DataError(f"{path} is not a gemini-pl conversion record (format {rec.get('format')!r})")
    return rec


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------------------------------------- steps
def find_duplicates(items: list[Item], ctx: Context) -> tuple[list[Item], list[str]]:
    """Items whose outputs collide (a second copy of one case) are left out, each reported."""
    owners: dict[str, list[Item]] = {}
    for it in items:
        for out in it.kept:
            owners.setdefault(out, []).append(it)
    bad_ids: set[int] = set()
    problems = []
    for out, its in sorted(owners.items()):
        if len(its) > 1:
            bad_ids.update(id(i) for i in its)
            srcs = sorted({_source_key(s, ctx) for i in its for s in i.sources[:1]})
            problems.append(f"{out}: {len(its)} copies of case {its[0].case or out} in the source "
                            f"({', '.join(srcs)}); none converted — keep one")
    return [i for i in items if id(i) not in bad_ids], problems


def assign_test(items: list[Item], num_test: int, seed: int) -> tuple[list[Item], list[str]]:
    """Move ``num_test`` labeled training cases to ``test/labeled``, whole patient groups at a time."""
    if num_test <= 0:
        return items, []
    labeled = [i for i in items if i.outputs[0].startswith("train/labeled/")]
    groups: dict[str, list[Item]] = {}
    for it in labeled:
        groups.setdefault(it.group or it.case or it.outputs[0], []).append(it)
    if num_test >= len(labeled):
        raise DataError(f"--num-test {num_test}: only {len(labeled)} labeled cases were found; "
                        "keep some for training")
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    chosen, n = [], 0
    for g in order:
        if n >= num_test:
            break
        chosen.append(g)
        n += len(groups[g])
    moved = {id(i) for g in chosen for i in groups[g]}
    for it in items:
        if id(it) in moved:
            it.outputs = tuple("test/labeled/" + o[len("train/labeled/"):] for o in it.outputs)
    return items, [f"test split: {n} labeled case(s) of {len(chosen)} patient group(s) moved to test/labeled "
                   f"(seed {seed})"]


def _relocate(it: Item, mapping: Callable[[str], str | None]) -> None:
    outs, drop = [], set(it.drop)
    for i, o in enumerate(it.outputs):
        new = mapping(o) if i not in drop else None
        if new is None:
            drop.add(i)
            outs.append(o)
        else:
            outs.append(new)
    it.outputs, it.drop = tuple(outs), frozenset(drop)


def assign_unlabeled(items: list[Item], num_unlabeled: int, seed: int, label_as_mask: bool) -> list[str]:
    """Use ``num_unlabeled`` labeled training cases (whole patient groups, never a test patient's)
    as unlabeled training images: image -> ``train/unlabeled/image``, brain mask -> ``.../mask``;
    the label is left out, or (``label_as_mask``, CANDI: the authors' copy) kept as the brain mask
    ``train/unlabeled/label/<name>`` (label > 0 is brain)."""
    if num_unlabeled <= 0:
        return []
    groups: dict[str, list[Item]] = {}
    test_groups = {it.group or it.case for it in items if it.outputs[0].startswith("test/")}
    for it in items:
        g = it.group or it.case or it.outputs[0]
        if it.outputs[0].startswith("train/labeled/") and g not in test_groups:
            groups.setdefault(g, []).append(it)
    total = sum(len(v) for v in groups.values())
    if num_unlabeled >= total:
        raise DataError(f"--num-unlabeled {num_unlabeled}: only {total} labeled training cases were found; "
                        "keep some labeled")
    order = sorted(groups)
    random.Random(seed + 1).shuffle(order)
    n = 0

    def mapping(o: str) -> str | None:
        for kind in ("image", "mask"):
            if o.startswith(f"train/labeled/{kind}/"):
                return f"train/unlabeled/{kind}/" + o[len(f"train/labeled/{kind}/"):]
        rest = o[len("train/labeled/label/"):]
        if label_as_mask and o.startswith("train/labeled/label/") and "/" not in rest:
            return "train/unlabeled/label/" + rest
        return None

    for g in order:
        if n >= num_unlabeled:
            break
        for it in groups[g]:
            _relocate(it, mapping)
        n += len(groups[g])
    how = "their labels as brain masks in train/unlabeled/label" if label_as_mask else "labels left out"
    return [f"unlabeled: {n} labeled training case(s) used as unlabeled images ({how}; seed {seed})"]


def images_only(items: list[Item], prefix: str) -> None:
    """Every case's image as an unlabeled training image ``train/unlabeled/image/<prefix><name>``
    (``--into``: extra images for another dataset, e.g. ASOCA and CAT08 for WHS-CT); labels left out."""
    for it in items:
        name = Path(it.outputs[0]).name
        name = name if name.startswith(prefix) else prefix + name
        it.outputs = (f"train/unlabeled/image/{name}",) + it.outputs[1:]
        it.drop = frozenset(range(1, len(it.outputs)))


def _source_key(s: Source, ctx: Context) -> str:
    return ctx.rel(s.path) + (f":{s.member}" if s.member else "")


def run_plan(plan: Plan, ctx: Context, data_dir: Path, *, dataset: str, converter: str, force: bool = False,
             verify: bool = False, num_test: int = 0, num_unlabeled: int = 0, label_as_mask: bool = False,
             into: str | None = None, seed: int = 0, dry_run: bool = False,
             progress: bool = True) -> ConvertResult:
    """Write ``plan`` into ``data_dir`` (see the module doc); returns what was done. ``into``: the
    images only, as unlabeled images of another dataset (record ``convert-<dataset>.json``)."""
    res = ConvertResult()
    record_path = data_dir / (RECORD_NAME if into is None else f"convert-{dataset}.json")
    old = load_record(record_path)
    old_files: dict[str, Any] = old.get("files", {})
    old_sources: dict[str, Any] = old.get("sources", {})
    if old and old.get("dataset") not in (None, dataset):
        raise DataError(f"{record_path} records a conversion of {old.get('dataset')}, not {dataset}")

    if into is not None:
        images_only(plan.items, f"{dataset}_")
    items, dups = find_duplicates(plan.items, ctx)
    res.problems += plan.problems + dups
    items, notes = assign_test(items, num_test, seed)
    notes += assign_unlabeled(items, num_unlabeled, seed, label_as_mask)
    res.lines += [f"source {ctx.src}: {len(plan.items)} case(s) found"] + plan.notes + notes
    outs = [o for it in items for o in it.kept]
    if any(o.startswith("train/labeled/") for o in outs) and not any(o.startswith("test/labeled/") for o in outs):
        res.lines.append("no labeled test cases in the source: --num-test N moves N labeled training cases "
                         "(whole patients) to test/labeled")
    if dry_run:
        for it in items:
            res.lines.append(f"  {it.case}: {', '.join(it.kept)} <- "
                             f"{', '.join(_source_key(s, ctx) for s in it.sources)}")
        return res

    data_dir.mkdir(parents=True, exist_ok=True)
    src_hashes: dict[str, dict[str, Any]] = {}

    def source_entry(s: Source) -> dict[str, Any]:
        key = ctx.rel(s.path)
        if key not in src_hashes:
            size, mtime = _stat(s.path)
            prev = old_sources.get(key)
            if prev and prev.get("size") == size and prev.get("mtime_ns") == mtime and not verify:
                src_hashes[key] = dict(prev)
            else:
                src_hashes[key] = {"sha256": sha256_file(s.path), "size": size, "mtime_ns": mtime}
        return src_hashes[key]

    settings = {k: v for k, v in ctx.options.items() if _jsonable(v)}
    same_settings = old.get("settings", settings) == settings
    if not same_settings:
        res.lines.append(f"settings changed since the last run ({old.get('settings')} -> {settings}): "
                         "every case is converted again")

    def up_to_date(it: Item) -> bool:
        if not same_settings:
            return False
        for out in it.kept:
            prev = old_files.get(out)
            p = data_dir / out
            if prev is None or not p.is_file():
                return False
            if [_source_key(s, ctx) for s in it.sources] != prev.get("sources"):
                return False
            size, mtime = _stat(p)
            if verify:
                if sha256_file(p) != prev.get("sha256"):
                    return False
            elif (size, mtime) != (prev.get("size"), prev.get("mtime_ns")):
                return False
        for s in it.sources:
            key = ctx.rel(s.path)
            prev = old_sources.get(key)
            size, mtime = _stat(s.path)
            if prev is None or (size, mtime) != (prev.get("size"), prev.get("mtime_ns")):
                return False
            if verify and source_entry(s)["sha256"] != prev.get("sha256"):  # hashed once per file
                return False
        return True

    new_files: dict[str, Any] = {}
    todo: list[Item] = []
    for it in items:
        if up_to_date(it):
            for out in it.kept:
                new_files[out] = old_files[out]
                res.unchanged.append(out)
            for s in it.sources:
                src_hashes.setdefault(ctx.rel(s.path), old_sources[ctx.rel(s.path)])
        else:
            todo.append(it)

    def finish(it: Item, data: bytes | None) -> None:
        finals = [data_dir / o for o in it.outputs]
        # temporary files keep the suffix (writers go by it); dropped outputs go to a scratch folder
        tmps = [scratch / f"{i}-{f.name}" if i in it.drop else f.with_name(f".tmp-{os.getpid()}-{f.name}")
                for i, f in enumerate(finals)]
        for t in tmps:
            t.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                steps = it.build(tmps, data)
            except Exception as exc:  # DataError, or a source file the reader cannot decode
                if isinstance(exc, DataError):
                    res.problems.append(str(exc))
                else:
                    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                    res.problems.append(f"{_source_key(it.sources[0], ctx)}: cannot convert "
                                        f"({type(exc).__name__}: {lines[-1] if lines else ''})")
                for out in it.kept:  # what an earlier run wrote stays recorded (and in place)
                    if out in old_files:
                        new_files[out] = old_files[out]
                return
            for i in it.drop:  # written by the build, not kept
                tmps[i].unlink(missing_ok=True)
            keep = [i for i in range(len(it.outputs)) if i not in it.drop]
            outs_k, finals, tmps = [it.outputs[i] for i in keep], [finals[i] for i in keep], [tmps[i] for i in keep]
            actions, shas = [], []
            for out, f, t in zip(outs_k, finals, tmps):
                new_sha = sha256_file(t)
                shas.append(new_sha)
                if not f.exists():
                    actions.append("write")
                    continue
                cur = sha256_file(f)
                if cur == new_sha:
                    actions.append("same")
                elif (old_files.get(out, {}).get("sha256") == cur) or force:
                    actions.append("replace")
                else:
                    actions.append("conflict")
            if "conflict" in actions:
                for out, f, a in zip(outs_k, finals, actions):
                    if a == "conflict":
                        res.conflicts.append(f"{f} exists with other content than the conversion of "
                                             f"{', '.join(_source_key(s, ctx) for s in it.sources)}")
                # the files of this case are left as they are (all or none of one case)
                for out in outs_k:
                    if out in old_files:
                        new_files[out] = old_files[out]
                return
            for s in it.sources:
                source_entry(s)
            for out, f, t, a, sha in zip(outs_k, finals, tmps, actions, shas):
                if a == "same":
                    res.unchanged.append(out)
                else:
                    os.replace(t, f)
                    (res.written if a == "write" else res.replaced).append(out)
                size, mtime = _stat(f)
                new_files[out] = {
                    "sha256": sha,
                    "size": size, "mtime_ns": mtime,
                    "sources": [_source_key(s, ctx) for s in it.sources],
                    "steps": steps, "case": it.case, "group": it.group,
                }
        finally:
            for t in tmps:
                if t.exists():
                    t.unlink()

    scratch = data_dir / f".tmp-{os.getpid()}-dropped"
    bar = _progress(len(todo), progress, f"convert {dataset}")
    try:
        plain = [it for it in todo if not any(s.member for s in it.sources)]
        members = [it for it in todo if any(s.member for s in it.sources)]
        for it in plain:
            finish(it, None)
            bar.update(1)
        by_archive: dict[Path, dict[str, Item]] = {}
        for it in members:
            s = it.sources[0]
            by_archive.setdefault(s.path, {})[s.member] = it  # type: ignore[index]
        for archive, wanted in by_archive.items():
            try:
                with tarfile.open(archive, "r|*") as tar:
                    for m in tar:
                        it = wanted.pop(m.name, None)
                        if it is None:
                            continue
                        fobj = tar.extractfile(m)
                        finish(it, fobj.read() if fobj is not None else b"")
                        bar.update(1)
            except (tarfile.TarError, OSError, EOFError) as exc:
                res.problems.append(f"cannot read the archive {archive}: {exc}")
            for name in wanted:
                res.problems.append(f"{ctx.rel(archive)}:{name}: listed before but not found in the archive")
    finally:
        bar.close()
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        for it in items:
            for s in it.sources:
                if ctx.rel(s.path) not in src_hashes and any(o in new_files for o in it.kept):
                    try:
                        source_entry(s)
                    except OSError:
                        pass
        res.problems += same_bytes(items, src_hashes, ctx)
        planned = {o for it in plan.items for o in it.kept}
        for out in sorted(set(old_files) - planned):
            if (data_dir / out).is_file():
                new_files[out] = old_files[out]  # reported again until it is deleted
                res.problems.append(f"{data_dir / out}: written by an earlier conversion, but no case of this run "
                                    "makes it (source removed, or --num-test / --test-fold changed); delete it "
                                    "if it should go")
        record = {
            "format": RECORD_FORMAT, "version": 1, "dataset": dataset, "converter": converter,
            "src": str(ctx.src), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": settings,
            "num_test": num_test, "seed": seed,
            "files": dict(sorted(new_files.items())),
            "sources": dict(sorted(src_hashes.items())),
            "groups": dict(sorted({v["case"]: v["group"] for v in new_files.values() if v.get("case")}.items())),
            "archives": ctx.archives or old.get("archives", {}),
            "problems": res.problems, "not_overwritten": res.conflicts,
        }
        _write_json(record_path, record)
        res.record_path = record_path
    return res


def same_bytes(items: list[Item], hashes: dict[str, dict[str, Any]], ctx: Context) -> list[str]:
    """Two cases whose first source files have identical bytes (one case under two names)."""
    by_sha: dict[str, list[str]] = {}
    for it in items:
        s = it.sources[0]
        if s.member is None and ctx.rel(s.path) in hashes:
            by_sha.setdefault(hashes[ctx.rel(s.path)]["sha256"], []).append(ctx.rel(s.path))
    return [f"{', '.join(sorted(set(keys)))}: identical files (one case under {len(set(keys))} names?); "
            "both were converted — remove one" for keys in by_sha.values() if len(set(keys)) > 1]


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or total < 2:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="case", leave=False)


# ---------------------------------------------------------------------------------------------- helpers
def find_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``root`` (recursively) whose name matches one of the glob ``patterns``, sorted."""
    found: set[Path] = set()
    for pat in patterns:
        found.update(p for p in root.rglob(pat) if p.is_file() and not p.name.startswith("."))
    return sorted(found)
