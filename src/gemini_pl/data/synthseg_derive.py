"""Make the compact copy of the SynthSeg training label maps that ships with gemini-pl (run once).

Source: the 20 label maps ``data/training_label_maps/training_seg_01.nii.gz`` ...
``training_seg_20.nii.gz`` of the SynthSeg repository (github.com/BBillot/SynthSeg, Apache-2.0):
whole-head FreeSurfer-style segmentations, 256³ at 1 mm. Output: one ``.npz``
(``gemini_pl/data/assets/synthseg_labels_2mm.npz``) read by :mod:`gemini_pl.data.brains`::

    python -m gemini_pl.data.synthseg_derive --src DIR_WITH_THE_20_FILES \\
        --out src/gemini_pl/data/assets/synthseg_labels_2mm.npz

What is done to each map:

1. **Grouping**: FreeSurfer values -> the 11 classes of :data:`~gemini_pl.data.specs.synthseg.FREESURFER_GROUPS`
   (left and right merged); non-brain values (extra-cerebral CSF, the head labels >= 500) -> 0.
2. **Affine pre-alignment** (SimpleITK, 12 parameters, mean squares between label-derived
   pseudo-T1 images: each class a fixed grey value, smoothed by 1 mm): every subject is first
   registered to subject 1 (moments initialisation, then affine, three resolutions); the space is
   then moved by the inverse of the mean affine of the *training* subjects (so that it has their
   mean size and pose, not subject 1's) and turned, rigidly (no scaling), to the orientation of the
   MNI152 2009 template (nilearn's grey/white-matter labels, correlation): coordinates are close to
   MNI152 millimetres, sizes are the training subjects' mean. A template is made as the mean of the
   training subjects' pseudo-T1 images in that space, and every subject (training, validation and
   test) is registered again to the template, starting from its first transform. Test and
   validation subjects never shape the common space or the template.
3. **Resampling to 2 mm**: each class's 1 mm mask is smoothed (Gaussian, sigma 0.85 mm: the
   anti-aliasing of a 2 mm grid), carried into the common 2 mm grid through the subject's transform
   (linear interpolation) and every voxel takes the class of largest fraction (background: one
   minus the sum). The grid (:data:`SHAPE`, array axes towards right, anterior, superior) is
   centred on the template's brain; ``origin`` is the RAS position (mm) of voxel 0.

The same files (:data:`SOURCE_BLOBS` are their git blob ids in the SynthSeg repository) give the
same output: the registrations use one thread and seeded metric sampling. Needs nilearn (the
MNI152 template, as for :mod:`gemini_pl.data.anatomy`); about 15 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from gemini_pl.data.specs.synthseg import FREESURFER_GROUPS, LABEL_NAMES

__all__ = ["DERIVE_VERSION", "SHAPE", "SPACING_MM", "SUBJECTS", "TRAIN_SUBJECTS", "derive", "group_labels"]

DERIVE_VERSION = 1
SPACING_MM = 2.0
#: the common 2 mm grid (x: towards the right, y: anterior, z: superior), 192 x 224 x 176 mm.
SHAPE = (96, 112, 88)
#: the 20 source subjects (the number of training_seg_<nn>.nii.gz).
SUBJECTS = tuple(range(1, 21))
#: the subjects that shape the common space (the training subjects of :mod:`gemini_pl.data.brains`).
TRAIN_SUBJECTS = tuple(range(1, 15))
#: git blob ids of the source files in the SynthSeg repository (commit 66342c1), for the record.
SOURCE_BLOBS = {
    1: "ea35306c23022b2efc44ee5072547760744f8f38", 2: "ffd37083e6205bbde4e5b0504fb3cc08c854c13d",
    3: "33f3ef193af47d1e027bc343ca195af5cff17dad", 4: "27c5eb8a501a54b7892811001f16e82929b0ab4e",
    5: "950afc739fd454f59a5373c53c9bd6600354c44c", 6: "392164678109c36820e2763b56825bbd0d8054de",
    7: "c1c98eb290a074200d604c9843efa652d69fdd60", 8: "8d689bb3e6094a91efe4c25c5ffc249306525067",
    9: "16af4624c69a0f7795d6d95ee973c2a29b758a62", 10: "ac69a898057d7b314210c561f6561f1ee3477baa",
    11: "7aff21758a76e3e23faa5056e59158b4c7c661fc", 12: "e3806b757ff9ac80c6aec76aef44602f7a3fb559",
    13: "2a88d52d62b2c8189522c0c749dee61df1a3eb45", 14: "d457751a714262f6808b78f900cad4e8e1508454",
    15: "5fda4a73e130798e0c5170ba16e9f54141a9abb7", 16: "f5c6d19df85e75fbc665dc2418fc2ab6761b4673",
    17: "1e47f8e99be2eaf805ea92da69a53aea3cbd25f9", 18: "d3878258ec6fb0710925360a6b6d5f0ab22598b1",
    19: "61eaba88a5fcdfd3c4fb82f763140566d31c31b4", 20: "f69b4bbd0dc400d6fbdb4593dfa81b58e91fbb34",
}
#: grey value of each class in the pseudo-T1 images that drive the registration.
REG_INTENSITY = (0.0, 1.0, 0.55, 0.15, 0.7, 0.8, 0.65, 0.7, 0.55, 0.85, 0.15)
#: optimiser iterations per resolution level of each registration.
ITERATIONS = 200
#: margin (mm) kept around the brain when the 1 mm maps are cropped.
MARGIN_MM = 8


def group_labels(values: np.ndarray) -> np.ndarray:
    """FreeSurfer label values -> class indices (uint8) of :data:`FREESURFER_GROUPS`; others -> 0."""
    values = np.asarray(values)
    lut = np.zeros(max(int(values.max()) + 1, 1024), np.uint8)
    for k, codes in FREESURFER_GROUPS.items():
        lut[list(codes)] = k
    return lut[np.clip(values, 0, len(lut) - 1).astype(np.int64)]


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read_subject(path: Path):
    """(grouped class map as a 1 mm SimpleITK image cropped around the brain, git blob id of the file)."""
    import SimpleITK as sitk

    raw = path.read_bytes()
    img = sitk.ReadImage(str(path))
    cls = group_labels(np.rint(sitk.GetArrayViewFromImage(img)).astype(np.int64))  # (z, y, x)
    out = sitk.GetImageFromArray(cls)
    out.CopyInformation(img)
    idx = np.argwhere(cls > 0)
    lo = np.maximum(idx.min(0) - MARGIN_MM, 0)[::-1]  # x, y, z
    hi = np.minimum(idx.max(0) + MARGIN_MM + 1, cls.shape)[::-1]
    return out[int(lo[0]):int(hi[0]), int(lo[1]):int(hi[1]), int(lo[2]):int(hi[2])], _blob_id(raw)


def _pseudo_t1(cls_img):
    """The registration image of a class map: each class a fixed grey value, smoothed by 1 mm."""
    import SimpleITK as sitk

    lut = np.asarray(REG_INTENSITY, np.float32)
    img = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(cls_img)])
    img.CopyInformation(cls_img)
    return sitk.SmoothingRecursiveGaussian(img, 1.0)


def _grid(center, shape=SHAPE, spacing=SPACING_MM):
    """An empty 2 mm image of ``shape`` centred on ``center`` (LPS mm), axes towards R, A, S."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    ref.SetSpacing([spacing] * 3)
    direction = np.diag([-1.0, -1.0, 1.0])
    ref.SetDirection(direction.ravel().tolist())
    half = (np.asarray(shape, float) - 1) / 2 * spacing
    ref.SetOrigin((np.asarray(center, float) - direction @ half).tolist())
    return ref


