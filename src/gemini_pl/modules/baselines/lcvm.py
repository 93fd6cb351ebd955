"""LC-VM: VoxelMorph with the auxiliary label Dice term (Balakrishnan et al., TMI 2019), the "LC-VM"
row of Table II.

VoxelMorph's "auxiliary data" variant: the registration loss of a pair whose two images are both
labeled adds ``γ·(1 − Dice(warp(y_moving, φ), y_fixed))`` (soft Dice of the one-hot labels warped
with the same field, foreground channels). Training batches (``data.train_mode: pairs+labeled``):
the unlabeled pairs with the image terms only, and the labeled samples of the batch paired with
each other (i → i+1 mod B, see :class:`~gemini_pl.modules.Registration`) with the Dice term too —
so the batch needs at least two labeled samples (``data.batch_size: 2``); fewer is refused (the
Dice term would silently be missing). Both directions of each pair, as the VM row.

Weight: ``γ = 1`` — "LC-VoxelMorph (λ = 1)", the setting He et al. compare with (PC-Reg-RT, JBHI
2021, abstract), relative to the image term of weight 1. Segmentation of a test case is the VM
row's: every labeled atlas registered onto it, warped labels fused by majority vote
(:class:`~.vm_atlas.VMAtlas`).

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer instead of
VoxelMorph's U-Net, with the masked LNCC + 0.4·smoothness of the VM row (VoxelMorph: NCC and its own
λ); two labeled samples per iteration pair up (VoxelMorph-LC: every labeled pair).
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .vm_atlas import VMAtlas

__all__ = ["LCVMAtlas"]


class LCVMAtlas(VMAtlas):
    """VM atlas registration + the label Dice term on labeled pairs (``lambda_dice``, γ = 1)."""

    def __init__(self, *args: Any, lambda_dice: float = 1.0, **kwargs: Any):
        super().__init__(*args, lambda_dice=lambda_dice, **kwargs)

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        image = batch.get("image")
        if self.hparams.lambda_dice > 0 and (image is None or batch.get("label") is None or image.shape[0] < 2):
            raise ConfigError(
                f"LCVMAtlas pairs the labeled samples of a batch for its Dice term and needs at least 2 of them, got "
                f"{0 if image is None else image.shape[0]} (keys {sorted(batch)}); set data.train_mode: pairs+labeled "
                "and data.batch_size: 2 (or labeled with labeled_batch_size >= 2)"
            )
        return super().prepare_batch(batch)
