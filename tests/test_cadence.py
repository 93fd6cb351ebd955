"""The host-read cadence of the training steps follows the loggers' steps, counted across epochs."""

from __future__ import annotations

import lightning as L
import torch

from gemini_pl.modules.cadence import at_log_step


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.marked: list[int] = []   # global iteration numbers (1-based) where at_log_step was true
        self.iteration = 0

    def training_step(self, batch, batch_idx):
        self.iteration += 1
        if at_log_step(self._trainer, batch_idx):
            self.marked.append(self.iteration)
        loss = (self.w - batch[0]).pow(2).mean()
        self.log("probe", loss.detach(), on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_cadence_counts_iterations_across_epochs(tmp_path):
    """3 batches per epoch, log_every_n_steps 2, 3 epochs: the CSV logger writes at iterations 2, 4,
    6, 8 (the trainer counts across epochs); the cadence marks the same ones, not each epoch's
    second batch (2, 5, 8)."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(3.0)), batch_size=1)
    model = _Probe()
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(max_epochs=3, log_every_n_steps=2, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, data)
    import csv

    with open(f"{logger.log_dir}/metrics.csv") as f:
        logged = [int(r["step"]) + 1 for r in csv.DictReader(f) if r.get("probe")]
    assert logged == [2, 4, 6, 8]
    assert model.marked == logged
    assert at_log_step(None, 0) is True