def _centroid(cls_img) -> np.ndarray:
    """Physical centre (LPS mm) of the brain (class > 0) of a class map."""
    import SimpleITK as sitk

    idx = np.argwhere(sitk.GetArrayViewFromImage(cls_img) > 0)[:, ::-1].mean(0)
    return np.asarray(cls_img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def _mean_image(images, ref, transforms):
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.mean([sitk.GetArrayFromImage(_resample(im, ref, tx))
                                          for im, tx in zip(images, transforms)], 0).astype(np.float32))
    out.CopyInformation(ref)
    return out


def _mni_pseudo_t1():
    """The MNI152 2009 template's tissue labels (nilearn, 2 mm) as a pseudo-T1 image (LPS physical space)."""
    import SimpleITK as sitk

    from gemini_pl.data.anatomy import mni_atlas

    _, label, origin = mni_atlas()
    values = np.asarray([0.0, REG_INTENSITY[2], REG_INTENSITY[1]], np.float32)  # background, grey, white matter
    img = sitk.GetImageFromArray(np.ascontiguousarray(values[label].T))
    img.SetSpacing([2.0] * 3)
    img.SetDirection(np.diag([-1.0, -1.0, 1.0]).ravel().tolist())  # array axes towards R, A, S
    img.SetOrigin([-origin[0], -origin[1], origin[2]])  # RAS -> LPS
    return sitk.SmoothingRecursiveGaussian(img, 1.0)


