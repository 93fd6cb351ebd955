"""SimpleITK demons as a test-only module: the classical anchor scored by the same evaluation path.

``gemini-pl test --config experiments/demo_mni/demons.yaml`` registers every test pair with
:func:`gemini_pl.classical.demons_displacement` and scores it with
:class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation` — the same warps, Dice, HD95, folding %
and SDlogJ, the same per-case rows (``test_cases.csv``) as the learned registration modules, so
that the two can be compared pair by pair. There is nothing to train (``fit`` is refused).
"""

from __future__ import annotations

from typing import Any

import torch

from ..classical import DEMONS_DEFAULTS, demons_displacement
from ..errors import ConfigError
from .core import GeminiModule, Losses
from .reg_eval import RegistrationEvaluation

__all__ = ["DemonsRegistration"]


class DemonsRegistration(RegistrationEvaluation, GeminiModule):
    """Symmetric-forces demons (SimpleITK) per test pair, evaluated like every registration module.

    Args:
        iterations, smoothing_sigma, update_sigma, histogram_match: see :func:`~gemini_pl.classical.demons_displacement`.
        num_classes, label_kind, spatial_dims: linked from the data by the CLI.
    """

    network_parts = ("backbone",)  # unused: the core builds a network; demons keeps only the smallest
    sampling = "exact"

    def __init__(
        self,
        spatial_dims: int = 2,
        iterations: int = DEMONS_DEFAULTS["iterations"],
        smoothing_sigma: float = DEMONS_DEFAULTS["smoothing_sigma"],
        update_sigma: float = DEMONS_DEFAULTS["update_sigma"],
        histogram_match: bool = True,
        **kwargs: Any,
    ):
        kwargs.setdefault("widths", [8] * 9)
        super().__init__(spatial_dims=spatial_dims, **kwargs)
        self.hparams["sampling"] = "exact"

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """(N, 1, *S) pairs → demons displacement (N, ndim, *S) in voxels."""
        hp = self.hparams
        fields = [
            torch.from_numpy(demons_displacement(f[0].detach().cpu().numpy(), m[0].detach().cpu().numpy(),
                                                 hp.iterations, hp.smoothing_sigma, hp.histogram_match,
                                                 update_sigma=hp.update_sigma))
            for m, f in zip(moving, fixed)
        ]
        return torch.stack(fields).to(moving.device)

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        raise ConfigError("DemonsRegistration has nothing to train: run `gemini-pl test` with it")
        yield  # pragma: no cover
