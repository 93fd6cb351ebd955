"""The experiment configs instantiate; the paper-scale ones point at data/README.md when the data is
absent; the phantom demo pipeline runs end to end (slow)."""

from __future__ import annotations

import pytest

from conftest import REPO
from gemini_pl.cli import cli_main
from gemini_pl.errors import DataError

DEMO_CONFIGS = sorted((REPO / "experiments" / "demo").glob("*.yaml"))
PAPER_CONFIGS = [REPO / "experiments" / f"gemini_{n}.yaml" for n in ("pretrain", "seg", "reg", "semi")]


@pytest.mark.parametrize("config", DEMO_CONFIGS + PAPER_CONFIGS, ids=lambda p: p.name)
def test_config_instantiates(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["--config", str(config), "--trainer.logger", "false"], run=False)
    assert cli.model is not None and cli.datamodule is not None
    name = type(cli.model).__name__
    assert name in ("GeminiPretrain", "Segmentation", "Registration", "GeminiSemi")
    if name in ("Segmentation", "GeminiSemi"):
        assert cli.datamodule.eval_mode == "cases"
    if config in PAPER_CONFIGS:
        assert cli.model.net.backbone.widths == (32, 64, 128, 256, 512, 256, 128, 64, 32)  # paper scale
        assert cli.model.hparams.lr == 1e-4
        # without the data, fit stops before training with a pointer to data/README.md
        with pytest.raises(DataError, match="data/README.md"):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)


@pytest.mark.slow
def test_demo_pipeline_quick(tmp_path, monkeypatch):
    """Every stage of ``make demo`` for a couple of iterations, and the table with every row, its
    selection policy and split."""
    from gemini_pl.demo import ALL_STAGES, run_pipeline

    monkeypatch.chdir(tmp_path)
    table = run_pipeline(tmp_path / "runs", quick=True, stages=ALL_STAGES)
    for row in ("U-Net Five (scratch)", "U-Net Five (scratch), 2x iterations", "U-Net Five fine-tuned", "GEMINI-Semi", "Registration: no warping",
                "Registration fine-tuned", "Registration (scratch)", "velocity field", "GEMINI-MIP pre-training"):
        assert row in table, row
    assert (tmp_path / "runs" / "results.md").read_text() == table
    assert (tmp_path / "runs" / "seg_gemini" / "results" / "test_summary.md").is_file()
    # the selection policy and the split (hash, counts) are stated; validation never used a test phantom
    assert "- selection: final weights (" in table and "/ val 4 / test 10)" in table, table
    summary = (tmp_path / "runs" / "seg_gemini" / "results" / "test_summary.md").read_text()
    assert "- selection: final weights" in summary and "train 5 labeled + 40 unlabeled / val 4 / test 10" in summary


@pytest.mark.slow
def test_demo_pipeline_full(tmp_path, monkeypatch):
    """``make demo`` as shipped (several minutes on 2 CPU cores)."""
    from gemini_pl.demo import run_pipeline

    monkeypatch.chdir(tmp_path)
    table = run_pipeline(tmp_path / "runs")
    assert "Claims (measured above):" in table
    assert "registration fine-tuned from GEMINI beats no warping" in table
