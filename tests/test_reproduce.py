"""The Table II runner: the table renderer on a hand-made results set, resume/skip and failed-cell
reporting on a tiny matrix (one cell fails on purpose), and (slow) the whole phantom matrix."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, print_config
from gemini_pl.errors import ConfigError
from gemini_pl.reproduce import TABLE2, load_matrix, render_csv, render_markdown, run_matrix


def _res(row, task, seed, dice, avd, status="ok", error=None):
    r = {"row": row, "task": task, "seed": seed, "table": "II", "status": status}
    if status == "ok":
        cases = [{"case": f"c{i}", "dice": d, "avd": a} for i, (d, a) in enumerate(zip(dice, avd))]
        mean = sum(dice) / len(dice)
        r["metrics"] = {"dice": {"mean": mean}, "avd": {"mean": sum(avd) / len(avd)}}
        r["stages"] = [{"name": "main", "cases": cases}]
    else:
        r["error"] = error
    return r


def test_paper_table_parsed():
    assert TABLE2["GEMINI-Semi"][1]["T1"] == (91.2, 3.6, 0.97, 0.56)
    assert TABLE2["U-Net Full"][1]["T1"] is None
    assert TABLE2["CPS"][1]["T2"] == (37.1, 1.8, None, None)  # AVD "unable"
    assert len(TABLE2) == 21


def test_render_table_hand_made():
    rows = [{"row": "U-Net Full", "method": "unet_full", "tasks": ["T2", "T3"]}, {"row": "U-Net Five", "method": "unet_five"},
            {"row": "CPS", "method": "cps"}, {"row": "MASSL", "method": None}]
    results = [
        _res("U-Net Five", "T1", 0, [80.0, 90.0], [1.0, 2.0]),
        _res("U-Net Five", "T1", 1, [70.0, 80.0], [2.0, float("nan")]),
        _res("CPS", "T1", 0, [], [], status="failed", error="RuntimeError: boom"),
    ]
    md = render_markdown(rows, results, {"commit": "abc", "seeds": "0, 1"})
    five = next(line for line in md.splitlines() if "| U-Net Five |" in line)
    cells = [c.strip() for c in five.strip("|").split("|")]
    # pooled cases 80, 90, 70, 80: mean 80, sample std sqrt(200/3) = 8.16; seed means 85, 75: s = 7.07
    assert cells[2] == "80.0±8.2 (s 7.1)" and cells[3] == "84.3±9.6" and cells[4] == "-4.3"
    # AVD: the NaN case is "unable" (1 of 4); pooled 1, 2, 2: mean 1.67, std 0.58; seed means 1.5, 2.0
    assert cells[5] == "1.67±0.58 (s 0.35) [1 unable]" and cells[6] == "2.43±2.14" and cells[7] == "-0.76"
    assert cells[8] == "not run"
    full = next(line for line in md.splitlines() if "| U-Net Full |" in line)
    assert [c.strip() for c in full.strip("|").split("|")][2:4] == ["-", "-"]
    cps = next(line for line in md.splitlines() if "| CPS |" in line)
    assert "failed" in cps and "RuntimeError: boom" in md.split("Failed cells:")[1]
    assert "| MASSL |" in md and "not implemented" in next(line for line in md.splitlines() if "| MASSL |" in line)
    assert "- commit: abc" in md
    csv_text = render_csv(rows, results)
    line = next(ln for ln in csv_text.splitlines() if ln.startswith("U-Net Five,Five,T1,DSC"))
    parts = line.split(",")
    assert float(parts[4]) == pytest.approx(80.0) and float(parts[6]) == pytest.approx(math.sqrt(50), abs=1e-3) and parts[7] == "2"
    assert float(parts[12]) == pytest.approx(80.0 - 84.3)
    assert "CPS,Semi,T1,DSC" in csv_text and "failed" in csv_text and "not implemented" in csv_text


def test_render_ablation_reads_reg_dice():
    """Table V's deformation Dice comes from the pairs test's ``test/reg_dice`` (``dice_warped`` in
    results written before the metric-key rename)."""
    spec = [{"table": "V", "key": "GVS only", "row": "GVS only", "method": "gemini_semi", "tasks": ["T1"]}]
    for key in ("reg_dice", "dice_warped"):
        res = _res("GVS only", "T1", 0, [80.0], [1.0])
        res.update(table="V", pairs_metrics={key: 0.75, "folding_percent": 0.5})
        md = render_markdown([], [res], {}, spec)
        line = next(ln for ln in md.splitlines() if "| GVS only |" in ln)
        assert "75.0±0.0" in line and "0.50±0.00" in line, line


def _tiny_matrix(tmp_path: Path, rows: list[dict] | None = None, tasks: dict[str, dict] | None = None,
                 phantom: dict | None = None) -> Path:
    """A mode file in ``tmp_path/cfg``: the phantom budget (composed by its own config: key, trimmed
    to one iteration), the phantom T3 task on a smaller phantom set under ``tmp_path/data`` (4
    validation phantoms; ``phantom`` edits the generator's settings), the repository's method files
    (copied: tests add misspelled ones) and the phantom method presets."""
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO / "experiments" / "table2" / "methods", cfg / "methods")
    budget = {"config": [str(REPO / "experiments" / "table2" / "budget" / "phantom.yaml")],
              "trainer": {"max_epochs": 1, "limit_train_batches": 1, "limit_test_batches": 2},
              "data": {"init_args": {"samples_per_epoch": 2}}}
    (cfg / "budget.yaml").write_text(yaml.safe_dump(budget))
    mode_tasks = {}
    for name, edit in (tasks or {"T3": {}}).items():
        task = yaml.safe_load((REPO / "experiments" / "table2" / "phantom" / "t3.yaml").read_text())
        root = tmp_path / "data" / name.lower()
        task["data"]["init_args"].update(root=str(root), split_file=str(root / "split.json"), **edit)
        (cfg / f"{name.lower()}.yaml").write_text(yaml.safe_dump(task))
        mode_tasks[name] = {"config": f"{name.lower()}.yaml", "title": "2D phantom 32²",
                            "phantom": {"name": "phantom2d", "spatial_dims": 2, "size": 32, "num_unlabeled": 3,
                                        "num_labeled": 5, "num_test": 2, "seed": 2, **(phantom or {})}}
    (cfg / "matrix.yaml").write_text(yaml.safe_dump({"rows": rows or [
        {"row": "U-Net Five", "method": "unet_five"}, {"row": "CPS", "method": "cps"}, {"row": "MASSL", "method": None}]}))
    mode = {"mode": "phantom", "seeds": [0], "matrix": "matrix.yaml", "budget": "budget.yaml", "tasks": mode_tasks,
            "method_presets": str(REPO / "experiments" / "table2" / "phantom" / "methods")}
    (cfg / "mode.yaml").write_text(yaml.safe_dump(mode))
    return cfg / "mode.yaml"


def test_runner_resume_skip_and_failed_cell(tmp_path, monkeypatch):
    mode = _tiny_matrix(tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "results"
    monkeypatch.setenv("GEMINI_REPRODUCE_FAIL", "CPS")  # the CPS cell fails on purpose
    md = run_matrix(mode, runs, out, jobs=2, threads=1)
    cells = {c.row: runs / "cells" / c.name / "result.json" for c in load_matrix(mode).cells(runs)}
    ok, bad = json.loads(cells["U-Net Five"].read_text()), json.loads(cells["CPS"].read_text())
    assert ok["status"] == "ok" and math.isfinite(ok["metrics"]["dice"]["mean"]) and ok["split"]
    assert bad["status"] == "failed" and "failing on purpose" in bad["error"]
    assert "failing on purpose" in md and "not implemented" in md
    assert (out / "table2.md").exists() and (out / "table2.csv").exists()
    # the stage's outputs are all under its folder (trainer.default_root_dir); the split was written once, before
    main = cells["U-Net Five"].parent / "main"
    assert (main / "checkpoints" / "last.ckpt").is_file() and (main / "results" / "test_cases.csv").is_file()
    assert list((main / "csv").glob("version_*/metrics.csv")) and (cells["U-Net Five"].parent / "main.yaml").is_file()
    assert (tmp_path / "data" / "t3" / "split.json").is_file()
    # a second run reruns nothing (finished cells, failed ones included, are skipped)
    stamps = {k: p.stat().st_mtime_ns for k, p in cells.items()}
    t0 = time.perf_counter()
    run_matrix(mode, runs, out, jobs=2, threads=1)
    assert time.perf_counter() - t0 < 10
    assert {k: p.stat().st_mtime_ns for k, p in cells.items()} == stamps
    # an interrupted cell (no result.json) runs again; --retry-failed reruns failed cells only
    cells["CPS"].unlink()
    run_matrix(mode, runs, out, jobs=1, threads=1, retry_failed=True)
    assert cells["U-Net Five"].stat().st_mtime_ns == stamps["U-Net Five"]
    assert json.loads(cells["CPS"].read_text())["status"] == "failed"


@pytest.mark.slow
def test_phantom_matrix_end_to_end(tmp_path):
    """``make reproduce-table2 DATA=phantom``: every implemented row on the three phantom tasks in < 20 min."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gemini_pl.reproduce", "--data", "phantom", "--jobs", "2", "--threads", "1",
                    "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")], cwd=REPO, check=True,
                   env=dict(os.environ, WANDB_MODE="offline"))
    wall = time.perf_counter() - t0
    md = (tmp_path / "results" / "table2.md").read_text()
    assert "0 failed, 0 not run" in md, md
    assert wall < 20 * 60


