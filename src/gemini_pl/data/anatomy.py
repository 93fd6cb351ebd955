"""Real-anatomy demo data: brain subjects generated from the MNI152 2009 template.

The template (T1, 2 mm, 99×117×95) and its grey- and white-matter probability maps ship inside
the ``nilearn`` wheel (``pip install "gemini-pl[anatomy]"``; read from local files, no download).
On a machine without nilearn (an offline GPU node), write the atlas once where nilearn is
(``python -m gemini_pl.data.anatomy --save-atlas mni_atlas.npz``) and generate from that file
(``--atlas mni_atlas.npz``): the same subjects, file for file.
Labels: 0 background (and CSF), 1 grey matter, 2 white matter (the more probable tissue where its
probability exceeds 0.5). Each subject is the template (an axial slice near the lateral ventricles
in 2D, the whole volume in 3D) under

* a random smooth deformation and a small rotation / scaling (MONAI ``Rand{2,3}DElasticd``;
  labels resampled with nearest neighbours),
* a smooth multiplicative bias field (``RandBiasFieldd``),
* a contrast change (gamma, ``RandAdjustContrastd``) and Gaussian noise (``RandGaussianNoised``),

then clipped at 0 and scaled to [0, 1]. Subject ``k`` of seed ``s`` is drawn from the seed
``[s, k]``: the same files every time. In 2D the slice index varies by ±2 slices (±4 mm) between
subjects, so pairs differ in anatomy as well as in shape. Written in the canonical layout with
:func:`~gemini_pl.data.synthetic.write_generated_dataset` (spacing 2 mm, the template's origin).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from gemini_pl.data.specs.mni import LABEL_NAMES
from gemini_pl.data.synthetic import write_generated_dataset
from gemini_pl.errors import ConfigError

__all__ = ["ANATOMY_VERSION", "LABEL_NAMES", "generate_mni_dataset", "make_subject", "mni_atlas", "save_atlas"]

ANATOMY_VERSION = 1
#: the axial slice of the 2D subjects (z = +18 mm: the bodies of the lateral ventricles)
SLICE_INDEX = 45
SPACING_MM = 2.0


@functools.lru_cache(maxsize=2)
def mni_atlas(path: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(image (99, 117, 95) float32 in [0, 1], label uint8 {0, 1, 2}, origin in mm) of the MNI152 2009 template.

    ``path``: an ``.npz`` written by :func:`save_atlas` instead of nilearn's files."""
    if path is not None:
        try:
            with np.load(path) as f:
                return (f["image"].astype(np.float32), f["label"].astype(np.uint8),
                        tuple(float(v) for v in f["origin"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: not an atlas file written by --save-atlas ({exc})") from exc
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("the MNI152 demo data needs nilearn: pip install 'gemini-pl[anatomy]'") from exc
    t1 = datasets.load_mni152_template(resolution=2)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    image = np.clip(np.asarray(t1.dataobj, dtype=np.float32), 0, None)
    image /= max(float(image.max()), 1e-6)
    label = np.zeros(image.shape, np.uint8)
    label[(gm > 0.5) & (gm >= wm)] = 1
    label[(wm > 0.5) & (wm > gm)] = 2
    return image, label, tuple(float(v) for v in t1.affine[:3, 3])


def save_atlas(path: str | os.PathLike) -> Path:
    """Write nilearn's template as read by :func:`mni_atlas` to the ``.npz`` ``path`` (about 1.6 MB)."""
    image, label, origin = mni_atlas()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: numpy would append ".npz" to another suffix
        np.savez_compressed(f, image=image, label=label, origin=np.asarray(origin, np.float64))
    return path


def _transforms(spatial_dims: int):
    from monai.transforms import (
        Compose, Rand2DElasticd, Rand3DElasticd, RandAdjustContrastd, RandBiasFieldd, RandGaussianNoised,
    )

    keys, modes = ("image", "label"), ("bilinear", "nearest")
    if spatial_dims == 2:
        elastic = Rand2DElasticd(keys, spacing=(24, 24), magnitude_range=(2.0, 4.0), prob=1.0, rotate_range=0.15,
                                 scale_range=0.08, mode=modes, padding_mode="zeros")
    else:
        elastic = Rand3DElasticd(keys, sigma_range=(6.0, 8.0), magnitude_range=(60.0, 120.0), prob=1.0,
                                 rotate_range=(0.1, 0.1, 0.1), scale_range=0.06, mode=modes, padding_mode="zeros")
    return Compose([
        elastic,
        RandBiasFieldd("image", coeff_range=(0.1, 0.3), prob=1.0),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=1.0),
        RandGaussianNoised("image", std=0.03, prob=1.0),
    ])


def make_subject(rng: np.random.Generator, spatial_dims: int, atlas: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One subject: (image float32 in [0, 1], label uint8) of shape (99, 117) in 2D or (99, 117, 95) in 3D
    (``atlas``: see :func:`mni_atlas`)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    image, label, _ = mni_atlas(atlas)
    if spatial_dims == 2:
        z = SLICE_INDEX + int(rng.integers(-2, 3))
        image, label = image[..., z], label[..., z]
    chain = _transforms(spatial_dims)
    chain.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
    out = chain({"image": image[None].copy(), "label": label[None].astype(np.float32)})
    img = np.clip(np.asarray(out["image"])[0], 0, None).astype(np.float32)
    img /= max(float(img.max()), 1e-6)
    return img, np.rint(np.asarray(out["label"])[0]).astype(np.uint8)


def generate_mni_dataset(
    root: str | os.PathLike = "data",
    name: str | None = None,
    spatial_dims: int = 2,
    num_unlabeled: int = 40,
    num_labeled: int = 5,
    num_test: int = 20,
    num_val: int = 4,
    seed: int = 0,
    overwrite: bool = False,
    atlas: str | os.PathLike | None = None,
) -> Path:
    """Write MNI152-derived subjects in the canonical layout under ``<root>/<name>`` (default
    ``mni2d`` / ``mni3d``) and return that path; a no-op when they are there with these parameters.

    Counts: ``num_unlabeled`` in ``train/unlabeled``, ``num_labeled`` labeled training subjects,
    ``num_test`` in ``test/labeled`` and ``num_val`` in ``val/labeled`` (validation, never test).
    ``atlas``: the template from a :func:`save_atlas` file instead of nilearn (same subjects).
    """
    for arg, value in (("num_unlabeled", num_unlabeled), ("num_labeled", num_labeled), ("num_test", num_test),
                       ("num_val", num_val)):
        if value < 0:
            raise ValueError(f"{arg} must be >= 0, got {value}")
    name = name or f"mni{spatial_dims}d"
    params = {"name": name, "spatial_dims": int(spatial_dims), "num_unlabeled": int(num_unlabeled),
              "num_labeled": int(num_labeled), "num_test": int(num_test), "num_val": int(num_val), "seed": int(seed)}
    manifest = {"generator": "gemini_pl.data.anatomy", "version": ANATOMY_VERSION, "params": params,
                "labels": {str(k): v for k, v in LABEL_NAMES.items()},
                "source": "MNI152 2009 template (nilearn), 2 mm"}
    atlas = None if atlas is None else str(atlas)
    origin = mni_atlas(atlas)[2][:spatial_dims]

    def make_case(index: int) -> tuple[np.ndarray, np.ndarray]:
        return make_subject(np.random.default_rng([int(seed), index]), spatial_dims, atlas)

    return write_generated_dataset(root, name, manifest, make_case, [SPACING_MM] * spatial_dims, origin,
                                   prefix="mni", overwrite=overwrite)


def main(argv: list[str] | None = None) -> None:
    """``python -m gemini_pl.data.anatomy``: write the MNI152-derived dataset (the demo's counts by default)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m gemini_pl.data.anatomy", description=main.__doc__)
    p.add_argument("--root", default="data", help="parent folder (default data); the dataset goes to <root>/mni<dims>d")
    p.add_argument("--dims", type=int, default=2, choices=(2, 3))
    p.add_argument("--unlabeled", type=int, default=40)
    p.add_argument("--labeled", type=int, default=5)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--val", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atlas", default=None, help="read the template from this .npz (written by --save-atlas) instead of nilearn")
    p.add_argument("--save-atlas", default=None, metavar="NPZ", help="only write nilearn's template to NPZ and exit")
    a = p.parse_args(argv)
    if a.save_atlas:
        print(save_atlas(a.save_atlas))
        return
    path = generate_mni_dataset(a.root, spatial_dims=a.dims, num_unlabeled=a.unlabeled, num_labeled=a.labeled,
                                num_test=a.test, num_val=a.val, seed=a.seed, atlas=a.atlas)
    print(path)


if __name__ == "__main__":  # pragma: no cover
    main()
