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
    table = run_pipeline(tmp_path / "runs", quick=True, data="phantom", stages=[s for s in ALL_STAGES if s != "demons"])
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
    """The phantom demo as shipped (several minutes on 2 CPU cores)."""
    from gemini_pl.demo import run_pipeline

    monkeypatch.chdir(tmp_path)
    table = run_pipeline(tmp_path / "runs", data="phantom")
    assert "Claims (measured above;" in table
    assert "registration fine-tuned from GEMINI (A) beats no warping (B)" in table


@pytest.mark.slow
def test_demo_pipeline_mni_quick_two_seeds_in_parallel(tmp_path, monkeypatch):
    """The real-anatomy demo (default): every default stage, two seeds, two processes; the demons
    anchor and the paired claims over seeds are in the table."""
    pytest.importorskip("nilearn")
    from gemini_pl.demo import run_pipeline

    monkeypatch.chdir(tmp_path)
    table = run_pipeline(tmp_path / "runs", quick=True, seeds=[0, 1], jobs=2, data_root=tmp_path / "data")
    assert "MNI152-derived" in table and "- seeds: 0, 1" in table
    for row in ("U-Net Five (scratch)", "U-Net Five fine-tuned", "GEMINI-Semi", "Registration fine-tuned", "demons (classical anchor)"):
        assert row in table, row
    assert "beats SimpleITK demons (B)" in table and "over 2 seeds" in table
    for seed in (0, 1):
        assert (tmp_path / "runs" / f"seed{seed}" / "seg_gemini" / "results" / "test_cases.csv").is_file()


# ------------------------------------------------------------------ claims over seeds (no training)


def _result(name: str, dice: dict[str, float], **extra) -> "StageResult":
    from gemini_pl.demo import StageResult

    return StageResult(name, 10.0, rows=[{"case": c, "dice": str(v), **{k: str(x[c]) for k, x in extra.items()}}
                                         for c, v in dice.items()], steps=4, iterations=4, selection="final weights")


def test_paired_differences_match_cases_by_name():
    from gemini_pl.demo import paired_differences

    a = _result("semi", {"c1": 80.0, "c2": 70.0, "c3": 60.0})
    b = _result("seg_scratch", {"c3": 50.0, "c1": 82.0, "c4": 1.0})
    assert paired_differences(a, b, "dice", "dice") == [-2.0, 10.0]


def test_claim_verdict_over_seeds_hand_computed():
    from gemini_pl.demo import claim_verdict

    # seed means +2, +4, +3: mean 3, sd 1, s.e. 1/sqrt(3) = 0.577 -> holds (every seed positive, 3 > 1.15)
    line = claim_verdict([[1.0, 3.0], [4.0, 4.0], [3.0, 3.0]])
    assert "per seed +2.00, +4.00, +3.00" in line and "+3.00 ± 1.00 (s.e. 0.58)" in line
    assert "A higher on 6/6" in line and line.endswith("holds")
    # one seed negative: does not hold, whatever the mean
    assert "within seed-to-seed variation" in claim_verdict([[5.0], [6.0], [-0.5]])
    # negative in every seed beyond 2 s.e.: reversed
    assert "reversed" in claim_verdict([[-1.0], [-1.2], [-0.8]])
    # one seed: the standard error is over cases and the verdict says so
    single = claim_verdict([[1.0, 2.0, 3.0]])
    assert "one seed" in single and "s.e. 0.58" in single and single.endswith("holds for this seed")