@pytest.mark.parametrize("mode", ["paper", "phantom"])
def test_every_cell_config_parses(tmp_path, mode, capsys):
    """One cell stage per module class passes the CLI's parser (classes, argument names, types);
    the phantom configs are run by the slow end-to-end test."""
    matrix = load_matrix(REPO / "experiments" / "table2" / f"{mode}.yaml")
    matrix.seeds = [0]
    cells = matrix.cells(tmp_path)
    rows = {c.row for c in cells}
    assert {"U-Net Five", "UA-MT", "CPS", "VoxelMorph (VM)", "DeepAtlas", "PixPro", "GEMINI-Semi"} <= rows
    seen, classes = set(), set()
    for c in cells:
        for st in c.stages:
            method = st["configs"][1]  # task, method, [method presets], budget
            if method in seen:
                continue
            seen.add(method)
            cfg = print_config(c.args(st["name"]), capsys)
            classes.add(cfg["model"]["class_path"])
            assert cfg["trainer"]["default_root_dir"] == str(tmp_path / "cells" / c.name / st["name"])
            if mode == "phantom":  # the phantom scale of every class: the budget's widths, the method presets
                assert cfg["model"]["init_args"]["widths"] == [8, 16, 32, 64, 128, 64, 32, 16, 8], method
            # no cell keeps a "best" checkpoint by default: the final weights are tested (--select best adds one)
            monitors = [(cb.get("init_args") or {}).get("monitor") for cb in cfg["trainer"]["callbacks"]]
            assert not any(monitors), (method, monitors)
    assert len(classes) >= 9


