"""The random affine of a training iteration, drawn from a module's augmentation settings.

Every module with spatial augmentation has the hyper-parameters ``spatial_dims``, ``rotation``,
``scale_range`` and ``per_axis_scale`` and an ``aug_generator`` (a CPU ``torch.Generator``,
checkpointed, offset by the DDP rank). The draw happens on the CPU and the (N, nd, nd + 1)
matrices go to the batch's device with a non-blocking copy: no host synchronisation in the step.
"""

from __future__ import annotations

import lightning as L
import torch

from ..spatial import random_affine

__all__ = ["draw_affine"]


def draw_affine(module: L.LightningModule, device: torch.device, batch: int = 1,
                per_axis_scale: bool | None = None) -> torch.Tensor:
    """``batch`` random affines (N, nd, nd + 1) from ``module.hparams`` and ``module.aug_generator``.

    ``per_axis_scale`` overrides the module's setting (None: ``module.hparams.per_axis_scale``).
    """
    hp = module.hparams
    return random_affine(
        batch, hp.spatial_dims, rotation=hp.rotation, scale=tuple(hp.scale_range),
        per_axis_scale=hp.per_axis_scale if per_axis_scale is None else per_axis_scale,
        generator=module.aug_generator,
    ).to(device, non_blocking=True)
