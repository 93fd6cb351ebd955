"""ANTs SyN with cross-correlation (``antspyx``): a classical anchor.

:func:`syn_displacement` runs ``ants.registration(type_of_transform="SyNCC")`` — rigid, then
affine (mutual information), then SyN with a cross-correlation metric of radius 4, the settings
hard-coded by ANTsPy — and composes the whole transform (the affine stages and the SyN warp) into
one displacement field on the fixed grid with ANTs itself (``ants.apply_transforms(...,
compose=...)``), so that the field scored is the tool's own full transform. It is returned in this
project's convention (:mod:`gemini_pl.classical.fields`): the images are handed to ANTs with unit
spacing (physical units are voxels) and ANTsPy keeps the array axes in order (component ``k`` along
array axis ``k``).

The affine stages sample the images at random: ``random_seed`` fixes ANTs' seed (ANTsPy passes
``ants.config._random_seed`` on as ``antsRegistration --random-seed``; it is set for the call and
restored), so that a pair registers the same way every time. ``threads`` sets ITK's
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for the call (ITK may read it only once per process: the
benchmark sets it on the first call; one worker thread was observed there).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .fields import check_pair, physical_to_voxels, require

__all__ = ["SYN_DEFAULTS", "syn_displacement"]

SYN_DEFAULTS = {"type_of_transform": "SyNCC", "random_seed": 1}


def syn_displacement(fixed: np.ndarray, moving: np.ndarray, type_of_transform: str = SYN_DEFAULTS["type_of_transform"],
                     random_seed: int | None = SYN_DEFAULTS["random_seed"], threads: int | None = None,
                     return_transforms: bool = False):
    """ANTs' composed field warping ``moving`` onto ``fixed``: (*S), (*S) → (ndim, *S) voxels.

    ``threads``: ITK's thread count (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, set for the call).
    ``return_transforms``: also return ANTs' own warped moving image (``warpedmovout``).
    """
    fixed, moving = check_pair(fixed, moving, "ANTs SyN")
    ants = require("ants", "antspyx", "ANTs SyN")
    previous_threads = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    previous_seed = ants.config._random_seed
    if threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    ants.config._random_seed = random_seed  # ANTsPy passes it on as antsRegistration's --random-seed
    try:
        f, m = ants.from_numpy(fixed), ants.from_numpy(moving)  # unit spacing, identity direction
        with tempfile.TemporaryDirectory(prefix="gemini_syn_") as tmp:
            reg = ants.registration(f, m, type_of_transform=type_of_transform, outprefix=str(Path(tmp) / "reg_"))
            composed = ants.apply_transforms(f, m, reg["fwdtransforms"], compose=str(Path(tmp) / "composed_"))
            field = ants.image_read(composed)
            spacing = field.spacing
            field = field.numpy()  # (*S, ndim), component k along array axis k
    finally:
        ants.config._random_seed = previous_seed
        if threads:
            if previous_threads is None:
                os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
            else:
                os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = previous_threads
    phi = physical_to_voxels(field, spacing, reversed_axes=False)
    return (phi, reg["warpedmovout"].numpy()) if return_transforms else phi
