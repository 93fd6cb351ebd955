"""Classical registration as a test-only module: the anchors scored by the same evaluation path.

``gemini-pl test --config experiments/demo_mni/demons.yaml`` registers every test pair with
:func:`gemini_pl.classical.demons_displacement` and scores it with
:class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation` — the same warps, Dice, HD95, folding %
and SDlogJ, the same per-case rows (``test_cases.csv``) as the learned registration modules, so
that the two can be compared pair by pair. :class:`ClassicalRegistration` does the same with any
method of :data:`gemini_pl.classical.CLASSICAL_METHODS` (``demons``, ``greedy``, ``syn``): the
label is warped by the tool's own field, and folding and SDlogJ are computed from it. There is
nothing to train (``fit`` is refused).
"""

from __future__ import annotations

from typing import Any

import torch

from ..classical import DEMONS_DEFAULTS, check_method, classical_displacement
from ..errors import ConfigError
from .core import GeminiModule, Losses
from .reg_eval import RegistrationEvaluation

__all__ = ["ClassicalRegistration", "DemonsRegistration"]


class ClassicalRegistration(RegistrationEvaluation, GeminiModule):
    """A classical registration tool per test pair, evaluated like every registration module.

    Args:
        method: ``demons`` (SimpleITK), ``greedy`` (picsl-greedy) or ``syn`` (ANTs SyN, CC).
        options: keyword arguments of the method's function (``gemini_pl.classical.<method>_displacement``).
        threads: CPU threads of the tool (None: the tool's default).
        num_classes, label_kind, spatial_dims: linked from the data by the CLI.
    """

    network_parts = ("backbone",)  # unused: the core builds a network; keep only the smallest
    sampling = "exact"

    def __init__(self, spatial_dims: int = 2, method: str = "demons", options: dict[str, Any] | None = None,
                 threads: int | None = None, **kwargs: Any):
        check_method(method)
        kwargs.setdefault("widths", [8] * 9)
        super().__init__(spatial_dims=spatial_dims, **kwargs)
        self.hparams["sampling"] = "exact"
        self.method, self.options = method, dict(options or {})
        if threads:
            self.options["threads"] = int(threads)

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """(N, 1, *S) pairs → the method's displacement (N, ndim, *S) in voxels."""
        fields = [
            torch.from_numpy(classical_displacement(self.method, f[0].detach().cpu().numpy(), m[0].detach().cpu().numpy(),
                                                    **self.options))
            for m, f in zip(moving, fixed)
        ]
        return torch.stack(fields).to(moving.device)

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        raise ConfigError(f"{type(self).__name__} has nothing to train: run `gemini-pl test` with it")
        yield  # pragma: no cover


class DemonsRegistration(ClassicalRegistration):
    """Symmetric-forces demons (SimpleITK) per test pair, evaluated like every registration module.

    Args:
        iterations, smoothing_sigma, update_sigma, histogram_match: see :func:`~gemini_pl.classical.demons_displacement`.
        threads: ITK threads (None: SimpleITK's default).
        num_classes, label_kind, spatial_dims: linked from the data by the CLI.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        iterations: int = DEMONS_DEFAULTS["iterations"],
        smoothing_sigma: float = DEMONS_DEFAULTS["smoothing_sigma"],
        update_sigma: float = DEMONS_DEFAULTS["update_sigma"],
        histogram_match: bool = True,
        threads: int | None = None,
        **kwargs: Any,
    ):
        options = {"iterations": iterations, "smoothing_sigma": smoothing_sigma, "update_sigma": update_sigma,
                   "histogram_match": histogram_match}
        super().__init__(spatial_dims=spatial_dims, method="demons", options=options, threads=threads, **kwargs)
