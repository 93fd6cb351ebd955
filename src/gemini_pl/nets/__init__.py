"""Networks: the U-Net backbone, the deformer, the heads and :class:`GeminiNet` (docs/METHOD.md §1)."""

from .backbone import DEFAULT_WIDTHS, UNetBackbone
from .deformer import DEFAULT_DEFORMER_WIDTHS, FLOW_INITS, Deformer
from .gemini_net import GeminiNet, load_state_dict_file, official_to_ours
from .head import make_head

__all__ = [
    "DEFAULT_DEFORMER_WIDTHS",
    "DEFAULT_WIDTHS",
    "Deformer",
    "FLOW_INITS",
    "GeminiNet",
    "UNetBackbone",
    "load_state_dict_file",
    "make_head",
    "official_to_ours",
]
