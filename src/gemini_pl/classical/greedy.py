"""Greedy (``picsl-greedy``, the PICSL greedy diffeomorphic registration): a classical anchor.

:func:`greedy_displacement` registers ``moving`` onto ``fixed`` (2D or 3D arrays of one shape, on
one voxel grid) with Greedy's deformable mode — by default no affine stage: the pairs this project
registers are already in one template space — and returns the displacement in this project's
convention (:mod:`gemini_pl.classical.fields`). The images are handed to Greedy as SimpleITK
images of unit spacing, so that its physical units are voxels; its warp maps each fixed point to
its moving point with components in (x, y[, z]) order, the reverse of the array axes.

The settings (:data:`GREEDY_DEFAULTS`): normalised cross-correlation over a (2r+1)^ndim window of
radius ``radius`` voxels, three levels of ``iterations``, Gaussian smoothing of the gradient
(``smooth_pre``) and of the field (``smooth_post``) in voxels — ``-m NCC 2x2 -n 100x50x20
-s 1.5vox 0.5vox`` in 2D. Two of Greedy's own defaults are changed: it adds white noise to the
images for NCC from a clock-seeded generator (``-seed 0``), so a fixed ``seed`` makes a pair
register the same way every time; and it rounds the warp it writes to 0.1 voxel (``-wp 0.1``), so
``warp_precision=0`` keeps the field it computed.

``affine=True`` runs Greedy's affine stage first (``-a -dof 12``, the same metric and iterations)
and returns the composition of the affine map and the deformable warp, composed by Greedy itself
(``-rf fixed -r warp affine -rc composed``), as one field.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .fields import check_pair, physical_to_voxels, require

__all__ = ["GREEDY_DEFAULTS", "greedy_command", "greedy_displacement"]

GREEDY_DEFAULTS = {"metric": "NCC", "radius": 2, "iterations": (100, 50, 20), "smooth_pre": 1.5, "smooth_post": 0.5,
                   "seed": 1, "warp_precision": 0.0}


def greedy_command(ndim: int, metric: str = GREEDY_DEFAULTS["metric"], radius: int = GREEDY_DEFAULTS["radius"],
                   iterations: Sequence[int] = GREEDY_DEFAULTS["iterations"],
                   smooth_pre: float = GREEDY_DEFAULTS["smooth_pre"], smooth_post: float = GREEDY_DEFAULTS["smooth_post"],
                   seed: int = GREEDY_DEFAULTS["seed"], warp_precision: float = GREEDY_DEFAULTS["warp_precision"],
                   threads: int | None = None, stage: str = "deformable") -> str:
    """The greedy command line of one registration of the images ``fixed``, ``moving`` (the names of
    the Python API's keyword images): ``stage="deformable"`` into the warp ``warp`` (after the
    affine map ``affine`` when there is one: add ``-it affine``), ``stage="affine"`` into ``affine``."""
    if ndim not in (2, 3):
        raise ValueError(f"greedy registers 2D or 3D images, got ndim={ndim}")
    metric = metric.upper()
    if metric not in ("NCC", "SSD", "MI", "NMI", "WNCC"):
        raise ValueError(f"unknown greedy metric {metric!r}")
    m = f"{metric} {'x'.join([str(int(radius))] * ndim)}" if metric in ("NCC", "WNCC") else metric
    common = f"-m {m} -n {'x'.join(str(int(i)) for i in iterations)}"
    if stage == "affine":
        cmd = f"-d {ndim} -V 0 -a -dof 12 -i fixed moving -o affine {common} -seed {int(seed)}"
    elif stage == "deformable":
        cmd = (f"-d {ndim} -V 0 -i fixed moving -o warp {common} -s {float(smooth_pre):g}vox {float(smooth_post):g}vox "
               f"-seed {int(seed)} -wp {float(warp_precision):g}")
    else:
        raise ValueError(f"greedy stage must be 'affine' or 'deformable', got {stage!r}")
    return cmd + (f" -threads {int(threads)}" if threads else "")


def greedy_displacement(fixed: np.ndarray, moving: np.ndarray, metric: str = GREEDY_DEFAULTS["metric"],
                        radius: int = GREEDY_DEFAULTS["radius"], iterations: Sequence[int] = GREEDY_DEFAULTS["iterations"],
                        smooth_pre: float = GREEDY_DEFAULTS["smooth_pre"], smooth_post: float = GREEDY_DEFAULTS["smooth_post"],
                        seed: int = GREEDY_DEFAULTS["seed"], warp_precision: float = GREEDY_DEFAULTS["warp_precision"],
                        threads: int | None = None, affine: bool = False, return_tool: bool = False):
    """Greedy's field warping ``moving`` onto ``fixed``: (*S), (*S) → (ndim, *S) voxels.

    ``seed``: Greedy's random seed (0: from the clock, a different field every call).
    ``affine``: an affine stage first; the field returned is then the composed map.
    ``return_tool``: also return the Greedy object, which still holds ``fixed``, ``moving``,
    ``warp`` and, with ``affine``, ``affine`` (for reslicing with Greedy itself, e.g. ``-rf fixed
    -rm moving out -r warp``, or ``-r warp affine``).
    """
    fixed, moving = check_pair(fixed, moving, "greedy")
    sitk = require("SimpleITK", "SimpleITK", "greedy")
    picsl_greedy = require("picsl_greedy", "picsl-greedy", "greedy")
    tool = (picsl_greedy.Greedy2D if fixed.ndim == 2 else picsl_greedy.Greedy3D)()
    log = io.StringIO()  # greedy prints every iteration's energy
    images = {"fixed": sitk.GetImageFromArray(fixed), "moving": sitk.GetImageFromArray(moving)}
    args = (fixed.ndim, metric, radius, iterations, smooth_pre, smooth_post, seed, warp_precision, threads)
    deformable = greedy_command(*args)
    if affine:
        tool.execute(greedy_command(*args, stage="affine"), out=log, err=log, affine=None, **images)
        tool.execute(deformable + " -it affine", out=log, err=log, warp=None)
        tool.execute(f"-d {fixed.ndim} -V 0 -rf fixed -r warp affine -rc composed -wp {float(warp_precision):g}",
                     out=log, err=log, composed=None)
        warp = tool["composed"]
    else:
        tool.execute(deformable, out=log, err=log, warp=None, **images)
        warp = tool["warp"]
    phi = physical_to_voxels(sitk.GetArrayFromImage(warp), warp.GetSpacing(), reversed_axes=True)
    return (phi, tool) if return_tool else phi
