"""``gemini-pl register``: register one's own images with a trained deformer, and write the results.

Usage::

    gemini-pl register --fixed F --moving M --ckpt C --out DIR [--moving-label L] [--fixed-label L]

``F`` and ``M`` are image files (any format SimpleITK reads) or two folders of pairs matched by
sorted file name (a single fixed file serves every moving image: an atlas). Any checkpoint with a
deformer works (``GeminiPretrain``, ``GeminiSemi``, ``Registration``).

How a pair is registered (all grids in LPS world coordinates, :mod:`gemini_pl.apps.grid`):

1. the **model grid** ``M`` is the fixed image's grid as the training preprocessing made it
   (orientation / spacing / resize; otherwise the fixed grid itself); both images are
   intensity-preprocessed and resampled onto it (the moving one through the identity of world
   space: the images are assumed to be roughly aligned in the world, e.g. affinely);
2. the deformer gives φ on ``M`` in voxels of ``M`` (by sliding windows beyond the training
   patch), ``warped(p) = moving(p + φ(p))``;
3. composed onto the fixed grid ``F``: a fixed voxel's world point ``X`` has the ``M`` index
   ``p = M⁻¹(X)``; φ is interpolated there (linear, border values outside ``M``), and the
   **physical displacement** is ``u(X) = A_M · φ(p)`` (``A_M = direction · diag(spacing)`` of
   ``M``); the moving image is read at ``X + u(X)`` in its own voxels — linear for the image,
   nearest for the label (the project's sampler, :func:`~gemini_pl.apps.grid.sample`).

``u`` on ``F`` is exactly an ITK displacement field (vector image on the fixed grid, each voxel
the LPS offset in mm to the moving point), so
``sitk.Resample(moving_label, fixed, sitk.DisplacementFieldTransform(field), sitk.sitkNearestNeighbor)``
reproduces the written warped label (up to the rounding of points that fall halfway between two
voxels), and ANTs or ITK apply it as they apply their own fields.

Files written for a pair named ``<moving>_to_<fixed>`` in ``DIR``: ``_warped`` (moving image,
original intensities), ``_warped_label`` (with ``--moving-label``), ``_field`` (float64 vector
image), ``_jacobian`` (det(I + ∇φ) on the fixed grid), ``_overview.png`` (fixed, moving, warped),
``_grid.png`` (deformation grid), ``_jacobian.png`` (folds marked); ``report.md`` showing the
table and the pictures; a line per pair in ``summary.csv`` and on the console: folding % and SDlogJ of φ on the model grid (the metrics of
:mod:`gemini_pl.metrics.jacobian`, as in ``test/folding_percent``), Dice of the warped moving
label against the fixed label (with both labels; the mean over the fixed label's foreground
values, with the Dice before registration beside it).
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

from ..errors import DataError, GeminiError
from ..metrics.dice import dice_rows
from ..metrics.jacobian import folding_percent, jacobian_determinant, sdlogj
from . import pictures
from .checkpoint import Loaded, load_model
from .grid import (Grid, case_name, continuous_index, image_array, list_inputs, model_grid, preflight, read_image, sample,
                   slabs, to_image, write_image)
from .prepare import device_of, network_input

__all__ = ["PairResult", "label_dice", "main", "register_files", "register_pair"]


@dataclass
class PairResult:
    """What :func:`register_pair` computed; arrays in index order on the fixed grid."""

    name: str
    fixed_grid: Grid
    model_grid: Grid
    flow: torch.Tensor            # φ on the model grid, (n, *M.shape), voxels of M
    displacement: torch.Tensor    # u on the fixed grid, (n, *F.shape), mm (LPS)
    warped: torch.Tensor          # (*F.shape) float
    warped_label: torch.Tensor | None
    jacobian: torch.Tensor        # det on the fixed grid, (*F.shape)
    folding_percent: float
    sdlogj: float
    dice: float | None = None
    dice_unwarped: float | None = None

    def summary(self) -> str:
        text = f"{self.name}: folding {self.folding_percent:.3f} % | SDlogJ {self.sdlogj:.4f}"
        if self.dice is not None:
            text += f" | Dice {100 * self.dice:.2f} % (before {100 * self.dice_unwarped:.2f} %)"
        return text


def label_dice(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean Dice over the foreground values of ``target`` (label maps of one grid)."""
    p, t = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(target))
    values = [v for v in torch.unique(t).tolist() if v != 0]
    if not values:
        return float("nan")
    rows = dice_rows(torch.stack([p == v for v in values])[None], torch.stack([t == v for v in values])[None])
    return float(torch.nanmean(rows))