def test_seed_sets_init_sampling_and_augmentation(tmp_path, capsys):
    """A cell's seed reaches seed_everything, the data module's sampling seed and the model's
    augmentation seed; the same seed gives the same ones, another seed other ones."""
    matrix = load_matrix(REPO / "experiments" / "table2" / "phantom.yaml")
    matrix.seeds = [0, 1, 0]
    cells = [c for c in matrix.cells(tmp_path, rows=["GEMINI-Semi"], tasks=["T3"])]
    assert [c.seed for c in cells] == [0, 1, 0]
    seeds = []
    for c in cells:
        cfg = print_config(c.args("main"), capsys)
        seeds.append((cfg["seed_everything"], cfg["data"]["init_args"]["seed"], cfg["model"]["init_args"]["aug_seed"]))
    assert seeds == [(0, 0, 0), (1, 1, 1), (0, 0, 0)]
    # the pre-training stage of a DCRL row too
    pre = [c for c in matrix.cells(tmp_path, rows=["PixPro"], tasks=["T3"]) if c.seed == 1][0]
    cfg = print_config(pre.args("pretrain"), capsys)
    assert (cfg["seed_everything"], cfg["data"]["init_args"]["seed"], cfg["model"]["init_args"]["aug_seed"]) == (1, 1, 1)


def test_misspelled_key_fails_the_cell_naming_it(tmp_path):
    """A misspelled key in a method file and in a task file: the cells fail (reported in the table)
    with the parser's error naming the key; no key is dropped silently."""
    mode = _tiny_matrix(tmp_path, rows=[{"row": "UA-MT", "method": "uamt_typo", "tasks": ["T3"]},
                                        {"row": "U-Net Five", "method": "unet_five", "tasks": ["T1"]}],
                        tasks={"T3": {}, "T1": {"num_val_pair": 4}})
    method = yaml.safe_load((mode.parent / "methods" / "uamt.yaml").read_text())
    method["model"]["init_args"]["lamda_unsup"] = 0.1
    (mode.parent / "methods" / "uamt_typo.yaml").write_text(yaml.safe_dump(method))
    runs = tmp_path / "runs"
    md = run_matrix(mode, runs, tmp_path / "results", jobs=2, threads=1)
    results = {c.row: json.loads((runs / "cells" / c.name / "result.json").read_text()) for c in load_matrix(mode).cells(runs)}
    assert results["UA-MT"]["status"] == "failed" and "lamda_unsup" in results["UA-MT"]["error"], results["UA-MT"]
    assert results["U-Net Five"]["status"] == "failed" and "num_val_pair" in results["U-Net Five"]["error"], results["U-Net Five"]
    assert "lamda_unsup" in md.split("Failed cells:")[1] and "num_val_pair" in md.split("Failed cells:")[1]


