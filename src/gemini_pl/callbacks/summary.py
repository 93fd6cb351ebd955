"""Printed end-of-run summaries."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class RegistrationSummary(L.Callback):
    """At the end of ``fit``, print the held-out registration result: the Dice of the warped moving
    labels next to the Dice without warping, and the folding percentage (from the last validation)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        if "val/reg_dice" not in m:
            rank_zero_info("RegistrationSummary: no validation metrics (validation did not run)")
            return
        n_pairs = _num_val_pairs(trainer)
        rows = [
            ("Dice without warping", 100 * float(m["val/reg_dice_unwarped"])),
            ("Dice after warping (GEMINI deformer)", 100 * float(m["val/reg_dice"])),
            ("Folding (% voxels det J <= 0)", float(m["val/folding_percent"])),
            ("SDlogJ", float(m["val/sdlogj"])),
        ]
        lines = [
            "",
            f"Held-out registration ({n_pairs} validation pairs, labels never seen in training):",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.2f} |" for k, v in rows],
            "",
        ]
        rank_zero_info("\n".join(lines))


def _num_val_pairs(trainer: L.Trainer) -> int | str:
    try:
        return sum(len(dl.dataset) for dl in trainer.val_dataloaders) if isinstance(trainer.val_dataloaders, list) else len(trainer.val_dataloaders.dataset)
    except (TypeError, AttributeError):
        return "?"