def _check_same_grid(label: sitk.Image, image: sitk.Image, label_path, image_path) -> None:
    if not Grid.of(label).same_as(Grid.of(image), tol=1e-4):
        raise DataError(f"label {label_path} is not on the grid of its image {image_path} (size, spacing, origin "
                        "and direction must match)")


def register_pair(loaded: Loaded, fixed: sitk.Image, moving: sitk.Image, moving_label: sitk.Image | None = None,
                  fixed_label: sitk.Image | None = None, name: str = "pair") -> PairResult:
    """Register ``moving`` onto ``fixed`` (see the module docstring); everything on the fixed grid."""
    model, spec, device = loaded.model, loaded.spec, loaded.device
    F, V = Grid.of(fixed), Grid.of(moving)
    p = spec.preprocessing
    M = model_grid(F, p.orientation, p.spacing, p.resize)
    x_f = network_input(fixed, spec, M, device, "the fixed image")
    x_m = network_input(moving, spec, M, device, "the moving image")
    with torch.inference_mode():
        flow = model.register(x_m, x_f)[0].double()          # (n, *M), voxels of M
        det_m = jacobian_determinant(flow[None])
        fold, sdl = float(folding_percent(flow[None])[0]), float(sdlogj(flow[None])[0])
    a_m = torch.from_numpy(M.matrix).to(device)
    raw = torch.from_numpy(image_array(moving, np.float64)).to(device)[None]
    lab = None if moving_label is None else torch.from_numpy(image_array(moving_label, np.float64)).to(device)[None]
    u = torch.empty((F.ndim, *F.shape), dtype=torch.float64)
    warped = torch.empty(F.shape, dtype=torch.float32)
    jac = torch.empty(F.shape, dtype=torch.float32)
    warped_label = None if lab is None else torch.empty(F.shape, dtype=torch.int64)
    before = torch.empty(F.shape, dtype=torch.int64) if lab is not None and fixed_label is not None else None
    for sl in slabs(F.shape):  # a slab of the last axis at a time: bounded memory for large volumes
        world = torch.from_numpy(F.voxel_world(sl)).to(device)      # (n, *slab)
        p_m = continuous_index(M, world)                             # fixed voxels in M's voxels
        u_s = torch.einsum("ij,j...->i...", a_m, sample(flow, p_m, "bilinear", "border"))  # mm, LPS
        q = continuous_index(V, world + u_s)                         # moving voxels read
        u[..., sl] = u_s.cpu()
        warped[..., sl] = sample(raw, q, "bilinear", "zeros")[0].float().cpu()
        jac[..., sl] = sample(det_m.double(), p_m, "bilinear", "border")[0].float().cpu()
        if lab is not None:
            warped_label[..., sl] = sample(lab, q, "nearest", "zeros")[0].round().to(torch.int64).cpu()
            if before is not None:
                unwarped = sample(lab, continuous_index(V, world), "nearest", "zeros")[0]
                before[..., sl] = unwarped.round().to(torch.int64).cpu()
    out = PairResult(name, F, M, flow.cpu(), u, warped, warped_label, jac, fold, sdl)
    if before is not None:
        target = image_array(fixed_label, np.int64)
        out.dice = label_dice(warped_label, target)
        out.dice_unwarped = label_dice(before, target)
    return out


