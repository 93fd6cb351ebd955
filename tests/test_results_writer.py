"""``ResultsWriter``'s test summary states which weights were tested (``selection``: "final weights",
"best val/seg_dice on N validation cases" — also when a later run tests the saved best checkpoint —
or the checkpoint file) and the split (hash, train/val/test counts)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import SMALL_WIDTHS
from gemini_pl.callbacks import ResultsWriter
from gemini_pl.data import GeminiDataModule
from gemini_pl.modules import Segmentation


def _run(tmp_path, phantom_root, name):
    dm = GeminiDataModule(root=str(phantom_root), dataset="phantom2d", train_mode="labeled", eval_mode="cases",
                          num_labeled=2, labeled_batch_size=2)
    writer = ResultsWriter(results_dir=str(tmp_path / name), print_summary=False)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/seg_dice", mode="max", save_last=True,
                           filename="best-{epoch}")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), max_epochs=1, limit_train_batches=1, limit_test_batches=2,
                        callbacks=[writer, ckpt])
    return dm, writer, ckpt, trainer


def _line(summary: str, key: str) -> str:
    return next(ln for ln in summary.splitlines() if ln.startswith(f"- {key}: "))[len(key) + 4:]


def test_summary_states_selection_and_split(tmp_path, phantom_root):
    model = Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS, lr=1e-3)
    dm, writer, ckpt, trainer = _run(tmp_path, phantom_root, "final")
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    summary = writer.summary_path.read_text()
    split = f"sha256 {dm.split_hash} (train 2 labeled + 6 unlabeled / val 4 / test 4)"
    assert _line(summary, "selection") == "final weights" and _line(summary, "split") == split
    best = ckpt.best_model_path
    assert best and "best-" in best
    trainer.test(model, datamodule=dm, ckpt_path=best)  # the best checkpoint of this run
    assert _line(writer.summary_path.read_text(), "selection") == "best val/seg_dice on 4 validation cases"
    # a later run (a fresh trainer, as `gemini-pl test --ckpt_path <best>`): read from the checkpoint file
    dm2, writer2, _, trainer2 = _run(tmp_path, phantom_root, "later")
    trainer2.test(Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS), datamodule=dm2, ckpt_path=best)
    assert _line(writer2.summary_path.read_text(), "selection") == "best val/seg_dice on 4 validation cases"
    last = str(tmp_path / "ckpt" / "last.ckpt")
    trainer2.test(Segmentation(spatial_dims=2, num_classes=6, widths=SMALL_WIDTHS), datamodule=dm2, ckpt_path=last)
    assert _line(writer2.summary_path.read_text(), "selection") == f"checkpoint {last}"
