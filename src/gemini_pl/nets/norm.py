"""GroupNorm whose statistics use the whole GPU when there are few (sample, group) rows.

PyTorch's CUDA ``group_norm`` computes the moments of each (sample, group) row in ONE thread block.
The networks here normalise with ``C/8`` groups at batch 1–2, so a 3D 128³ activation of 32
channels is 4 rows of 16.7 M values: 4 blocks on a 132-SM H100, and that one kernel took 43 % of
a GEMINI pre-training step (``benchmarks/modules.py --paper --busy``, benchmarks/RESULTS.md).
``GroupNorm`` here is ``nn.GroupNorm`` (same parameters, checkpoints and ``isinstance``) whose CUDA
forward takes the moments from ``torch.var_mean`` (a reduction PyTorch splits over many blocks)
and applies one fused scale-and-shift; the backward is PyTorch's own ``native_group_norm_backward``
fed with those moments. On the CPU it is ``nn.GroupNorm`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class _GroupNormFunction(torch.autograd.Function):
    """y = (x − mean_g) · rstd_g · w_c + b_c over (N, C, *S); moments per (sample, group), in fp32."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
        x = x.contiguous()
        n, c = x.shape[:2]
        var, mean = torch.var_mean(x.view(n, groups, -1), dim=-1, correction=0)  # (N, G) each
        rstd = torch.rsqrt(var + eps)
        scale = rstd.repeat_interleave(c // groups, dim=1) * weight  # (N, C)
        shift = bias - mean.repeat_interleave(c // groups, dim=1) * scale
        view = (n, c) + (1,) * (x.dim() - 2)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return torch.addcmul(shift.view(view), x, scale.view(view))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c = x.shape[:2]
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            grad.contiguous(), x, mean, rstd, weight, n, c, x[0, 0].numel(), ctx.groups, mask)
        return dx, dw, db, None, None


def group_norm_split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """``F.group_norm(x, groups, weight, bias, eps)`` with the moments from ``torch.var_mean`` (any device)."""
    return _GroupNormFunction.apply(x, weight, bias, groups, eps)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (affine) whose CUDA forward uses :func:`group_norm_split`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.affine:
            return group_norm_split(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)