def _centroid_of(img) -> np.ndarray:
    import SimpleITK as sitk

    idx = np.argwhere(sitk.GetArrayViewFromImage(img) > 0.3)[:, ::-1].mean(0)
    return np.asarray(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def _register(fixed, moving, initial, seed: int, rigid: bool = False):
    import SimpleITK as sitk

    if seed <= 0:
        raise ValueError("the metric sampling seed must be positive (SimpleITK reads 0 as the wall clock)")

    reg = sitk.ImageRegistrationMethod()
    if rigid:
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed)  # seed > 0: SimpleITK takes 0 for the wall clock
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=ITERATIONS,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(sitk.Euler3DTransform(initial) if rigid else sitk.AffineTransform(initial), inPlace=False)
    out = reg.Execute(fixed, moving)
    if out.GetName() == "CompositeTransform":  # the result: a composite holding the one transform
        out = sitk.CompositeTransform(out).GetNthTransform(0)
    return (sitk.Euler3DTransform(out) if rigid else sitk.AffineTransform(out)), reg.GetMetricValue()


def _matrix(tx) -> np.ndarray:
    """4x4 matrix of a SimpleITK affine transform (fixed point -> moving point)."""
    a = np.eye(4)
    m = np.asarray(tx.GetMatrix()).reshape(3, 3)
    c, t = np.asarray(tx.GetCenter()), np.asarray(tx.GetTranslation())
    a[:3, :3], a[:3, 3] = m, t + c - m @ c
    return a


def _affine(mat: np.ndarray):
    import SimpleITK as sitk

    tx = sitk.AffineTransform(3)
    tx.SetMatrix(mat[:3, :3].ravel().tolist())
    tx.SetTranslation(mat[:3, 3].tolist())
    return tx


def _resample(img, ref, tx, interp=None):
    import SimpleITK as sitk

    return sitk.Resample(img, ref, tx, sitk.sitkLinear if interp is None else interp, 0.0, sitk.sitkFloat32)


