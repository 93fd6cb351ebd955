"""ChestX-ray8 (``chestxray8``): ``images_001.tar.gz`` ... ``images_012.tar.gz`` + ``Data_Entry_2017.csv``.

Format, as distributed by the NIH Clinical Center (Wang et al., CVPR 2017; the ``ChestXray-NIHCC``
box folder and its ``README_CHESTXRAY.pdf``): 112,120 frontal chest X-rays, 1024 x 1024 8-bit
grayscale PNG, named ``<patient id, 8 digits>_<follow-up, 3 digits>.png``, split over twelve
tar.gz archives (members ``images/<name>.png``), and the metadata ``Data_Entry_2017.csv`` (or
``Data_Entry_2017_v2020.csv``) with the columns ``Image Index``, ``Finding Labels``, ``Follow-up
#``, ``Patient ID``, ``Patient Age``, ``Patient Gender`` (M/F), ``View Position`` (PA/AP), ...
Already extracted archives (``images/*.png`` anywhere under ``--src``) are read too; an image both
extracted and in an archive is taken from the extracted file.

Written: ``chestxray/<view>_<sex>/<name>.png`` (``AP_F``, ``AP_M``, ``PA_F``, ``PA_M``: the
groups pairs are drawn in), the PNG bytes as distributed (a non-grayscale file — a few are RGBA —
is made 8-bit grayscale with ITU-R 601 luma and recorded). Reported file by file: a CSV row whose
image is in no archive, an image the CSV does not list, an image found twice (two archives), a
row with a view other than AP/PA or a sex other than F/M. ``Patient ID`` is recorded as the
patient group of each image (all images are pre-training images: no split to straddle).
"""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files
from gemini_pl.errors import DataError

DATASET = "chestxray8"
ALIASES = ("chestxray", "nih")
TITLE = "ChestX-ray8 (NIH): images_0NN.tar.gz + Data_Entry_2017.csv"
EXPECTED = 112120
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
COLUMNS = ("Image Index", "Patient ID", "Patient Gender", "View Position")


def plan(ctx: Context) -> Plan:
    p = Plan()
    csv_path = next((f for n in CSV_NAMES for f in find_files(ctx.src, [n])), None)
    if csv_path is None:
        raise DataError(f"{ctx.src}: no {CSV_NAMES[0]} (or {CSV_NAMES[1]}) found; it gives each image's view and sex")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(f"{csv_path} has no column(s) {absent}; found {reader.fieldnames}")
        rows = {}
        for line, row in enumerate(reader, start=2):
            name = row["Image Index"].strip()
            if name in rows:
                p.problems.append(f"{csv_path}:{line}: {name} is listed twice")
                continue
            rows[name] = (line, row)
    found: dict[str, list[Source]] = {}
    archives = find_files(ctx.src, ["*.tar.gz", "*.tgz", "*.tar"])
    for a in archives:
        for m in ctx.archive_members(a):
            if m.lower().endswith(".png"):
                found.setdefault(Path(m).name, []).append(Source(a, m))
    extracted: dict[str, list[Source]] = {}
    for f in find_files(ctx.src, ["*.png"]):
        extracted.setdefault(f.name, []).append(Source(f))
    both = sorted(set(found) & set(extracted))
    if both:
        p.notes.append(f"{len(both)} image(s) are both extracted and in an archive (e.g. "
                       f"{_where(extracted[both[0]][0], ctx)}): the extracted files are used")
    found.update(extracted)
    p.notes.append(f"{csv_path.name}: {len(rows)} rows; {len(archives)} archive(s); {len(found)} PNG name(s) found")
    for name, srcs in sorted(found.items()):
        if name not in rows:
            p.problems.append(f"{_where(srcs[0], ctx)}: not listed in {csv_path.name} (view and sex unknown); skipped")
    for name, (line, row) in sorted(rows.items()):
        view, sex = row["View Position"].strip().upper(), row["Patient Gender"].strip().upper()
        if view not in ("AP", "PA") or sex not in ("F", "M"):
            p.problems.append(f"{csv_path}:{line}: {name} has View Position {view!r} / Patient Gender {sex!r} "
                              "(expected AP/PA and F/M); skipped")
            continue
        srcs = found.get(name)
        if not srcs:
            p.problems.append(f"{csv_path}:{line}: {name} is in no archive or folder under {ctx.src}")
            continue
        for s in srcs:  # a second copy collides in the outputs and is reported by the base
            p.items.append(Item((f"{view}_{sex}/{name}",), (s, Source(csv_path)), partial(_build, s),
                                case=name[:-4], group=row["Patient ID"].strip()))
    return p


def _where(s: Source, ctx: Context) -> str:
    return ctx.rel(s.path) + (f":{s.member}" if s.member else "")


def _build(src: Source, paths, data) -> str:
    from PIL import Image

    raw = data if data is not None else src.path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            mode, size = im.mode, im.size
            if mode in ("L", "I;16"):
                paths[0].write_bytes(raw)
                return f"copied ({size[0]}x{size[1]} {mode})"
            if mode == "P":
                im = im.convert("RGB")
            if mode in ("LA", "RGBA", "P"):
                im = im.convert("RGB") if im.mode != "RGB" else im
            gray = im.convert("L")  # ITU-R 601 luma
            gray.save(paths[0], format="PNG")
            return f"{mode} -> 8-bit grayscale (luma), {size[0]}x{size[1]}"
    except OSError as exc:
        raise DataError(f"{src.path}{':' + src.member if src.member else ''}: not a readable PNG ({exc})") from None
