"""Losses of GEMINI (docs/METHOD.md §3): masked LNCC (GVS), smoothness, masked cosine (GSS), heads."""

from .gemini import GeminiWeights, gemini_loss, gss_terms, gvs_term
from .regularisation import SMOOTHERS, bending_energy, regulariser, smoothness
from .registration import registration_terms, warped_ncc
from .restoration import restoration_loss
from .segmentation import class_balanced_ce, sigmoid_seg_loss, soft_dice_loss, softmax_seg_loss
from .similarity import box_sum, local_ncc_map, masked_cosine, masked_lncc
from .topology import inverse_consistency, negative_jacobian, topology_terms

__all__ = [
    "SMOOTHERS",
    "GeminiWeights",
    "bending_energy",
    "inverse_consistency",
    "negative_jacobian",
    "regulariser",
    "topology_terms",
    "box_sum",
    "class_balanced_ce",
    "gemini_loss",
    "gss_terms",
    "gvs_term",
    "local_ncc_map",
    "masked_cosine",
    "masked_lncc",
    "registration_terms",
    "restoration_loss",
    "sigmoid_seg_loss",
    "smoothness",
    "soft_dice_loss",
    "softmax_seg_loss",
    "warped_ncc",
]
