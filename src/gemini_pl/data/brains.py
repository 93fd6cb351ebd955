"""Real inter-subject brain anatomy: 20 subjects from the SynthSeg training label maps, with T1-like
intensities synthesised from real label maps.

The anatomy is real and differs from subject to subject: the labels are the 20 whole-head
segmentations that ship with SynthSeg (Billot et al., Medical Image Analysis 2023; Apache-2.0),
grouped into 11 classes (:mod:`gemini_pl.data.specs.synthseg`: cerebral white matter and cortex,
lateral ventricles, cerebellum, thalamus, caudate, putamen + pallidum, hippocampus + amygdala,
brainstem, 3rd + 4th ventricles), affinely pre-aligned to a common space and stored at 2 mm in
``gemini_pl/data/assets/synthseg_labels_2mm.npz`` (made by :mod:`gemini_pl.data.synthseg_derive`;
licence and NOTICE next to it). The images are **not** real MR images: they are T1-like
intensities synthesised per structure from the label maps —

* a grey value per class (white matter brightest, ventricles darkest, deep grey matter in between)
  with a per-subject jitter of each class's value,
* a smooth within-structure texture, partial-volume blur (Gaussian, sigma 1 mm),
* a smooth multiplicative bias field (a random polynomial of degree 3) and Gaussian noise,

skull-stripped (zero outside the brain), scaled to [0, 1]. Subject ``s`` of seed ``k`` is drawn from
``numpy.random.default_rng([k, s, dims])``: the same files every time.

Datasets (canonical layout, :func:`~gemini_pl.data.synthetic.write_generated_dataset`, spacing 2 mm):
``synthseg3d``, the aligned volumes (96 × 112 × 88; array axes towards right, anterior, superior,
oriented like MNI152), and ``synthseg2d``, the axial slice :data:`SLICE_INDEX` of the aligned space
(96 × 112, about z = 0 mm in MNI152 terms: the basal ganglia, the thalami, the 3rd ventricle, the
hippocampi and the top of the cerebellum — all 11 classes in every subject). The split is by
subject (:data:`SPLIT`, by source number): 14 training subjects (``train/unlabeled`` and, the
same subjects with their labels, ``train/labeled``), 2 validation and 4 test subjects; the common
space is built from the training subjects only. Registration pairs
are between different subjects: ``eval_mode: pairs`` pairs the 4 test subjects (12 ordered pairs
with ``num_val_pairs: null``). Case names carry the source subject: ``synthseg_s07`` is
``training_seg_07.nii.gz``.

    python -m gemini_pl.data.brains --root data --dims 2     # data/synthseg2d
    python -m gemini_pl.data.brains --root data --dims 3     # data/synthseg3d
    python -m gemini_pl.data.brains --dims 2 --stats         # voxel counts, unwarped test-pair Dice
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from gemini_pl.data.specs.synthseg import LABEL_NAMES
from gemini_pl.data.synthetic import write_generated_dataset
from gemini_pl.errors import ConfigError

__all__ = [
    "ASSET", "BRAINS_VERSION", "CLASS_MEANS", "LABEL_NAMES", "SLICE_INDEX", "SPLIT", "anatomy_stats",
    "generate_synthseg_dataset", "make_subject", "pair_dice", "subject_labels", "synthesise_t1", "synthseg_labels",
]

BRAINS_VERSION = 1
SPACING_MM = 2.0
#: the committed derived copy of the label maps.
ASSET = Path(__file__).parent / "assets" / "synthseg_labels_2mm.npz"
#: the axial slice of the 2D subjects in the aligned space (z index of the 2 mm grid).
SLICE_INDEX = 38
#: source subject numbers (training_seg_<nn>) of each split.
SPLIT = {
    "train": tuple(range(1, 15)),
    "val": (15, 16),
    "test": (17, 18, 19, 20),
}
#: T1-like grey value of each class (index = class), before the per-subject jitter.
CLASS_MEANS = (0.0, 0.82, 0.50, 0.12, 0.60, 0.68, 0.56, 0.64, 0.52, 0.74, 0.12)
#: relative standard deviation of the per-subject jitter of each class's grey value.
CLASS_JITTER = 0.05
TEXTURE_STD = 0.03
#: partial-volume blur: Gaussian sigma (mm).
BLUR_SIGMA_MM = 1.0
BIAS_COEFF = 0.15
NOISE_STD = 0.02


@functools.lru_cache(maxsize=2)
def synthseg_labels(path: str | None = None) -> tuple[np.ndarray, tuple[int, ...], tuple[float, ...]]:
    """(labels uint8 (20, 96, 112, 88), subject numbers, RAS origin in mm of voxel 0) of the committed
    derived copy (or ``path``)."""
    path = str(ASSET) if path is None else path
    try:
        with np.load(path) as f:
            labels, subjects = f["labels"].astype(np.uint8), tuple(int(s) for s in f["subjects"])
            origin = tuple(float(v) for v in f["origin"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a label file written by gemini_pl.data.synthseg_derive ({exc})") from exc
    if labels.ndim != 4 or len(labels) != len(subjects) or int(labels.max()) >= len(LABEL_NAMES):
        raise ConfigError(f"{path}: labels of shape {labels.shape} with values up to {labels.max()} do not fit "
                          f"{len(subjects)} subjects and {len(LABEL_NAMES)} classes")
    labels.setflags(write=False)
    return labels, subjects, origin


def subject_labels(subject: int, spatial_dims: int, path: str | None = None,
                   slice_index: int = SLICE_INDEX) -> np.ndarray:
    """The class map (uint8) of source subject ``subject``: the volume (3D) or its axial slice (2D)."""
    labels, subjects, _ = synthseg_labels(path)
    if subject not in subjects:
        raise ValueError(f"subject {subject} is not one of {subjects}")
    lab = labels[subjects.index(subject)]
    return lab if spatial_dims == 3 else lab[..., slice_index]


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """exp of a random polynomial of degree 3 in the normalised coordinates."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    log_field = np.zeros(shape)
    degrees = [d for d in np.ndindex(*([4] * len(shape))) if 0 < sum(d) <= 3]
    for coeff, deg in zip(rng.uniform(-BIAS_COEFF, BIAS_COEFF, len(degrees)), degrees):
        term = np.ones(shape)
        for ax, p in zip(axes, deg):
            term = term * ax**p
        log_field += coeff * term
    return np.exp(log_field)


