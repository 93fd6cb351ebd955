"""Instance optimisation: a few optimiser steps per pair on top of a network's field (beyond the paper).

A learned deformer predicts φ in one pass; at test time the same objective it was trained with can
be minimised further for the very pair at hand, starting from that prediction (as VoxelMorph's
refinement, uniGradICON's and ConvexAdam's instance optimisation do). :func:`refine_flow` keeps the
network's field ``φ_net`` fixed and optimises a residual map composed *before* it:

    T = T_net ∘ exp(v),    φ = compose(φ_net, exp(v))      (``warped(p) = moving(T(p))``)

where ``v`` is a stationary velocity on a grid ``grid`` times coarser per axis (a smooth residual
with few parameters), optionally smoothed by a Gaussian of ``sigma`` coarse voxels (MONAI's
``GaussianFilter``, zero padding: the residual fades at the border; a preconditioner in the manner of
fluid regularisation), integrated by scaling and squaring and resampled to the image grid. ``v``
starts at zero, so step 0 returns the network's field; Adam (learning rate in voxels of the coarse
grid) minimises the training objective of one direction,

    NCC_M(warp(moving, φ), fixed) + λ_smooth · S(φ) + λ_jacobian · mean(relu(−det J_φ)),

with the module's window, sampling, smoother and weights. Optimising a field rather than the network
costs no copy of the weights, treats each pair of a batch on its own and works the same on whole
images and on sliding-window fields. The residual is a velocity, diffeomorphic in the continuous
limit: with the smoothness term the refined map adds no folds to the network's (tested with steps
of 0.5 voxel); without it, large steps can still fold the discrete field.

Coarse to fine (``levels`` > 1): the same residual ``v`` is first optimised against images
shrunk ``2^(levels−1)`` times per axis (:func:`~gemini_pl.spatial.pyramid.resize_image`, the
network's field and the residual brought to that grid by :func:`~gemini_pl.spatial.pyramid.resize_field`),
then on each finer grid, the finest last; the steps are shared evenly between the levels (the
coarsest takes the remainder). A coarse step costs about 2^ndim times less than a fine one and the
window of the NCC covers 2^level times more anatomy there, so a given number of steps is cheaper
and reaches further; ``levels=1`` is the single-resolution refinement.

Shapes: images (N, C, *S), flows (N, ndim, *S) in voxels, channel i along axis i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.networks.layers import GaussianFilter

from .errors import ConfigError
from .losses.registration import registration_terms
from .losses.topology import negative_jacobian
from .spatial import compose, integrate_velocity
from .spatial.pyramid import pyramid_shapes, resize_field, resize_image

__all__ = ["RefineObjective", "check_refinement", "refine_flow"]


@dataclass(frozen=True)
class RefineObjective:
    """The training objective of one registration direction, as the module was configured."""

    window: int = 9
    lambda_smooth: float = 0.4
    smoother: str = "gradient"
    lambda_jacobian: float = 0.0
    sampling: str = "exact"
    eps_per_voxel: bool = True


def check_refinement(steps: int, lr: float, grid: int, sigma: float = 0.0, levels: int = 1) -> None:
    """One-line :class:`ConfigError` naming the setting when a refinement setting is invalid."""
    if int(levels) != levels or levels < 1:
        raise ConfigError(f"model.refine_levels must be an integer >= 1 (1 = the image grid only), got {levels}")
    if not sigma >= 0:
        raise ConfigError(f"model.refine_sigma must be >= 0 (0 = no smoothing), got {sigma}")
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"model.refine_steps must be an integer >= 0, got {steps}")
    if not lr > 0:
        raise ConfigError(f"model.refine_lr must be > 0, got {lr}")
    if int(grid) != grid or grid < 1 or (int(grid) & (int(grid) - 1)):
        raise ConfigError(f"model.refine_grid must be a power of two >= 1 (1 = the image grid), got {grid}")


def refine_flow(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    flow: torch.Tensor,
    steps: int,
    lr: float = 0.5,
    grid: int = 2,
    objective: RefineObjective = RefineObjective(),
    integration_steps: int = 7,
    sigma: float = 1.0,
    levels: int = 1,
) -> torch.Tensor:
    """``flow`` (the network's φ warping ``moving`` onto ``fixed``) refined by ``steps`` Adam steps
    on a residual velocity; returns a detached float32 displacement (N, ndim, *S).

    ``sigma``: Gaussian smoothing of the residual velocity, in voxels of the coarse grid (0: none).
    ``levels``: image resolutions the steps are shared between, coarsest first (module doc).
    Runs with gradients enabled even under ``torch.no_grad`` / ``torch.inference_mode`` (evaluation
    loops); the inputs are not modified and receive no gradient.
    """
    check_refinement(steps, lr, grid, sigma, levels)
    if steps == 0:
        return flow
    shape = tuple(flow.shape[2:])
    coarse = pyramid_shapes(shape, int(math.log2(grid)) + 1)[-1]
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type=flow.device.type, enabled=False):
        m, f, base = (t.detach().clone().float() for t in (moving, fixed, flow))
        v = torch.zeros(flow.shape[0], flow.shape[1], *coarse, device=flow.device, requires_grad=True)
        opt = torch.optim.Adam([v], lr=lr)
        smooth = GaussianFilter(len(shape), sigma).to(flow.device) if sigma > 0 else (lambda t: t)

        def total(base_l: torch.Tensor) -> torch.Tensor:
            """The refined field on the grid of ``base_l`` (the network's field at one level)."""
            velocity = smooth(v)
            residual = resize_field(integrate_velocity(velocity, integration_steps, sampling=objective.sampling),
                                    base_l.shape[2:])
            return compose(base_l, residual, sampling=objective.sampling)

        shapes = pyramid_shapes(shape, int(levels))
        per_level = [int(steps) // len(shapes)] * len(shapes)
        per_level[-1] += int(steps) - sum(per_level)       # the coarsest level takes the remainder
        for shape_l, n in reversed(list(zip(shapes, per_level))):
            if n == 0:
                continue
            m_l, f_l, base_l = resize_image(m, shape_l), resize_image(f, shape_l), resize_field(base, shape_l)
            for _ in range(n):
                phi = total(base_l)
                terms = registration_terms(m_l, f_l, phi, objective.window, objective.sampling, objective.eps_per_voxel,
                                           objective.smoother)
                loss = terms["ncc"] + objective.lambda_smooth * terms["smooth"]
                if objective.lambda_jacobian > 0:
                    loss = loss + objective.lambda_jacobian * negative_jacobian(phi)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            return total(base).detach()
