"""Max-pooling by 2 whose CPU inference takes the maximum of the window's corners (same values, ~10× faster).

PyTorch's CPU ``max_pool2d/3d`` always computes the argmax indices autograd would need: 0.5–2 ms
for an activation of the 2D demo's size, 5–8 times the cost of the element-wise maximum of the
2^ndim strided views of the windows' corners (``benchmarks/pooling.py``). :class:`MaxPool2d` and
:class:`MaxPool3d` are subclasses of ``nn.MaxPool2d`` / ``nn.MaxPool3d`` (no parameters:
checkpoints and ``isinstance`` unchanged) that, with the kernel and stride 2 the networks use, take
that maximum on the CPU when no gradient is needed (evaluation, registration of one's own files,
every network pass and sliding window of
:meth:`~gemini_pl.modules.reg_eval.RegistrationEvaluation.register`): the same values, NaN
propagated alike, odd sizes dropping the last slice as ``max_pool`` does. Otherwise (training,
whose gradient the kernel's indices route; other devices and settings) they are PyTorch's kernel.

Shapes: (N, C, *S) → (N, C, *(S // 2)).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def corner_max(x: torch.Tensor) -> torch.Tensor:
    """Max over the 2^ndim-voxel windows (stride 2) of (N, C, *S): the maximum of their corners' strided views."""
    spatial = x.shape[2:]
    corners = [(slice(None), slice(None)) + tuple(slice(o, s - s % 2, 2) for o, s in zip(offset, spatial))
               for offset in itertools.product((0, 1), repeat=len(spatial))]
    out = x[corners[0]]
    for idx in corners[1:]:
        out = torch.maximum(out, x[idx])
    return out


class _CornerMaxOnCPU:
    """``forward`` of the two classes below: :func:`corner_max` where it gives ``max_pool``'s result
    and no gradient is needed, PyTorch's kernel otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (self.kernel_size in (2, (2,) * self.ndim) and self.stride in (2, (2,) * self.ndim)
                 and self.padding in (0, (0,) * self.ndim) and self.dilation in (1, (1,) * self.ndim)
                 and not self.ceil_mode and not self.return_indices)
        if plain and x.device.type == "cpu" and x.dim() == self.ndim + 2 and not (torch.is_grad_enabled() and x.requires_grad):
            return corner_max(x)
        return super().forward(x)


class MaxPool2d(_CornerMaxOnCPU, nn.MaxPool2d):
    """``nn.MaxPool2d`` with the CPU inference path of the module doc."""

    ndim = 2


class MaxPool3d(_CornerMaxOnCPU, nn.MaxPool3d):
    """``nn.MaxPool3d`` with the CPU inference path of the module doc."""

    ndim = 3