def synthesise_t1(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """T1-like intensities synthesised from a class map (float32 in [0, 1], zero outside the brain)."""
    from scipy import ndimage as ndi

    means = np.asarray(CLASS_MEANS) * (1 + rng.normal(0, CLASS_JITTER, len(CLASS_MEANS)))
    means[0] = 0.0
    brain = label > 0
    texture = ndi.gaussian_filter(rng.standard_normal(label.shape), 1.0)
    texture *= TEXTURE_STD / max(float(texture.std()), 1e-6)
    image = means[label] * (1 + texture * brain)
    image = ndi.gaussian_filter(image, BLUR_SIGMA_MM / SPACING_MM)
    image *= _bias_field(rng, label.shape)
    image += rng.normal(0, NOISE_STD, label.shape)
    image *= ndi.binary_dilation(brain)  # skull-stripped: the partial-volume rim of one voxel is kept
    image = np.clip(image, 0, None)
    return (image / max(float(image.max()), 1e-6)).astype(np.float32)


def make_subject(subject: int, rng: np.random.Generator, spatial_dims: int, path: str | None = None,
                 slice_index: int = SLICE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """One subject: (image float32 in [0, 1], label uint8) of shape (96, 112) in 2D or (96, 112, 88) in 3D;
    the label map is the real one of source subject ``subject``, the image is synthesised from it."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    label = np.array(subject_labels(subject, spatial_dims, path, slice_index))
    return synthesise_t1(label, rng), label


def case_subjects(num_labeled: int | None = None) -> list[tuple[str, int]]:
    """(split folder, source subject) of every case in generation order (train/unlabeled,
    train/labeled, test/labeled, val/labeled); ``num_labeled`` training subjects also labeled (all by default)."""
    train = SPLIT["train"]
    labeled = train if num_labeled is None else train[:num_labeled]
    return ([("train/unlabeled", s) for s in train] + [("train/labeled", s) for s in labeled]
            + [("test/labeled", s) for s in SPLIT["test"]] + [("val/labeled", s) for s in SPLIT["val"]])


def generate_synthseg_dataset(
    root: str | os.PathLike = "data",
    name: str | None = None,
    spatial_dims: int = 2,
    seed: int = 0,
    num_labeled: int | None = None,
    overwrite: bool = False,
    labels: str | os.PathLike | None = None,
    slice_index: int = SLICE_INDEX,
) -> Path:
    """Write the SynthSeg-derived subjects (T1-like intensities synthesised from real label maps)
    in the canonical layout under ``<root>/<name>`` (default ``synthseg2d`` / ``synthseg3d``) and
    return that path; a no-op when they are there with these parameters.

    ``num_labeled``: how many training subjects are also written with their labels (default all
    14; the few-shot budget is the data module's ``num_labeled``). ``labels``: another derived copy
    than the committed one. ``slice_index``: the axial slice of the 2D subjects.
    """
    if num_labeled is not None and not 0 <= num_labeled <= len(SPLIT["train"]):
        raise ValueError(f"num_labeled must be in 0..{len(SPLIT['train'])}, got {num_labeled}")
    name = name or f"synthseg{spatial_dims}d"
    cases = case_subjects(num_labeled)
    counts = {k: sum(1 for split, _ in cases if split == folder) for k, folder in
              (("num_unlabeled", "train/unlabeled"), ("num_labeled", "train/labeled"),
               ("num_test", "test/labeled"), ("num_val", "val/labeled"))}
    params = {"name": name, "spatial_dims": int(spatial_dims), "seed": int(seed), **counts}
    if spatial_dims == 2:
        params["slice_index"] = int(slice_index)
    path = None if labels is None else str(labels)
    origin = list(synthseg_labels(path)[2][:spatial_dims])  # as for mni2d/mni3d: the RAS mm of voxel 0
    manifest = {
        "generator": "gemini_pl.data.brains", "version": BRAINS_VERSION, "params": params,
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "source": "SynthSeg training label maps 1-20 (github.com/BBillot/SynthSeg, Apache-2.0), grouped, "
                  "affinely aligned, 2 mm; T1-like intensities synthesised from real label maps",
        "subjects": {k: list(v) for k, v in SPLIT.items()},
    }

    def make_case(index: int) -> tuple[np.ndarray, np.ndarray]:
        subject = cases[index][1]
        return make_subject(subject, np.random.default_rng([int(seed), subject, int(spatial_dims)]), spatial_dims,
                            path, slice_index)

    return write_generated_dataset(root, name, manifest, make_case, [SPACING_MM] * spatial_dims, origin,
                                   prefix="synthseg", overwrite=overwrite,
                                   case_name=lambda index: f"synthseg_s{cases[index][1]:02d}")


def pair_dice(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """Dice of every foreground class present in ``a`` or ``b``."""
    out = {}
    for k in range(1, len(LABEL_NAMES)):
        na, nb = int(np.sum(a == k)), int(np.sum(b == k))
        if na + nb:
            out[k] = 2 * int(np.sum((a == k) & (b == k))) / (na + nb)
    return out


def anatomy_stats(spatial_dims: int, path: str | None = None, slice_index: int = SLICE_INDEX) -> str:
    """A Markdown table: per class, the voxel count over the 20 subjects (mean, min-max) and the
    unwarped Dice between the 12 ordered test pairs (mean, min-max) — how much the aligned
    subjects still differ; last row: the mean over foreground classes."""
    labels = {s: subject_labels(s, spatial_dims, path, slice_index) for s in synthseg_labels(path)[1]}
    test = SPLIT["test"]
    dices = [pair_dice(labels[a], labels[b]) for a in test for b in test if a != b]
    where = f"axial slice z = {slice_index}" if spatial_dims == 2 else "volume"
    rows = [f"| class ({spatial_dims}D, {where}) | voxels: mean (min-max) | unwarped test-pair Dice: mean (min-max) |",
            "|---|---|---|"]
    for k, name in LABEL_NAMES.items():
        n = np.array([int(np.sum(lab == k)) for lab in labels.values()])
        d = np.array([x[k] for x in dices if k in x]) if k else np.array([])
        dice = f"{d.mean():.3f} ({d.min():.3f}-{d.max():.3f})" if d.size else "-"
        rows.append(f"| {k} {name} | {n.mean():.0f} ({n.min()}-{n.max()}) | {dice} |")
    mean = np.array([np.mean(list(x.values())) for x in dices])
    rows.append(f"| mean over foreground classes | | {mean.mean():.3f} ({mean.min():.3f}-{mean.max():.3f}) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """``python -m gemini_pl.data.brains``: write the SynthSeg-derived dataset (T1-like intensities
    synthesised from real label maps)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m gemini_pl.data.brains", description=main.__doc__)
    p.add_argument("--root", default="data", help="parent folder (default data); the dataset goes to <root>/synthseg<dims>d")
    p.add_argument("--dims", type=int, default=2, choices=(2, 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", default=None, help="another derived label file than the committed one")
    p.add_argument("--stats", action="store_true",
                   help="only print the per-class voxel counts and the unwarped Dice of the test pairs")
    a = p.parse_args(argv)
    if a.stats:
        print(anatomy_stats(a.dims, a.labels))
        return
    print(generate_synthseg_dataset(a.root, spatial_dims=a.dims, seed=a.seed, labels=a.labels))


if __name__ == "__main__":  # pragma: no cover
    main()