def write_pair(result: PairResult, moving: sitk.Image, fixed: sitk.Image, out_dir: Path, suffix: str = ".nii.gz",
               pictures_on: bool = True, fixed_path: str | Path | None = None) -> dict[str, Path]:
    """Write a pair's images, field and pictures into ``out_dir`` (names: module docstring); the
    images carry the header geometry of ``fixed_path`` when it is a NIfTI file
    (:func:`~gemini_pl.apps.grid.write_image`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    F, name = result.fixed_grid, result.name
    files: dict[str, Path] = {}

    def put(key: str, array: torch.Tensor) -> None:
        files[key] = write_image(array, F, out_dir / f"{name}_{key}{suffix}", like=fixed_path)

    put("warped", result.warped.float())
    if result.warped_label is not None:
        put("warped_label", result.warped_label.to(torch.int32))
    files["field"] = out_dir / f"{name}_field{suffix}"
    sitk.WriteImage(to_image(result.displacement, F, vector=True), str(files["field"]), useCompression=suffix.endswith(".gz"))
    put("jacobian", result.jacobian.float())
    if pictures_on:
        files.update(_pictures(result, moving, fixed, out_dir))
    return files


def _pictures(result: PairResult, moving: sitk.Image, fixed: sitk.Image, out_dir: Path) -> dict[str, Path]:
    """The PNGs of a pair: one plane of the fixed grid (3D: the slice of the last axis through the
    warped label, else the middle one); the moving image is read there without deformation."""
    F, name = result.fixed_grid, result.name
    label = result.warped_label.numpy() if result.warped_label is not None else None
    k = pictures.middle_slice(F.shape, label)
    sl = slice(k, k + 1) if k is not None else None

    def plane(a: np.ndarray, sliced: bool = False) -> np.ndarray:
        """The shown plane of a volume on F (``sliced``: of one already cut to ``sl``)."""
        return a if k is None else a[..., 0 if sliced else k]

    world = torch.from_numpy(F.voxel_world(sl))
    moving_on_f = sample(torch.from_numpy(image_array(moving, np.float64))[None],
                         continuous_index(Grid.of(moving), world), "bilinear", "zeros")[0].numpy()
    fixed_arr = image_array(fixed)
    disp = result.displacement.numpy() if k is None else result.displacement.numpy()[..., sl]
    disp_vox = np.linalg.solve(F.matrix, disp.reshape(F.ndim, -1)).reshape(disp.shape)  # voxels of F
    spacing = F.spacing[:2]
    return {
        "overview_png": pictures.panels_png(
            [plane(fixed_arr), plane(moving_on_f, True), plane(result.warped.numpy())],
            ["fixed", "moving", "warped"] if k is None else [f"fixed (z={k})", "moving", "warped"],
            out_dir / f"{name}_overview.png", spacing=spacing),
        "grid_png": pictures.grid_png(plane(fixed_arr), plane(disp_vox, True), out_dir / f"{name}_grid.png", spacing=spacing),
        "jacobian_png": pictures.jacobian_png(plane(result.jacobian.numpy()), out_dir / f"{name}_jacobian.png",
                                              spacing=spacing),
    }


def _pairs(fixed: list[Path], moving: list[Path], what: tuple[str, str]) -> list[tuple[Path, Path]]:
    if len(fixed) == 1 and len(moving) > 1:
        fixed = fixed * len(moving)
    if len(fixed) != len(moving):
        raise DataError(f"{len(fixed)} {what[0]} but {len(moving)} {what[1]}: pairs are matched by sorted file name, "
                        "give as many of each (or one fixed image for all)")
    return list(zip(fixed, moving))


def _labels_of(images: list[Path], labels: str | Path | None, what: str) -> list[Path | None]:
    """The label file of each image (matched by sorted name; one label for one image used in every pair)."""
    if labels is None:
        return [None] * len(images)
    files = list_inputs(labels, f"{what} label")
    distinct = list(dict.fromkeys(images))
    if len(files) != len(distinct):
        raise DataError(f"{len(distinct)} {what} images but {len(files)} {what} labels: labels are matched to the "
                        "images by sorted file name, give one per image")
    of = dict(zip(sorted(distinct), files))
    return [of[i] for i in images]


def register_files(ckpt: str | Path, fixed: str | Path, moving: str | Path, out: str | Path,
                   moving_label: str | Path | None = None, fixed_label: str | Path | None = None,
                   device: str = "auto", model_class: str | None = None, suffix: str = ".nii.gz",
                   pictures_on: bool = True, echo=print, refine: int = 0, refine_lr: float | None = None,
                   refine_levels: int | None = None, cascade: int | None = None,
                   cascade_levels: int | None = None) -> list[PairResult]:
    """Register files or folders of pairs (see the module docstring); returns the results and
    writes everything under ``out``. ``cascade``: network passes per pair (default the checkpoint's
    ``cascade_passes``, else 1); ``cascade_levels``: pyramid levels of the passes after the first
    (default the checkpoint's ``cascade_levels``, else its ``pyramid_levels``). ``refine > 0``: that
    many instance-optimisation steps per pair on top of the network's field
    (:mod:`gemini_pl.refinement`), their time echoed per pair."""
    pairs = _pairs(list_inputs(fixed, "fixed"), list_inputs(moving, "moving"), ("fixed images", "moving images"))
    m_labels = _labels_of([p[1] for p in pairs], moving_label, "moving")
    f_labels = _labels_of([p[0] for p in pairs], fixed_label, "fixed")
    preflight([f for pair in pairs for f in pair] + [f for f in m_labels + f_labels if f is not None])
    loaded = load_model(ckpt, device_of(device), need="deformer", model_class=model_class)
    for note in loaded.notes:
        echo(f"note: {note}")
    if cascade is not None or cascade_levels is not None:
        loaded.model.set_cascade(loaded.model.cascade() if cascade is None else cascade, cascade_levels)
    passes = loaded.model.cascade()
    if passes > 1:
        later = loaded.model.later_levels()
        levels = "" if later == loaded.model.first_levels() else (
            f"; the passes after the first with {later} pyramid level(s)")
        echo(f"{passes} network passes per pair (each registers the moving image warped so far{levels})")
    elif cascade_levels is not None:
        echo("note: --cascade-levels has no effect with one network pass per pair (see --cascade)")
    if refine:
        loaded.model.set_refinement(refine, refine_lr, levels=refine_levels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    rows = []
    dims = loaded.spatial_dims
    for (f_path, m_path), ml_path, fl_path in zip(pairs, m_labels, f_labels):
        # preflight decoded every NIfTI whole already: no second full decode per file
        f_img, m_img = read_image(f_path, dims, deep=False), read_image(m_path, dims, deep=False)
        ml = fl = None
        if ml_path is not None:
            ml = read_image(ml_path, dims, label=True, deep=False)
            _check_same_grid(ml, m_img, ml_path, m_path)
        if fl_path is not None:
            fl = read_image(fl_path, dims, label=True, deep=False)
            _check_same_grid(fl, f_img, fl_path, f_path)
        name = f"{case_name(m_path)}_to_{case_name(f_path)}"
        res = register_pair(loaded, f_img, m_img, ml, fl if ml is not None else None, name=name)
        write_pair(res, m_img, f_img, out, suffix, pictures_on, fixed_path=f_path)
        echo(res.summary())
        if refine:
            levels = int(loaded.model.refine_settings()["levels"])
            echo(f"  refinement: {refine} steps" + (f" on {levels} resolutions" if levels > 1 else "")
                 + f", {loaded.model.last_refine_seconds:.2f} s")
        results.append(res)
        rows.append({"pair": name, "moving": str(m_path), "fixed": str(f_path), "folding_percent": res.folding_percent,
                     "sdlogj": res.sdlogj, "dice": "" if res.dice is None else 100 * res.dice,
                     "dice_unwarped": "" if res.dice_unwarped is None else 100 * res.dice_unwarped})
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _report(out, results, pictures_on)
    return results


def _report(out: Path, results: list[PairResult], pictures_on: bool) -> Path:
    """The ``register`` section of ``<out>/report.md``: the summary table and each pair's pictures."""
    from ..report import REPORT_NAME, image_link, write_section

    report = out / REPORT_NAME
    lines = ["## Registration", "", "| pair | folding % | SDlogJ | Dice % | Dice before % |", "|---|---|---|---|---|"]
    for r in results:
        dice = ("–", "–") if r.dice is None else (f"{100 * r.dice:.2f}", f"{100 * r.dice_unwarped:.2f}")
        lines.append(f"| {r.name} | {r.folding_percent:.3f} | {r.sdlogj:.4f} | {dice[0]} | {dice[1]} |")
    if pictures_on:
        for r in results:
            lines += ["", f"**{r.name}**", "", " ".join(
                image_link(report, out / f"{r.name}_{k}.png", f"{r.name} {k}") for k in ("overview", "grid", "jacobian"))]
    return write_section(report, "register", "\n".join(lines), title="gemini-pl register")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-pl register",
        description="Register moving images onto fixed images with a trained deformer; write the warped images, "
                    "the ITK displacement field (mm, LPS), the Jacobian map, pictures and a summary.")
    parser.add_argument("--fixed", required=True, help="fixed image file, or a folder of them (pairs by sorted name)")
    parser.add_argument("--moving", required=True, help="moving image file, or a folder of them")
    parser.add_argument("--ckpt", required=True, help="checkpoint of GeminiPretrain, GeminiSemi or Registration")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--moving-label", help="label of the moving image (file or folder): warped with nearest neighbours")
    parser.add_argument("--fixed-label", help="label of the fixed image (file or folder): Dice of the warped moving label")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--model-class", help="module class when the checkpoint does not name it")
    parser.add_argument("--suffix", default=".nii.gz", help="file type of the written images (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--no-pictures", action="store_true", help="write no PNG")
    parser.add_argument("--cascade", type=int, default=None, metavar="PASSES",
                        help="apply the network PASSES times per pair, each pass registering the moving image warped so "
                             "far and composing (PASSES times the network's time; default the checkpoint's cascade_passes, "
                             "else 1)")
    parser.add_argument("--cascade-levels", type=int, default=None, metavar="N",
                        help="pyramid levels of every pass after the first, with --cascade above 1 (fewer than the "
                             "checkpoint's pyramid_levels: cheaper passes; more: levels the network was not trained on; "
                             "default the checkpoint's cascade_levels, else its pyramid_levels)")
    parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                        help="instance optimisation: refine the network's field of each pair with STEPS Adam steps on the "
                             "training objective (e.g. 50; 0 = off, the default); the time it takes is printed per pair")
    parser.add_argument("--refine-lr", type=float, default=None, metavar="VOXELS",
                        help="step size of the refinement (default the checkpoint's refine_lr, else 0.5)")
    parser.add_argument("--refine-levels", type=int, default=None, metavar="N",
                        help="share the refinement steps between N image resolutions, coarsest first (default the "
                             "checkpoint's refine_levels, else 1: the full resolution only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``register`` on ``argv``; 0 on success, 2 on a usage or data error."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        register_files(args.ckpt, args.fixed, args.moving, args.out, args.moving_label, args.fixed_label,
                       args.device, args.model_class, args.suffix, not args.no_pictures, refine=args.refine,
                       refine_lr=args.refine_lr, refine_levels=args.refine_levels, cascade=args.cascade,
                       cascade_levels=args.cascade_levels)
    except GeminiError as exc:
        print(f"gemini-pl register: error: {exc}", file=sys.stderr)
        return 2
    return 0
