"""``gemini-pl segment``: segment one's own images with a trained segmentation head.

Usage::

    gemini-pl segment --ckpt C --input DIR_OR_FILES... --out DIR

Any checkpoint with a segmentation head works (``Segmentation``, ``GeminiSemi``, the
semi-supervised baselines). Each image (any format SimpleITK reads) is intensity-preprocessed and
resampled onto the model's grid as the training data was (:mod:`gemini_pl.apps.grid`,
:mod:`gemini_pl.apps.prepare`), segmented — by MONAI sliding windows of the training patch when it
is larger (3D), see :func:`gemini_pl.inference.infer` — and the labels are brought back onto the
image's **own grid**: the class probabilities (softmax; sigmoid for multilabel heads) are
interpolated linearly at the image's voxels and then decided (argmax; > 0.5), so the written label
has the input's shape, spacing, origin and direction exactly. An image already on the model's
grid is decided directly (no interpolation).

Files written in ``DIR`` per image ``<name>``: ``<name>_seg<suffix>`` (class indices, or with
``--label-values file`` the training dataset's own label values, e.g. FreeSurfer codes; multilabel:
``<name>_seg_<channel><suffix>`` per channel, 0/1), ``<name>_overlay.png`` (the image and its
labels); ``report.md`` showing the volumes and the overlays; and ``volumes.csv``: one row per image, one column per foreground class, the volume in
mm³ (area in mm² for 2D images) of the voxels of that class.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import GeminiError
from . import pictures
from .checkpoint import Loaded, load_model
from .grid import (Grid, case_name, continuous_index, image_array, list_inputs, model_grid, preflight, read_image, sample,
                   slabs, write_image)
from .prepare import device_of, network_input

__all__ = ["Segmented", "class_names", "main", "segment_files", "segment_image", "volumes"]


@dataclass
class Segmented:
    """Labels of one image on its own grid: (*S) int64 class indices, or (K, *S) 0/1 (multilabel)."""

    name: str
    grid: Grid
    labels: torch.Tensor
    multilabel: bool


def class_names(loaded: Loaded) -> list[str]:
    """Names of the foreground classes (multiclass 1..K-1) or channels (multilabel)."""
    model = loaded.model
    k = int(model.hparams.num_classes)
    if model.label_kind == "multilabel":
        names = list(loaded.spec.label_channels)
        return names if len(names) == k else [str(i + 1) for i in range(k)]
    names = list(loaded.spec.class_names)
    return names[1:] if len(names) == k else [str(i) for i in range(1, k)]


def segment_image(loaded: Loaded, image: sitk.Image, name: str = "case") -> Segmented:
    """Segment ``image``; labels on its own grid (see the module docstring)."""
    model, spec = loaded.model, loaded.spec
    F = Grid.of(image)
    p = spec.preprocessing
    M = model_grid(F, p.orientation, p.spacing, p.resize)
    x = network_input(image, spec, M, loaded.device)
    multilabel = model.label_kind == "multilabel"
    with torch.inference_mode():
        logits = model.segment_logits(x)
        if F.same_as(M):
            labels = model.logits_to_labels(logits)[0]
        else:
            prob = (torch.sigmoid(logits[0]) if multilabel else torch.softmax(logits[0], dim=0)).float()
            labels = torch.empty((prob.shape[0] if multilabel else 1, *F.shape))
            for sl in slabs(F.shape):  # a slab of the last axis at a time: bounded memory
                index = continuous_index(M, torch.from_numpy(F.voxel_world(sl)).to(x.device))
                p_s = sample(prob, index.float(), "bilinear", "border")
                labels[..., sl] = ((p_s > 0.5).float() if multilabel else p_s.argmax(dim=0, keepdim=True).float()).cpu()
    labels = labels.cpu()
    return Segmented(name, F, labels if multilabel else labels[0].to(torch.int64), multilabel)


def volumes(seg: Segmented, num_classes: int) -> list[float]:
    """Volume (mm³; mm² in 2D) of each foreground class (multiclass 1..K-1) or channel."""
    voxel = float(np.prod(seg.grid.spacing))
    if seg.multilabel:
        return [float(seg.labels[c].sum()) * voxel for c in range(seg.labels.shape[0])]
    counts = torch.bincount(seg.labels.flatten(), minlength=num_classes)
    return [float(counts[c]) * voxel for c in range(1, num_classes)]


def file_values(loaded: Loaded) -> dict[int, int] | None:
    """Class index → the label value of the dataset's files (the inverse of the spec's label table:
    the first file value of each class), or None when the dataset has no table."""
    table = loaded.spec.label_table
    if not table:
        return None
    out: dict[int, int] = {}
    for value, cls in sorted(table.items()):
        out.setdefault(int(cls), int(value))
    return out


def to_file_values(labels: torch.Tensor, values: dict[int, int]) -> torch.Tensor:
    """Class indices → file values (class 0 stays 0)."""
    lut = torch.zeros(int(labels.max()) + 1 if labels.numel() else 1, dtype=torch.int64)
    for cls, value in values.items():
        if cls < len(lut):
            lut[cls] = value
    return lut[labels]


def write_segmentation(seg: Segmented, image: sitk.Image, names: list[str], out_dir: Path, suffix: str = ".nii.gz",
                       pictures_on: bool = True, like: str | Path | None = None,
                       values: dict[int, int] | None = None) -> list[Path]:
    """Write the label file(s) on the image's grid and the overlay PNG; a NIfTI input file ``like``
    lends its header geometry (:func:`~gemini_pl.apps.grid.write_image`); ``values``: write these
    file values instead of the class indices (:func:`file_values`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if seg.multilabel:
        for c, cname in enumerate(names):
            path = out_dir / f"{seg.name}_seg_{cname}{suffix}"
            written.append(write_image(seg.labels[c].to(torch.uint8), seg.grid, path, like=like))
        shown = (torch.arange(1, seg.labels.shape[0] + 1).view(-1, *([1] * seg.grid.ndim)) * (seg.labels > 0)).amax(0)
    else:
        stored = seg.labels if values is None else to_file_values(seg.labels, values)
        dtype = torch.uint8 if int(stored.max()) < 256 else torch.int16 if int(stored.max()) < 32768 else torch.int32
        path = out_dir / f"{seg.name}_seg{suffix}"
        written.append(write_image(stored.to(dtype), seg.grid, path, like=like))
        shown = seg.labels
    if pictures_on:
        written.append(pictures.overlay_png(image_array(image), shown.numpy(), out_dir / f"{seg.name}_overlay.png",
                                            spacing=seg.grid.spacing, title=seg.name))
    return written


def segment_files(ckpt: str | Path, inputs, out: str | Path, device: str = "auto", model_class: str | None = None,
                  suffix: str = ".nii.gz", pictures_on: bool = True, label_values: str = "classes",
                  echo=print) -> list[Segmented]:
    """Segment every image named by ``inputs`` (files and/or folders); write the labels, pictures
    and ``volumes.csv`` under ``out``. ``label_values``: ``classes`` (class indices 0..K-1) or
    ``file`` (the values of the training dataset's label files, by its label table)."""
    loaded = load_model(ckpt, device_of(device), need="head", model_class=model_class)
    files = preflight(list_inputs(inputs, "input"))  # every input checked before anything is written
    values = None
    if label_values == "file":
        values = file_values(loaded)
        if values is None:
            echo("note: the dataset has no label table: its files hold the class indices; writing those")
    for note in loaded.notes:
        echo(f"note: {note}")
    names = class_names(loaded)
    k = int(loaded.model.hparams.num_classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unit = "mm3" if loaded.spatial_dims == 3 else "mm2"
    results, rows = [], []
    for path in files:
        image = read_image(path, loaded.spatial_dims, deep=False)  # preflight decoded it whole
        seg = segment_image(loaded, image, case_name(path))
        write_segmentation(seg, image, names, out, suffix, pictures_on, like=path, values=values)
        vols = volumes(seg, k)
        rows.append({"case": seg.name, "image": str(path), **{f"{n}_{unit}": v for n, v in zip(names, vols)}})
        echo(f"{seg.name}: " + ", ".join(f"{n} {v:.1f} {unit.replace('mm3', 'mm³').replace('mm2', 'mm²')}"
                                         for n, v in zip(names, vols)))
        results.append(seg)
    with open(out / "volumes.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _report(out, rows, names, unit, pictures_on)
    return results


def _report(out: Path, rows: list[dict], names: list[str], unit: str, pictures_on: bool) -> Path:
    """The ``segment`` section of ``<out>/report.md``: the volumes table and each overlay."""
    from ..report import REPORT_NAME, image_link, write_section

    report = out / REPORT_NAME
    shown = unit.replace("mm3", "mm³").replace("mm2", "mm²")
    lines = ["## Segmentation", "", f"Volumes ({shown}) per class:", "",
             "| case | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        lines.append(f"| {row['case']} | " + " | ".join(f"{row[f'{n}_{unit}']:.1f}" for n in names) + " |")
    if pictures_on:
        lines += [""] + [image_link(report, out / f"{row['case']}_overlay.png", row["case"]) for row in rows]
    return write_section(report, "segment", "\n".join(lines), title="gemini-pl segment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-pl segment",
        description="Segment images with a trained segmentation head; labels on each input's own grid, "
                    "an overlay PNG per image and volumes.csv (volume per class).")
    parser.add_argument("--ckpt", required=True, help="checkpoint of Segmentation or GeminiSemi")
    parser.add_argument("--input", required=True, nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--model-class", help="module class when the checkpoint does not name it")
    parser.add_argument("--suffix", default=".nii.gz", help="file type of the written labels (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--no-pictures", action="store_true", help="write no PNG")
    parser.add_argument("--label-values", choices=("classes", "file"), default="classes",
                        help="classes: class indices 0..K-1; file: the label values of the training dataset's files "
                             "(e.g. FreeSurfer codes), by its label table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``segment`` on ``argv``; 0 on success, 2 on a usage or data error."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        segment_files(args.ckpt, args.input, args.out, args.device, args.model_class, args.suffix, not args.no_pictures,
                      args.label_values)
    except GeminiError as exc:
        print(f"gemini-pl segment: error: {exc}", file=sys.stderr)
        return 2
    return 0
