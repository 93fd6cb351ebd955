"""Slice-wise segmentation: a 2D GEMINI network fine-tuned and evaluated on 3D volumes, slice by slice.

Table III fine-tunes its 2D pre-trained network on the 3D tasks (KiPA22, CANDI) this way.
:class:`SliceWiseSegmentation` is a :class:`~gemini_pl.modules.Segmentation` whose data are 3D
(``spatial_dims: 3``, linked from the data; the 3D random affine of the iteration is applied to the
volume as in 3D fine-tuning) but whose network is 2D: each volume ``(N, C, S0, S1, S2)`` is cut
along spatial axis ``slice_axis`` into ``N·S_a`` images ``(C, ·, ·)``; training feeds the slices as
one batch (``slices_per_step`` of them drawn at random when set), evaluation segments every slice
(``slice_chunk`` at a time) and stacks the logits back into a volume, so the test metrics (Dice,
AVD, HD95 with the case's 3D spacing) are those of the whole volume. ``init_from`` is a 2D
checkpoint (the 2D pre-training's ``last.ckpt``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..errors import ConfigError
from ..nets import GeminiNet
from .core import GeminiModule, Losses
from .segment import Segmentation

__all__ = ["SliceWiseSegmentation", "to_slices", "from_slices"]


def to_slices(x: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, C, S0, S1, S2) → (N·S_axis, C, ·, ·): the slices along spatial ``axis``, volume by volume."""
    s = x.movedim(axis + 2, 1)
    return s.reshape(s.shape[0] * s.shape[1], *s.shape[2:])


def from_slices(y: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    """Inverse of :func:`to_slices`: (N·S, K, ·, ·) → (N, K, S0, S1, S2)."""
    return y.reshape(n, y.shape[0] // n, *y.shape[1:]).movedim(1, axis + 2)


class SliceWiseSegmentation(Segmentation):
    """Segmentation of 3D data with a 2D network, slice by slice (see the module doc).

    Args (beyond :class:`~gemini_pl.modules.Segmentation`'s):
        slice_axis: the spatial axis (0, 1, 2) the volumes are cut along (default the last).
        slices_per_step: slices drawn at random per training step (``None``: every slice of the batch).
        slice_chunk: slices per network call at evaluation.
    """

    def __init__(self, spatial_dims: int = 3, num_classes: int = 2, slice_axis: int = 2, slices_per_step: int | None = None,
                 slice_chunk: int = 32, **kwargs: Any):
        if spatial_dims != 3:
            raise ConfigError(f"SliceWiseSegmentation segments 3D data slice by slice; the data are {spatial_dims}D "
                              "(use Segmentation)")
        if slice_axis not in (0, 1, 2):
            raise ConfigError(f"model.slice_axis must be 0, 1 or 2, got {slice_axis}")
        if slices_per_step is not None and slices_per_step < 1:
            raise ConfigError(f"model.slices_per_step must be >= 1 or null, got {slices_per_step}")
        super().__init__(spatial_dims=spatial_dims, num_classes=num_classes, **kwargs)
        net = {k: p.default for k, p in inspect.signature(GeminiModule.__init__).parameters.items()}
        net.update(kwargs)
        self.net = GeminiNet(2, net["in_channels"], num_classes, net["widths"], net["deformer_widths"], flow_init=net["flow_init"])

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        axis = self.hparams.slice_axis
        image, label = to_slices(batch["image"], axis), to_slices(batch["label"], axis)
        k = self.hparams.slices_per_step
        if k is not None and k < image.shape[0]:
            pick = torch.randperm(image.shape[0], generator=self.aug_generator)[:k].to(image.device)
            image, label = image[pick], label[pick]
        yield "seg", {"total": self.seg_loss(self.net(image), label)}

    def segment_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Head logits of whole volumes (N, C, S0, S1, S2), every slice through the 2D network."""
        if image.dim() != 5:
            raise ConfigError(f"SliceWiseSegmentation expects 3D volumes (N, C, S0, S1, S2), got {tuple(image.shape)}")
        axis, chunk = self.hparams.slice_axis, max(1, int(self.hparams.slice_chunk))
        slices = to_slices(image, axis)
        out = torch.cat([self.net(slices[i:i + chunk]) for i in range(0, slices.shape[0], chunk)])
        return from_slices(out, image.shape[0], axis)