def test_render_table_summarises_seeds_and_reuses_the_deterministic_anchor():
    """Dice over seeds = mean ± std of the per-seed case means; demons (run once) pairs with every seed."""
    from gemini_pl.demo import render_table

    results = {
        0: {"seg_scratch": _result("seg_scratch", {"a": 80.0, "b": 90.0}), "semi": _result("semi", {"a": 84.0, "b": 92.0}),
            "reg_gemini": _result("reg_gemini", {"x": 70.0}, dice_unwarped={"x": 60.0}, folding={"x": 0.5}, sdlogj={"x": 0.1}),
            "demons": _result("demons", {"x": 75.0}, dice_unwarped={"x": 60.0}, folding={"x": 0.2}, sdlogj={"x": 0.2})},
        1: {"seg_scratch": _result("seg_scratch", {"a": 82.0, "b": 88.0}), "semi": _result("semi", {"a": 86.0, "b": 90.0}),
            "reg_gemini": _result("reg_gemini", {"x": 72.0}, dice_unwarped={"x": 60.0}, folding={"x": 0.3}, sdlogj={"x": 0.1})},
    }
    table = render_table(results, 1.0, 1, data="mni")
    # U-Net Five: seed means 85 and 85 -> 85.0 ± 0.0; Semi: 88 and 88 -> 88.0 ± 0.0
    assert "| U-Net Five (scratch) | random | 5 | 4 (4) | 85.0 ± 0.0 |" in table
    assert "| GEMINI-Semi | random | 5 + unlabeled pairs | 4 (4) | 88.0 ± 0.0 |" in table
    # Semi − scratch per seed: (4 + 2)/2 = +3, (4 + 2)/2 = +3 -> holds
    assert "per seed +3.00, +3.00" in table
    # registration vs demons: −5 and −3 (demons reused for seed 1) -> reversed
    assert "beats SimpleITK demons (B): 71.0 vs 75.0 % (-4.0); per seed -5.00, -3.00" in table
    assert "reversed" in table.split("beats SimpleITK demons (B)")[1].splitlines()[0]


def test_a_failed_stage_is_reported_its_dependants_skipped_and_the_rest_run(monkeypatch, tmp_path):
    """One failing pre-training (a CLI error is a SystemExit): its fine-tuning is skipped, the other
    seed and the independent stages still run, and the table lists what did not finish."""
    from gemini_pl import demo

    ran = []

    def fake_stage(name, config, out, overrides, test=True, fit=True, threads=0):
        if name == "pretrain" and "seed0" in str(out):
            raise SystemExit("error: Parser key 'trainer.callbacks': no attribute 'X'")
        ran.append((str(out.name), name))
        return demo.StageResult(name, 1.0, rows=[{"case": "a", "dice": "80"}], steps=1, iterations=1)

    monkeypatch.setattr(demo, "_stage", fake_stage)
    tasks = [demo._Task(s, n, tmp_path / "c.yaml", [], tmp_path / f"seed{s}") for s in (0, 1)
             for n in ("pretrain", "seg_scratch", "seg_gemini")]
    results, failures = demo._execute(tasks, jobs=1, threads=1)
    assert ("seed0", "seg_scratch") in ran and ("seed1", "seg_gemini") in ran and ("seed0", "seg_gemini") not in ran
    assert failures == ["seed 0 pretrain: SystemExit: error: Parser key 'trainer.callbacks': no attribute 'X'",
                        "seed 0 seg_gemini: skipped (its pre-training failed)"]
    table = demo.render_table(results, 1.0, 1, data="mni", failures=failures)
    assert "Stages that did not finish" in table and "seed 0 seg_gemini: skipped" in table


@pytest.mark.slow
def test_demo_resumes_from_finished_stages(tmp_path, monkeypatch):
    """A rerun reuses a finished stage (its stage.json) instead of training it again."""
    from gemini_pl.demo import STAGE_RECORD, run_pipeline

    monkeypatch.chdir(tmp_path)
    first = run_pipeline(tmp_path / "runs", quick=True, data="phantom", stages=["seg_scratch"])
    record = tmp_path / "runs" / "seg_scratch" / STAGE_RECORD
    csv_file = tmp_path / "runs" / "seg_scratch" / "results" / "test_cases.csv"
    stamp = (record.stat().st_mtime_ns, csv_file.stat().st_mtime_ns)
    second = run_pipeline(tmp_path / "runs", quick=True, data="phantom", stages=["seg_scratch"])
    assert (record.stat().st_mtime_ns, csv_file.stat().st_mtime_ns) == stamp  # nothing trained or tested again
    row = [line for line in first.splitlines() if line.startswith("| U-Net Five (scratch)")]
    assert row and row == [line for line in second.splitlines() if line.startswith("| U-Net Five (scratch)")]