def _to_classes(cls_img, ref, tx) -> np.ndarray:
    """The class map in the grid of ``ref`` (array axes x, y, z): largest smoothed class fraction."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(cls_img)
    fractions = []
    for k in range(1, len(LABEL_NAMES)):
        m = sitk.GetImageFromArray((arr == k).astype(np.float32))
        m.CopyInformation(cls_img)
        m = sitk.SmoothingRecursiveGaussian(m, 0.85)
        fractions.append(sitk.GetArrayFromImage(_resample(m, ref, tx)))
    fr = np.stack(fractions)
    bg = 1.0 - fr.sum(0)
    out = np.concatenate([bg[None], fr]).argmax(0).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(2, 1, 0))


def derive(src: str | Path, out: str | Path, log=print, cache: str | Path | None = None) -> Path:
    """Write the compact copy from the 20 files ``training_seg_<nn>.nii.gz`` in ``src`` to ``out``
    (``cache``: an ``.npz`` keeping the first round's transforms, reused when it is there)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    subjects, blobs = {}, {}
    for s in SUBJECTS:
        subjects[s], blobs[s] = _read_subject(src / f"training_seg_{s:02d}.nii.gz")
        if blobs[s] != SOURCE_BLOBS[s]:
            log(f"note: training_seg_{s:02d}.nii.gz differs from the recorded source file ({blobs[s]})")
    pseudo = {s: _pseudo_t1(c) for s, c in subjects.items()}
    log(f"read {len(subjects)} maps ({time.perf_counter() - t0:.0f} s)")

    # round 0: everyone to subject 1, in a grid centred on subject 1's brain
    ref0 = _grid(_centroid(subjects[1]))
    fixed0 = _resample(pseudo[1], ref0, sitk.Transform(3, sitk.sitkIdentity))
    first = {}
    if cache is not None and Path(cache).exists():
        with np.load(cache) as f:
            first = {int(s): _affine(m) for s, m in zip(f["subjects"], f["matrices"])}
        log(f"round 0: transforms read from {cache}")
    for s in SUBJECTS:
        if s in first:
            continue
        init = sitk.CenteredTransformInitializer(fixed0, pseudo[s], sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
        first[s], metric = _register(fixed0, pseudo[s], init, seed=s)
        log(f"round 0: subject {s:2d} metric {metric:.4f}")
    if cache is not None:
        np.savez(cache, subjects=np.asarray(SUBJECTS), matrices=np.asarray([_matrix(first[s]) for s in SUBJECTS]))
    # the common space: the inverse mean affine of the training subjects, so that it has their mean size and pose
    norm = np.linalg.inv(np.mean([_matrix(first[s]) for s in TRAIN_SUBJECTS], axis=0))
    first = {s: _matrix(first[s]) @ norm for s in SUBJECTS}  # q -> norm q (subject 1's frame) -> subject
    inv_norm = np.linalg.inv(norm)
    # oriented like MNI152: a rigid registration of the mean training image to the MNI152 template's
    # grey/white matter (no scaling: the space keeps the training subjects' mean size)
    tmp_ref = _grid(inv_norm[:3, :3] @ _centroid(subjects[1]) + inv_norm[:3, 3])
    mean_img = _mean_image([pseudo[s] for s in TRAIN_SUBJECTS], tmp_ref, [_affine(first[s]) for s in TRAIN_SUBJECTS])
    mni = _mni_pseudo_t1()
    orient, metric = _register(mni, mean_img, sitk.CenteredTransformInitializer(
        mni, mean_img, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS), seed=1000, rigid=True)
    log(f"oriented like MNI152 (rigid, correlation {metric:.4f})")
    first = {s: _affine(first[s] @ _matrix(orient)) for s in SUBJECTS}  # MNI-oriented point -> subject
    # template: the mean training pseudo-T1 in that space, on the final grid centred on its brain
    tmp_ref = _grid(_centroid_of(mni))
    template = sitk.GetArrayFromImage(_mean_image([pseudo[s] for s in TRAIN_SUBJECTS], tmp_ref,
                                                  [first[s] for s in TRAIN_SUBJECTS]))
    idx = np.argwhere(template > 0.3)[:, ::-1].mean(0)
    ref = _grid(tmp_ref.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    fixed = _mean_image([pseudo[s] for s in TRAIN_SUBJECTS], ref, [first[s] for s in TRAIN_SUBJECTS])
    log(f"template from subjects {TRAIN_SUBJECTS[0]}-{TRAIN_SUBJECTS[-1]} ({time.perf_counter() - t0:.0f} s)")

    labels, matrices, metrics = [], [], []
    for s in SUBJECTS:
        tx, metric = _register(fixed, pseudo[s], first[s], seed=100 + s)
        labels.append(_to_classes(subjects[s], ref, tx))
        matrices.append(_matrix(tx))
        metrics.append(metric)
        log(f"round 1: subject {s:2d} metric {metric:.4f}, brain voxels {(labels[-1] > 0).sum()}")
    labels = np.stack(labels)
    touching = [int(s) for s, lab in zip(SUBJECTS, labels)
                if lab[0].any() or lab[-1].any() or lab[:, 0].any() or lab[:, -1].any() or lab[:, :, -1].any()]
    if touching:
        log(f"note: the brain of subjects {touching} reaches the grid's border (other than the bottom)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:  # a file object: numpy would append ".npz" to another suffix
        np.savez_compressed(
            f, labels=labels, subjects=np.asarray(SUBJECTS, np.int16), spacing=np.float64(SPACING_MM),
            origin=np.asarray([-ref.GetOrigin()[0], -ref.GetOrigin()[1], ref.GetOrigin()[2]]),  # RAS mm of voxel 0
            class_names=np.asarray(list(LABEL_NAMES.values())), version=np.int16(DERIVE_VERSION),
            affines=np.asarray(matrices), metrics=np.asarray(metrics),
            source_blobs=np.asarray([blobs[s] for s in SUBJECTS]),
        )
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m gemini_pl.data.synthseg_derive --src DIR --out NPZ``."""
    p = argparse.ArgumentParser(prog="python -m gemini_pl.data.synthseg_derive", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder holding training_seg_01.nii.gz ... training_seg_20.nii.gz")
    p.add_argument("--out", default=str(Path(__file__).parent / "assets" / "synthseg_labels_2mm.npz"))
    p.add_argument("--cache", default=None, help="an .npz keeping the first round's transforms (reused when there)")
    a = p.parse_args(argv)
    derive(a.src, a.out, cache=a.cache)


if __name__ == "__main__":  # pragma: no cover
    main()
