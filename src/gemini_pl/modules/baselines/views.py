"""Two views of an image for the dense contrastive baselines (DenseCL, PixPro, VADeR).

Each view is a **random resized crop** of the image (with a random flip of the last axis), drawn
as a known affine θ in ``F.affine_grid`` convention (``align_corners=True``): a view's normalised
point u shows the image's normalised point ``p = θ·[u; 1]``. Crops have no rotation, so θ is
diagonal: ``p_i = s_i·u_i + c_i`` with ``|s_i|`` the crop's relative side and ``c_i`` its centre
(the crop lies inside the image: ``|c_i| + |s_i| ≤ 1``). Two views of one image then correspond
through ``θ_1⁻¹ ∘ θ_2`` (:func:`view_to_view`), which is how PixPro's and VADeR's positives and the
validity of a point are computed, with no search.

The **photometric jitter** is that of the papers (MoCo v2 / BYOL's colour augmentation) reduced to
a grey-level image: brightness ×U(1 − b, 1 + b) and contrast (blend with the image mean)
×U(1 − c, 1 + c), applied together with probability ``jitter_p``; Gaussian blur with σ ~ U(σ_min,
σ_max) voxels with probability ``blur_p``; solarisation about the image's mid-range with
probability ``solarize_p``. Colour-only operations (hue, saturation, grey-scale) have no grey-level
counterpart and are left out. Draws use the module's checkpointed CPU generator; the images are
transformed on their device without host reads.

Axis order: θ's rows and columns are (x, y[, z]) = the tensor's spatial axes reversed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["crop_affines", "view_to_view", "overlap_points", "cell_centres", "photometric", "gather_points"]


def crop_affines(n: int, nd: int, scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random resized crops (n, nd, nd + 1), float32 on the CPU.

    The crop's area (volume) fraction is U(scale); its aspect ratios exp(a_i − mean a), a_i ~
    U(±½·log ratio) (in 2D the width/height ratio spans ``ratio`` as torchvision's); sides are capped
    at 1 (torchvision retries instead) and the centre is uniform over the positions inside the image.
    With ``flip`` the x axis is mirrored with probability ½ (``RandomHorizontalFlip``).
    """
    lo, hi = float(scale[0]), float(scale[1])
    area = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    half = 0.5 * math.log(float(ratio[1]) / float(ratio[0]))
    a = (torch.rand(n, nd, generator=generator, dtype=torch.float64) * 2 - 1) * half
    side = (area[:, None] ** (1.0 / nd) * torch.exp(a - a.mean(1, keepdim=True))).clamp(max=1.0)
    centre = (torch.rand(n, nd, generator=generator, dtype=torch.float64) * 2 - 1) * (1 - side)
    sign = torch.ones(n, nd, dtype=torch.float64)
    if flip:
        sign[:, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    theta = torch.zeros(n, nd, nd + 1, dtype=torch.float64)
    theta[:, :, :nd] = torch.diag_embed(side * sign)
    theta[:, :, nd] = centre
    return theta.float()


def _split(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(linear part (n, nd, nd), translation (n, nd)) of affines (n, nd, nd + 1)."""
    return theta[..., :-1], theta[..., -1]


def view_to_view(theta_from: torch.Tensor, theta_to: torch.Tensor) -> torch.Tensor:
    """The affine that resamples a tensor on view ``from``'s grid onto view ``to``'s grid:
    ``θ_from⁻¹ ∘ θ_to`` (a point u of view ``to`` reads view ``from`` at ``θ_from⁻¹(θ_to·[u; 1])``)."""
    a_f, t_f = _split(theta_from.double())
    a_t, t_t = _split(theta_to.double())
    inv = torch.linalg.inv(a_f)
    lin = inv @ a_t
    trans = (inv @ (t_t - t_f)[..., None])[..., 0]
    return torch.cat([lin, trans[..., None]], -1).to(theta_to.dtype)


def overlap_points(theta_1: torch.Tensor, theta_2: torch.Tensor, m: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m`` image points per image drawn uniformly in the overlap of two crops, in each view's
    normalised coordinates: (u_1 (n, m, nd), u_2 (n, m, nd), valid (n,) float: the crops overlap).

    Crops are axis-aligned boxes, so the overlap is the box ``[max lo, min hi]`` per axis.
    """
    a1, t1 = _split(theta_1.double())
    a2, t2 = _split(theta_2.double())
    s1, s2 = a1.diagonal(dim1=-2, dim2=-1).abs(), a2.diagonal(dim1=-2, dim2=-1).abs()
    lo = torch.maximum(t1 - s1, t2 - s2)
    hi = torch.minimum(t1 + s1, t2 + s2)
    valid = (hi > lo).all(-1)
    r = torch.rand(theta_1.shape[0], m, theta_1.shape[1], generator=generator, dtype=torch.float64)
    p = lo[:, None] + r * (hi - lo).clamp(min=0)[:, None]
    u1 = (p - t1[:, None]) / a1.diagonal(dim1=-2, dim2=-1)[:, None]
    u2 = (p - t2[:, None]) / a2.diagonal(dim1=-2, dim2=-1)[:, None]
    return u1.float().clamp(-1, 1), u2.float().clamp(-1, 1), valid.float()


def cell_centres(theta: torch.Tensor, grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (n, P, nd) in image coordinates of a view's feature-map cells (``grid`` cells per
    spatial axis, tensor order, P = their product, flattened in tensor order), and the diagonal
    (n,) of one cell in image coordinates (PixPro's bin diagonal). The cells partition the view's
    [−1, 1] extent evenly."""
    nd = len(grid)
    axes = [(2 * torch.arange(g, dtype=torch.float64) + 1) / g - 1 for g in grid]   # tensor order
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, nd).flip(-1)   # (P, nd) in x, y, z order
    a, t = _split(theta.double())
    centres = torch.einsum("nij,pj->npi", a, mesh) + t[:, None]
    cell = torch.tensor([2.0 / g for g in reversed(list(grid))], dtype=torch.float64)
    diag = (a @ cell).norm(dim=-1)
    return centres.float(), diag.float()


def gather_points(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Values of ``t`` (N, C, *S) at the voxels nearest to normalised points u (N, M, nd) (x, y, z
    order, ``align_corners=True``): (N, C, M)."""
    size = torch.tensor(list(reversed(t.shape[2:])), device=t.device, dtype=torch.float32)
    idx = ((u.to(t.device, torch.float32) + 1) / 2 * (size - 1)).round().long()
    idx = torch.minimum(idx.clamp(min=0), (size - 1).long())
    strides = torch.ones_like(size, dtype=torch.long)
    for i in range(1, len(size)):
        strides[i] = strides[i - 1] * size[i - 1].long()
    flat = (idx * strides).sum(-1)   # (N, M)
    feats = t.flatten(2)
    return torch.gather(feats, 2, flat[:, None].expand(-1, feats.shape[1], -1))


def _gaussian_taps(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, 2r + 1) normalised Gaussian taps; σ = 0 gives the identity tap."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    w = torch.exp(-0.5 * (x[None] / sigma.clamp(min=1e-6)[:, None]) ** 2)
    w = torch.where(sigma[:, None] > 0, w, (x[None] == 0).float())
    return w / w.sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one σ per sample (σ on the CPU; 0: unchanged), reflect padding."""
    n, c, *spatial = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max()))) if sigma.numel() else 1
    taps = _gaussian_taps(sigma, radius).repeat_interleave(c, 0).to(x)   # (n·c, 2r + 1)
    y = x.reshape(1, n * c, *spatial)
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    for axis in range(len(spatial)):
        shape = [n * c, 1] + [1] * len(spatial)
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * len(spatial)
        pad[2 * (len(spatial) - 1 - axis)] = pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        mode = "reflect" if spatial[axis] > radius else "replicate"
        y = conv(F.pad(y, pad, mode=mode), taps.reshape(shape), groups=n * c)
    return y.reshape(x.shape)


def photometric(x: torch.Tensor, generator: torch.Generator | None, brightness: float, contrast: float, jitter_p: float,
                blur_p: float, blur_sigma: Sequence[float], solarize_p: float) -> torch.Tensor:
    """Brightness/contrast jitter (probability ``jitter_p``), Gaussian blur (``blur_p``) and
    solarisation (``solarize_p``) of each sample of x (N, C, *S), in that order."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    on = torch.rand(n, generator=generator) < jitter_p
    gain = torch.where(on, u(1 - brightness, 1 + brightness), torch.ones(n))
    blend = torch.where(on, u(1 - contrast, 1 + contrast), torch.ones(n))
    sigma = torch.where(torch.rand(n, generator=generator) < blur_p, u(*blur_sigma), torch.zeros(n))
    solar = torch.rand(n, generator=generator) < solarize_p
    x = x * gain.reshape(shape).to(x)
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    x = (x - mean) * blend.reshape(shape).to(x) + mean
    if bool((sigma > 0).any()):   # CPU draws: no host read of the images
        x = _blur(x, sigma)
    if bool(solar.any()):
        dims = tuple(range(1, x.dim()))
        lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        x = torch.where(solar.reshape(shape).to(x.device) & (x >= (lo + hi) / 2), lo + hi - x, x)
    return x
