"""LightningModules: what one training/validation step does for each method."""

from .base import GeminiBase
from .pretrain import GeminiPretrain

__all__ = ["GeminiBase", "GeminiPretrain"]
