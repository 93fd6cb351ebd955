"""Image and feature similarity losses of GEMINI: masked local NCC (GVS) and masked cosine (GSS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _box_pass(x: torch.Tensor, window: int) -> torch.Tensor:
    """The separable box sum itself: one grouped 1D convolution per axis, zero padding.

    On CPU in 3D the first axis is summed through a transposed view (as a last-axis convolution):
    PyTorch sends a (window, 1, 1) kernel to a CPU kernel 3–8× slower than a (1, 1, window) one.
    """
    ndim = x.dim() - 2
    conv = (F.conv2d, F.conv3d)[ndim - 2]
    channels = x.shape[1]
    for axis in range(ndim):
        along = ndim - 1 if (ndim == 3 and axis == 0 and x.device.type == "cpu") else axis  # the kernel's axis
        shape = [channels, 1] + [1] * ndim
        shape[2 + along] = window
        padding = [0] * ndim
        padding[along] = window // 2
        kernel = x.new_ones(shape)
        if along != axis:
            x = conv(x.transpose(2 + axis, 2 + along), kernel, padding=tuple(padding), groups=channels)
            x = x.transpose(2 + axis, 2 + along)
        else:
            x = conv(x, kernel, padding=tuple(padding), groups=channels)
    return x


class _BoxSum(torch.autograd.Function):
    """Box sum whose backward is the box sum of the gradient: with an odd window and zero padding
    the operator is self-adjoint, and one more forward pass is 2–4× cheaper on CPU than the
    convolutions' own backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:
        ctx.window = window
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _box_pass(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # in the gradient's own dtype: a backward called inside an autocast region (Lightning's
        # manual_backward under 16-mixed) must not send the scaled gradient through float16
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return box_sum(grad, ctx.window), None


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a ``window``^ndim box around each voxel, zero padding ``window // 2``.

    ``window`` must be odd (the box centred on the voxel). Separable: one 1D convolution per axis,
    each channel on its own. (N, C, *S) → (N, C, *S), in ``x``'s dtype (autocast does not apply,
    nor to the backward). Differentiable (to any order).
    """
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"the box window must be an odd integer >= 1, got {window}")
    return _BoxSum.apply(x, int(window))


def local_ncc_map(i: torch.Tensor, j: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Squared local normalised cross-correlation cc (docs/METHOD.md §3), (N, C, *S) × 2 → (N, 1, *S).

    The five box sums ΣI, ΣJ, ΣI², ΣJ², ΣIJ (per-channel sums averaged over channels) come from
    one grouped convolution pass in float32, with autocast disabled (they cancel).
    """
    ndim = i.dim() - 2
    n = float(window**ndim)
    with torch.autocast(device_type=i.device.type, enabled=False):
        i, j = i.float(), j.float()
        stacked = torch.stack([i, j, i * i, j * j, i * j], dim=1).mean(dim=2)  # (N, 5, *S)
        s_i, s_j, s_ii, s_jj, s_ij = box_sum(stacked, window).unbind(dim=1)
        u_i, u_j = s_i / n, s_j / n
        cross = s_ij - u_j * s_i - u_i * s_j + u_i * u_j * n
        var_i = s_ii - 2 * u_i * s_i + u_i * u_i * n
        var_j = s_jj - 2 * u_j * s_j + u_j * u_j * n
        return (cross * cross / (var_i * var_j + 1e-5)).unsqueeze(1)


def masked_lncc(
    i: torch.Tensor, j: torch.Tensor, mask: torch.Tensor | None = None, window: int = 9, eps: float = 1e-6,
    eps_per_voxel: bool = True,
) -> torch.Tensor:
    """GVS term ``1 − Σ(M·cc) / Σ(M + eps)`` (a scalar; 0 for identical images under a full mask).

    Args:
        i, j: images (N, C, *S).
        mask: validity mask (N, 1, *S) (a batch of 1 is broadcast) or ``None`` for all ones.
        window: box size per axis (9).
        eps, eps_per_voxel: ``Σ(M + eps)`` as published in 3D (default); with
            ``eps_per_voxel=False`` the denominator is ``ΣM + eps`` (the published 2D code, eps 1e-5).
    """
    cc = local_ncc_map(i, j, window)
    mask = torch.ones_like(cc) if mask is None else mask.float().expand_as(cc)
    denom = (mask + eps).sum() if eps_per_voxel else mask.sum() + eps
    return 1.0 - (mask * cc).sum() / denom


def masked_cosine(u: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``cos_M(u, v, M) = 1 − Σ_p M(p)·⟨û(p), v̂(p)⟩ / Σ_p M(p)`` (a scalar).

    u, v: features (N, C, *S), normalised along channels (norm floored at 1e-12); mask
    (N, 1, *S) (a batch of 1 is broadcast) or ``None``. Identical features give 0. An all-zero mask gives 1 (no evidence).
    """
    with torch.autocast(device_type=u.device.type, enabled=False):
        u, v = u.float(), v.float()
        # ⟨u, v⟩ / (max(|u|, 1e-12)·max(|v|, 1e-12)) from three channel sums (several times faster
        # than normalising both tensors on CPU); clamping |u|² below 1e-24 keeps zero vectors
        # (padding of warped features) at a zero gradient
        inv_u = (u * u).sum(1, keepdim=True).clamp_min(1e-24).rsqrt()
        inv_v = (v * v).sum(1, keepdim=True).clamp_min(1e-24).rsqrt()
        dot = (u * v).sum(1, keepdim=True) * inv_u * inv_v
        if mask is None:
            return 1.0 - dot.mean()
        mask = mask.float().expand_as(dot)
        return 1.0 - (mask * dot).sum() / mask.sum().clamp_min(1e-12)
