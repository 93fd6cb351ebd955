"""The random affine of a training iteration, drawn from a module's augmentation settings.

Every :class:`~gemini_pl.modules.core.GeminiModule` has the hyper-parameters ``spatial_dims``,
``rotation``, ``scale_range``, ``per_axis_scale``, ``augment_space`` and ``rotation_terms`` and an
``aug_generator`` (a CPU ``torch.Generator``, checkpointed, offset by the DDP rank). The draw
happens on the CPU and the (N, nd, nd + 1) matrices go to the batch's device with a non-blocking
copy: no host synchronisation in the step.

``augment_space``: ``"physical"`` (default) makes rotations rigid on the image's grid — in
physical units when the batch carries the voxel spacing, else in voxel units; ``"voxel"``
rotates zero-centred voxel coordinates whatever the spacing, as the published code does (its
sampling grid exactly; the same as ``physical`` for isotropic or absent spacing);
``"normalised"`` rotates normalised coordinates (an option, not the published behaviour: a shear
plus a stretch on a non-cubic grid, up to about 3 voxels at 20° on 99×117). See
:mod:`gemini_pl.spatial.affine`.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from ..spatial import random_affine

__all__ = ["draw_affine"]

AUGMENT_SPACES = ("physical", "voxel", "normalised")


def draw_affine(module: L.LightningModule, device: torch.device, batch: int = 1,
                per_axis_scale: bool | None = None, spatial_shape: Sequence[int] | None = None,
                spacing: torch.Tensor | None = None) -> torch.Tensor:
    """``batch`` random affines (N, nd, nd + 1) from ``module.hparams`` and ``module.aug_generator``.

    ``per_axis_scale`` overrides the module's setting (None: ``module.hparams.per_axis_scale``).
    ``spatial_shape`` / ``spacing`` (tensor order; spacing (nd,) or (N, nd)) of the images the
    affine is for: ``spatial_shape`` is used with ``augment_space: physical`` and ``voxel``,
    ``spacing`` with ``physical`` only.
    """
    hp = module.hparams
    space = hp.get("augment_space", "physical")
    physical, on_grid = space == "physical", space in ("physical", "voxel")
    if spacing is not None and physical:
        spacing = torch.as_tensor(spacing, dtype=torch.float64).reshape(-1, hp.spatial_dims)
        spacing = spacing[:1] if batch == 1 else spacing
    return random_affine(
        batch, hp.spatial_dims, rotation=hp.rotation, scale=tuple(hp.scale_range),
        per_axis_scale=hp.per_axis_scale if per_axis_scale is None else per_axis_scale,
        generator=module.aug_generator, spatial_shape=spatial_shape if on_grid else None,
        spacing=spacing if physical and spatial_shape is not None else None,
        rotation_terms=int(hp.get("rotation_terms", 1)),
    ).to(device, non_blocking=True)
