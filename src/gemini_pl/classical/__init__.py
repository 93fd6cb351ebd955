"""Classical (non-learned) methods used as anchors next to the learned ones."""

from .demons import DEMONS_DEFAULTS, demons_displacement

__all__ = ["DEMONS_DEFAULTS", "demons_displacement"]