def test_cells_test_the_final_weights_unless_select_best(tmp_path):
    """A cell tests its final weights — even when its budget keeps a best val/seg_dice checkpoint —
    and the table header and the test summary say so, with the split's counts; ``--select best``
    tests the best checkpoint, selected on the 4 validation phantoms (never the test ones), in cells
    of their own; a task whose split has no validation cases is refused, naming it, before any cell runs."""
    mode = _tiny_matrix(tmp_path, rows=[{"row": "U-Net Five", "method": "unet_five"}])
    budget = yaml.safe_load((mode.parent / "budget.yaml").read_text())
    budget["config"].append(str(REPO / "experiments" / "callbacks" / "best_seg.yaml"))
    budget["trainer"]["limit_val_batches"] = 1.0  # validates, and keeps the best checkpoint
    (mode.parent / "budget.yaml").write_text(yaml.safe_dump(budget))
    runs, out = tmp_path / "runs", tmp_path / "results"

    md = run_matrix(mode, runs, out, jobs=1, threads=1)
    (cell,) = load_matrix(mode).cells(runs)
    res = json.loads((runs / "cells" / cell.name / "result.json").read_text())
    assert res["status"] == "ok", res.get("error")
    tested = res["stages"][-1]["tested"]
    assert tested == "final weights", tested  # not the best checkpoint the budget keeps
    assert (res["select"], res["tested"], res["selection"]) == ("final", "final weights", "final weights")
    main = runs / "cells" / cell.name / "main"
    assert list((main / "checkpoints").glob("best-*.ckpt"))  # kept by the budget, not tested
    split = json.loads((tmp_path / "data" / "t3" / "split.json").read_text())
    assert len(split["val"]) == 4 and not set(split["val"]) & set(split["test"])
    counts = "(train 5 labeled + 3 unlabeled / val 4 / test 2)"
    assert "- selection: final weights (" in md and f"T3: sha256 {res['split']} {counts}" in md, md
    summary = (main / "results" / "test_summary.md").read_text()
    assert "- selection: final weights" in summary and f"sha256 {res['split']} {counts}" in summary

    md = run_matrix(mode, runs, out, jobs=1, threads=1, select="best")
    (best,) = load_matrix(mode).cells(runs, select="best")
    assert best.name == cell.name + "__best"
    res = json.loads((runs / "cells" / best.name / "result.json").read_text())
    assert res["status"] == "ok", res.get("error")
    assert res["select"] == "best" and Path(res["tested"]).name.startswith("best-") and Path(res["tested"]).is_file()
    assert res["selection"] == "best val/seg_dice on 4 validation cases"
    assert "- selection: --select best: T3: best val/seg_dice on 4 validation cases" in md, md
    summary = (runs / "cells" / best.name / "main" / "results" / "test_summary.md").read_text()
    assert "- selection: best val/seg_dice on 4 validation cases" in summary

    noval = _tiny_matrix(tmp_path / "noval", rows=[{"row": "U-Net Five", "method": "unet_five"}], phantom={"num_val": 0})
    with pytest.raises(ConfigError, match=r"--select best needs a validation split, but task T3 has none: .*no val list"):
        run_matrix(noval, tmp_path / "noval" / "runs", tmp_path / "noval" / "results", select="best")
    assert not (tmp_path / "noval" / "runs" / "cells").exists()


def test_select_best_adds_the_checkpoint_and_validation(tmp_path, capsys):
    """``--select best``: the main stage (only) gets the best val/seg_dice checkpoint preset and
    validation on (the phantom budget has none), in cells named ``<cell>__best``."""
    matrix = load_matrix(REPO / "experiments" / "table2" / "phantom.yaml")
    matrix.seeds = [0]
    (cell,) = matrix.cells(tmp_path, rows=["PixPro"], tasks=["T3"], select="best")
    assert cell.name.endswith("__t3__seed0__best") and cell.select == "best"
    main = print_config(cell.args("main"), capsys)
    monitors = [(cb.get("init_args") or {}).get("monitor") for cb in main["trainer"]["callbacks"]]
    assert monitors.count("val/seg_dice") == 1 and main["trainer"]["limit_val_batches"] == 1.0
    pre = print_config(cell.args("pretrain"), capsys)
    assert not any((cb.get("init_args") or {}).get("monitor") for cb in pre["trainer"]["callbacks"])
    with pytest.raises(ConfigError, match="select='nope'"):
        matrix.cells(tmp_path, select="nope")
