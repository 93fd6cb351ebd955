"""Image restoration loss of GEMINI-MIP (docs/METHOD.md §3)."""

from __future__ import annotations

import torch


def restoration_loss(restored: torch.Tensor, target: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """``weight · mean((restored − target)²)``; both (N, C, *S). Computed in float32."""
    return weight * (restored.float() - target.float()).pow(2).mean()
