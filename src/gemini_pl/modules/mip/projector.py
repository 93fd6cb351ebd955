"""The MLP heads of the global self-supervised methods (projectors, predictors, classifiers).

:func:`mlp` ``([d0, d1, …, dk])``: ``Linear(d0, d1) → [BN] → ReLU → … → Linear(d_{k−1}, dk) [→ BN]``,
the form of SimCLR's, MoCo v2's, BYOL's and SimSiam's heads (BatchNorm1d on hidden layers when
``batch_norm``; on the output too with ``last_bn``, SimSiam's projector). Shapes (N, d0) → (N, dk).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ...errors import ConfigError

__all__ = ["mlp"]


def mlp(dims: Sequence[int], batch_norm: bool = True, last_bn: bool = False) -> nn.Sequential:
    """An MLP through ``dims`` (at least two entries)."""
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ConfigError(f"an MLP head needs at least two positive sizes, got {dims}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=not (batch_norm and (not last or last_bn))))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(b))
    return nn.Sequential(*layers)
