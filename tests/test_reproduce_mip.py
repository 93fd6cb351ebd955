"""The pre-training tables (III, VI) and the label-efficiency curve: paper numbers, the gap
coefficient by hand, rendering of hand-made cell results (statuses, Δ, AVG, counted FLOPs), a
missing method file shown "not implemented", one pre-training reused by every downstream cell,
resumability, the FLOPs counter on a hand-counted step, and the curve's CSV / PNG / W&B plot."""

from __future__ import annotations

import json
import math
import re
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from gemini_pl.reproduce.label_efficiency import curve_points, draw_curve_png, log_wandb, render_curve_csv, render_curve_markdown
from gemini_pl.reproduce.mip import NEEDS_WEIGHTS, NOT_IMPLEMENTED, SLICEWISE, load_mip_matrix
from gemini_pl.reproduce.mip_runner import run_mip
from gemini_pl.reproduce.mip_table import gap_coefficient, mip_records, render_mip_csv, render_mip_markdown
from gemini_pl.reproduce.paper_mip import TABLE3, TABLE6


def _res(row, task, seed, dice, avd=None, status="ok", flops=None, error=None):
    r = {"row": row, "task": task, "seed": seed, "table": "VI", "status": status}
    if status == "ok":
        avd = avd or [1.0] * len(dice)
        r["stages"] = [{"name": "main", "flops_per_step": flops,
                        "cases": [{"case": f"c{i}", "dice": d, "avd": a} for i, (d, a) in enumerate(zip(dice, avd))]}]
    else:
        r["error"] = error
    return r


def test_paper_tables_parsed_and_their_averages():
    assert TABLE3["GEMINI-MIP"][1]["T1"] == (92.1, 2.8, 5.38, 2.65)
    assert TABLE6["Med3D"] == ("Sup", {"T2": (81.7, 12.0, 2.61, 2.77), "T3": (72.7, 19.0, 1.57, 2.56)})
    assert len(TABLE3) == len(TABLE6) == 19
    # the paper's AVG DSC column is the mean of the task DSCs (checked against its printed values)
    for table, printed in ((TABLE3, {"Scratch (2D U-Net)": 73.6, "Models Genesis": 80.3, "GEMINI-MIP": 87.0}),
                           (TABLE6, {"Scratch (3D U-Net)": 78.2, "Rotation": 83.4, "GEMINI-MIP": 87.5})):
        for row, avg in printed.items():
            vals = [v[0] for v in table[row][1].values()]
            assert abs(sum(vals) / len(vals) - avg) < 0.051, row


def test_gap_coefficient_by_hand():
    scenes = {"T1": "inner", "T2": "inter", "T3": "inter"}
    # GEMINI-MIP, Table III: inner gain 92.1 - 81.8 = 10.3; inter gains 79.1 - 74.1 = 5.0, 89.8 - 65.0 = 24.8 -> 14.9
    g = gap_coefficient({t: v[0] for t, v in TABLE3["GEMINI-MIP"][1].items()},
                        {t: v[0] for t, v in TABLE3["Scratch (2D U-Net)"][1].items()}, scenes)
    assert g == pytest.approx(10.3 - 14.9)
    assert gap_coefficient({"T1": 50.0, "T2": 40.0}, {"T1": 45.0, "T2": 42.0}, {"T1": "inner", "T2": "inter"}) == pytest.approx(7.0)
    # no inter-scene number: undefined
    assert gap_coefficient({"T1": 50.0, "T2": float("nan")}, {"T1": 45.0, "T2": 42.0}, {"T1": "inner", "T2": "inter"}) is None


def test_render_table6_hand_made():
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "Med3D", "type": "Sup", "external": True},
            {"row": "Denoising", "type": "GRL", "pretrain": "denoising"}, {"row": "VADeR", "type": "DCRL", "pretrain": "vader"},
            {"row": "GEMINI-MIP", "type": "Ours", "pretrain": "gemini_mip"}]
    static = {"Med3D": NEEDS_WEIGHTS, "Denoising": NOT_IMPLEMENTED}
    results = [
        _res("Scratch (3D U-Net)", "T2", 0, [60.0, 70.0], [2.0, 4.0], flops=2.0e9), _res("Scratch (3D U-Net)", "T2", 1, [80.0, 90.0], [1.0, 1.0]),
        _res("Scratch (3D U-Net)", "T3", 0, [80.0, 80.0]),
        _res("VADeR", "T2", 0, [70.0, 70.0]), _res("VADeR", "T3", 0, [90.0, 92.0]),
        {"row": "VADeR", "task": "pretrain", "seed": 0, "status": "ok",
         "stages": [{"name": "pretrain", "flops_per_step": 1.5e9, "fit_seconds": 12.4, "optimizer_steps": 40, "iterations": 20}]},
        {"row": "GEMINI-MIP", "task": "pretrain", "seed": 0, "status": "failed", "error": "RuntimeError: boom"},
        _res("GEMINI-MIP", "T2", 0, [], status="failed", error="pre-training failed: RuntimeError: boom"),
    ]
    tasks = {"T2": "kidney", "T3": "brain"}
    md = render_mip_markdown("VI", rows, results, tasks, static, {"commit": "abc"})

    def cells(name):
        line = next(ln for ln in md.splitlines() if f"| {name} |" in ln)
        return [c.strip() for c in line.strip().strip("|").split("|")]

    s = cells("Scratch (3D U-Net)")
    # T2 pooled cases 60, 70, 80, 90: mean 75, std sqrt(500/3) = 12.91; seed means 65, 85 -> s 14.14; paper 72.4
    assert s[2:5] == ["75.0±12.9 (s 14.1)", "72.4±16.3", "+2.6"]
    # AVD pooled 2, 4, 1, 1: mean 2.0, std sqrt(6/3) = 1.41; seed means 3, 1 -> s 1.41; paper 6.11
    assert s[5:8] == ["2.00±1.41 (s 1.41)", "6.11±5.91", "-4.11"]
    assert s[8:11] == ["80.0±0.0", "84.0±3.2", "-4.0"]
    # AVG (75 + 80) / 2 = 77.5, paper 78.2; the gap of Scratch is 0 by definition
    assert s[14:18] == ["77.5", "78.2", "+0.0", "+0.0"]
    v = cells("VADeR")
    # VADeR: T2 70 (inter gain -5), T3 91 (inner gain +11): G = 11 - (-5) = 16; paper 87.4-84.0 - (72.1-72.4) = 3.7
    assert v[2] == "70.0±0.0" and v[8] == "91.0±1.4"
    assert v[14:21] == ["80.5", "79.8", "+16.0", "+3.7", "1.5", "-", "12 s, 20 iterations (40 optimizer steps)"]
    assert cells("Med3D")[2] == NEEDS_WEIGHTS and cells("Denoising")[2] == NOT_IMPLEMENTED
    g = cells("GEMINI-MIP")
    assert g[2] == "failed" and g[8] == "not run" and g[20] == "failed"
    assert "- GEMINI-MIP / pre-training: RuntimeError: boom" in md and "pre-training failed: RuntimeError: boom" in md
    assert "Fine-tuning GFLOPs per step (counted, first row that ran): T2 2, T3 -" in md
    # the CSV: the same numbers in long format
    rows_csv = [ln.split(",") for ln in render_mip_csv("VI", rows, results, ["T2", "T3"], static).splitlines()]
    gap = next(r for r in rows_csv if r[1] == "VADeR" and r[4] == "GAP")
    assert float(gap[5]) == pytest.approx(16.0) and float(gap[11]) == pytest.approx(3.7)
    pre = next(r for r in rows_csv if r[1] == "VADeR" and r[4] == "PRETRAIN_GFLOPS")
    assert float(pre[5]) == pytest.approx(1.5)
    assert next(r for r in rows_csv if r[1] == "Denoising" and r[4] == "DSC")[14] == NOT_IMPLEMENTED


def test_slicewise_cells_are_marked_in_table3():
    rows = [{"row": "Scratch (2D U-Net)", "pretrain": None}]
    static = {"Scratch (2D U-Net)|T2": SLICEWISE, "Scratch (2D U-Net)|T3": SLICEWISE}
    rec = mip_records("III", rows, [_res("Scratch (2D U-Net)", "T1", 0, [80.0, 84.0])], ["T1", "T2", "T3"], static)[0]
    assert [rec["tasks"][t]["status"] for t in ("T1", "T2", "T3")] == ["ok", SLICEWISE, SLICEWISE]
    assert rec["avg"]["ours"] == pytest.approx(82.0) and rec["avg"]["tasks"] == 1
    assert rec["avg"]["paper"] == pytest.approx((81.8 + 74.1 + 65.0) / 3)


def _mini_mode(tmp_path: Path, rows: list[dict], methods: dict[str, dict] | None = None, steps: int = 1) -> Path:
    """A Table VI mode file in tmp_path/cfg: 2D phantoms 16² (pre-training set and two tasks), tiny
    budgets, the given rows and method files (default: GEMINI-MIP's, copied)."""
    cfg = tmp_path / "cfg"
    (cfg / "methods").mkdir(parents=True)
    for key, body in (methods or {"gemini_mip": yaml.safe_load((REPO / "experiments/mip/methods/gemini_mip.yaml").read_text())}).items():
        (cfg / "methods" / f"{key}.yaml").write_text(yaml.safe_dump(body))
    tiny = {"trainer": {"max_epochs": 1, "limit_train_batches": steps, "limit_test_batches": 2},
            "data": {"init_args": {"samples_per_epoch": 2}},
            "model": {"init_args": {"widths": [8, 8, 8, 8, 8, 8, 8, 8, 8]}}}
    for name, base in (("budget", "phantom"), ("pretrain_budget", "phantom_pretrain")):
        (cfg / f"{name}.yaml").write_text(yaml.safe_dump({"config": [str(REPO / f"experiments/mip/budget/{base}.yaml")], **tiny}))
    (cfg / "presets").mkdir()
    (cfg / "presets" / "gemini_mip.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"deformer_widths": [8, 8, 8, 8, 8]}}}))
    tasks = {}
    for name in ("pre", "T2", "T3"):
        root = tmp_path / "data" / name.lower()
        init = {"root": str(root), "dataset": "phantom2d", "spatial_dims": 2, "seed": 0, "batch_size": 2, "cache": True,
                "num_workers": 0}
        if name == "pre":
            init["train_mode"] = "pairs"
        else:
            init.update(split_file=str(root / "split.json"), num_labeled=2, labeled_batch_size=2, num_val_pairs=2)
        (cfg / f"{name.lower()}.yaml").write_text(yaml.safe_dump({"data": {"class_path": "gemini_pl.data.GeminiDataModule",
                                                                           "init_args": init}}))
        tasks[name] = {"config": f"{name.lower()}.yaml", "title": f"2D phantom {name}", "scene": "inner" if name == "T3" else "inter",
                       "phantom": {"name": "phantom2d", "spatial_dims": 2, "size": 16, "num_unlabeled": 4, "num_labeled": 2,
                                   "num_val": 0, "num_test": 2, "seed": len(name)}}
    (cfg / "rows.yaml").write_text(yaml.safe_dump({"rows": rows}))
    pre = tasks.pop("pre")
    mode = {"mode": "phantom", "table": "VI", "seeds": [0], "rows": "rows.yaml", "methods": "methods",
            "method_presets": "presets", "pretrain_data": pre, "pretrain_budget": "pretrain_budget.yaml",
            "finetune": str(REPO / "experiments/mip/finetune.yaml"), "budget": "budget.yaml", "tasks": tasks}
    (cfg / "mode.yaml").write_text(yaml.safe_dump(mode))
    return cfg / "mode.yaml"


def test_missing_method_file_is_not_implemented(tmp_path):
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "Rotation", "type": "GRL", "pretrain": "no_such_method"},
            {"row": "Med3D", "type": "Sup", "external": True}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    mode = _mini_mode(tmp_path, rows)
    matrix = load_mip_matrix(mode)
    assert matrix.row_status(rows[1]) == NOT_IMPLEMENTED and matrix.row_status(rows[2]) == NEEDS_WEIGHTS
    cells = matrix.cells(tmp_path / "runs")
    assert {c.row for c in cells} == {"Scratch (3D U-Net)", "GEMINI-MIP"}
    # a file given for the Sup row makes it runnable, fine-tuned from that file
    matrix = load_mip_matrix(mode, external_weights={"Med3D": "/weights/med3d.pt"})
    med = [c for c in matrix.cells(tmp_path / "runs") if c.row == "Med3D"]
    assert len(med) == 2 and all(c.stages[0]["init_from"] == "/weights/med3d.pt" for c in med)
    md = run_mip(mode, tmp_path / "runs", tmp_path / "out", render_only=True)
    line = next(ln for ln in md.splitlines() if "| Rotation |" in ln)
    assert line.count(NOT_IMPLEMENTED) == 5 and (tmp_path / "out" / "table6.md").is_file()


def test_one_pretraining_reused_by_every_downstream_cell(tmp_path):
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    matrix = load_mip_matrix(_mini_mode(tmp_path, rows))
    matrix.seeds = [0, 1]
    runs = tmp_path / "runs"
    cells = matrix.cells(runs)
    pre = [c for c in cells if c.task == "pretrain"]
    assert len(pre) == 1 and pre[0].row == "GEMINI-MIP" and pre[0].stages[0]["count_flops"]
    ckpt = str(matrix.pretrain_dir(runs, "GEMINI-MIP") / "pretrain" / "checkpoints" / "last.ckpt")
    assert matrix.pretrain_dir(runs, "GEMINI-MIP") == runs / "cells" / pre[0].name
    down = [c for c in cells if c.row == "GEMINI-MIP" and c.task != "pretrain"]
    assert len(down) == 4 and {c.stages[0]["init_from"] for c in down} == {ckpt}   # 2 tasks x 2 seeds, one backbone
    assert all(c.stages[0]["init_from"] is None for c in cells if c.row.startswith("Scratch"))
    # the pre-training composes data, method, budget, the scale presets (later files override earlier ones)
    assert [Path(p).name for p in pre[0].stages[0]["configs"]] == ["pre.yaml", "gemini_mip.yaml", "pretrain_budget.yaml", "gemini_mip.yaml"]


def test_resume_and_failed_pretraining(tmp_path, monkeypatch):
    """A finished cell is not run again; a row whose pre-training fails reports it in its downstream cells."""
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    mode = _mini_mode(tmp_path, rows)
    runs, out = tmp_path / "runs", tmp_path / "out"
    matrix = load_mip_matrix(mode)
    done = {}
    for c in matrix.cells(runs):
        if c.row.startswith("Scratch"):  # finished before: hand-made results
            p = runs / "cells" / c.name / "result.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps(_res(c.row, c.task, 0, [50.0, 60.0])))
            done[c.name] = p.stat().st_mtime_ns
    monkeypatch.setenv("GEMINI_REPRODUCE_FAIL", "GEMINI-MIP")   # its cells fail at once, on purpose
    md = run_mip(mode, runs, out, jobs=1, threads=1)
    assert {n: (runs / "cells" / n / "result.json").stat().st_mtime_ns for n in done} == done
    for c in matrix.cells(runs):
        r = json.loads((runs / "cells" / c.name / "result.json").read_text())
        if c.row == "GEMINI-MIP":
            assert r["status"] == "failed"
            assert ("failing on purpose" in r["error"]) if c.task == "pretrain" else r["error"].startswith("pre-training failed")
    assert "55.0±7.1" in md and "failing on purpose" in md
    t0 = time.perf_counter()
    run_mip(mode, runs, out)   # nothing to run: failed cells stay failed without --retry-failed
    assert time.perf_counter() - t0 < 10


@pytest.mark.slow
def test_pretraining_runs_once_and_every_cell_starts_from_it(tmp_path):
    """End to end on tiny 2D phantoms: one GEMINI-MIP pre-training, two fine-tunings initialised from
    its checkpoint, counted FLOPs, the rendered table; a second invocation runs nothing."""
    rows = [{"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    mode = _mini_mode(tmp_path, rows, steps=2)
    runs, out = tmp_path / "runs", tmp_path / "out"
    md = run_mip(mode, runs, out, jobs=1, threads=1)
    matrix = load_mip_matrix(mode)
    pre_dir = matrix.pretrain_dir(runs, "GEMINI-MIP")
    pre = json.loads((pre_dir / "result.json").read_text())
    assert pre["status"] == "ok", pre.get("error")
    assert pre["stages"][0]["flops_per_step"] > 0
    ckpt = pre_dir / "pretrain" / "checkpoints" / "last.ckpt"
    for c in matrix.cells(runs):
        if c.task == "pretrain":
            continue
        r = json.loads((runs / "cells" / c.name / "result.json").read_text())
        assert r["status"] == "ok", r.get("error")
        assert r["stages"][0]["args"][-2:] == ["--model.init_args.init_from", str(ckpt)]
        cfg = yaml.safe_load((runs / "cells" / c.name / "main.yaml").read_text())
        assert cfg["model"]["init_args"]["init_from"] == str(ckpt)
    assert "0 failed, 0 not run" in md
    stamp = ckpt.stat().st_mtime_ns
    run_mip(mode, runs, out)
    assert ckpt.stat().st_mtime_ns == stamp


def test_step_flops_counts_one_training_step():
    """Linear 4 -> 3 then 3 -> 2 on a batch of 2: forward 2·2·4·3 + 2·2·3·2 = 72 FLOPs; backward: the
    second layer's weight and input gradients 2 × 24, the first layer's weight gradient 48 (no
    gradient of the data): 168 for the step (bias adds and the optimizer are not FLOP-counted ops)."""
    import lightning.pytorch as pl
    import torch

    from gemini_pl.reproduce.flops import StepFlops

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))

        def training_step(self, batch, _):
            return self.lin(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(6, 4)), batch_size=2)
    cb = StepFlops()
    pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[cb]).fit(Tiny(), data)
    assert cb.flops == 168


def test_cli_table_dispatch_renders_the_phantom_tables(tmp_path):
    from gemini_pl.reproduce.runner import main

    for table, name in (("3", "table3"), ("6", "table6")):
        main(["--table", table, "--data", "phantom", "--render-only", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)])
        md = (tmp_path / f"{name}.md").read_text()
        assert "| Ours | GEMINI-MIP |" in md and "0 ok, 0 failed" in md
    # Table III's 3D tasks run slice by slice (the slice-wise fine-tuning file), its 2D task as Table VI's tasks
    matrix = load_mip_matrix(REPO / "experiments/mip/table3/phantom.yaml")
    assert matrix.task_status("T2") is None and matrix.finetune_file("T2").name == "finetune_slicewise.yaml"
    assert matrix.finetune_file("T1").name == "finetune.yaml"
    matrix.slicewise_finetune = None   # a mode without one: the cells are shown not run
    assert matrix.task_status("T2") == SLICEWISE and not [c for c in matrix.cells(tmp_path) if c.task == "T2"]


def _le_results():
    return [_res("Scratch", "L1", 0, [40.0, 50.0]), _res("Scratch", "L1", 1, [60.0, 70.0]), _res("Scratch", "all", 0, [80.0, 80.0]),
            _res("GEMINI-MIP", "L1", 0, [70.0, 74.0]), _res("GEMINI-MIP", "all", 0, [], status="failed", error="boom")]


def test_label_efficiency_points_csv_and_png(tmp_path):
    rows = [{"row": "Scratch", "pretrain": None}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"},
            {"row": "Models Genesis", "pretrain": "models_genesis"}]
    tasks = {"L1": {"labels": 1}, "all": {"labels": 20}}
    pts = curve_points(rows, _le_results(), tasks, {"Models Genesis": NOT_IMPLEMENTED})
    s = pts["Scratch"]
    # L1 pooled 40, 50, 60, 70: mean 55, std sqrt(500/3); seed means 45, 65 -> 14.14
    assert (s[0]["labels"], s[0]["dice"], s[0]["seeds"]) == (1, 55.0, 2)
    assert s[0]["dice_std"] == pytest.approx(math.sqrt(500 / 3)) and s[0]["seed_std"] == pytest.approx(math.sqrt(200))
    assert (s[1]["labels"], s[1]["dice"]) == (20, 80.0)
    assert [p["status"] for p in pts["GEMINI-MIP"]] == ["ok", "failed"] and pts["GEMINI-MIP"][0]["dice"] == 72.0
    assert [p["status"] for p in pts["Models Genesis"]] == [NOT_IMPLEMENTED] * 2
    lines = render_curve_csv(pts).splitlines()
    assert lines[1].startswith("Scratch,L1,1,55.0000,12.9099,14.1421,2,4,ok")
    png = draw_curve_png(pts, tmp_path / "curve.png")
    from PIL import Image

    img = Image.open(png).convert("RGB")
    colours = set(img.getdata())
    assert img.size[0] >= 600 and (31, 119, 180) in colours and (255, 127, 14) in colours  # one line per row that ran
    # paired against Scratch: GEMINI-MIP has seed 0 only on L1: differences +30, +24 -> +27 per case, one seed
    q = pts["GEMINI-MIP"][0]["paired"]
    assert q["seeds"] == 1 and q["mean"] == pytest.approx(27.0) and q["verdict"] == "holds (1 seed)" and q["wins"] == 2
    assert pts["Scratch"][0]["paired"] is None and pts["GEMINI-MIP"][1]["paired"]["seeds"] == 0
    gem = next(ln for ln in lines if ln.startswith("GEMINI-MIP,L1"))
    assert gem.split(",")[9:13] == ["27.0000", "4.2426", "1", "holds (1 seed)"]
    md = render_curve_markdown(pts, {"seeds": "0, 1"})
    assert "| GEMINI-MIP | 72.0 ± 2.8 | +27.00 ± 4.24 (holds (1 seed); higher on 2/2) | failed | - |" in md


def test_label_efficiency_wandb_line_plot(monkeypatch):
    calls = {}

    class Run:
        def log(self, data):
            calls["log"] = data

        def finish(self):
            calls["finished"] = True

    class Table:
        def __init__(self, columns):
            self.columns, self.data = columns, []

        def add_data(self, *row):
            self.data.append(row)

    fake = types.SimpleNamespace(init=lambda **kw: calls.setdefault("init", kw) and Run(), Table=Table,
                                 plot=types.SimpleNamespace(line_series=lambda **kw: ("line_series", kw)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rows = [{"row": "Scratch", "pretrain": None}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    pts = curve_points(rows, _le_results(), {"L1": {"labels": 1}, "all": {"labels": 20}})
    log_wandb(pts, "proj")
    kind, kw = calls["log"]["label_efficiency/dice_vs_labels"]
    assert kind == "line_series" and kw["xs"] == [1, 20] and kw["keys"] == ["Scratch", "GEMINI-MIP"]
    assert kw["ys"][0] == [55.0, 80.0] and kw["ys"][1][0] == 72.0 and math.isnan(kw["ys"][1][1])
    assert calls["log"]["label_efficiency/points"].data == [("Scratch", 1, 55.0, pytest.approx(math.sqrt(500 / 3))),
                                                            ("Scratch", 20, 80.0, 0.0), ("GEMINI-MIP", 1, 72.0, pytest.approx(math.sqrt(8)))]
    assert calls["init"]["project"] == "proj" and calls["finished"]


def test_row_notes_are_numbered_footnotes():
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "Denoising", "type": "GRL", "pretrain": "denoising"},
            {"row": "VADeR", "type": "DCRL", "pretrain": "vader"}, {"row": "PixPro", "type": "DCRL", "pretrain": "pixpro"}]
    static = {"Denoising": NOT_IMPLEMENTED}
    md = render_mip_markdown("VI", rows, [], {"T2": "", "T3": ""}, static, {},
                             notes={"Denoising": "d", "VADeR": "v", "PixPro": "p"})
    # rows that cannot run get no footnote; the others are numbered in the rows' order
    assert "| DCRL | VADeR [1] |" in md and "| DCRL | PixPro [2] |" in md and "| GRL | Denoising |" in md
    assert "- [1] VADeR: v\n- [2] PixPro: p" in md
    from gemini_pl.reproduce.mip_table import row_notes
    from gemini_pl.reproduce.paper import NOTES

    assert row_notes([{"row": "VADeR", "pretrain": "vader"}]) == {"VADeR": NOTES["VADeR"]}


def test_slicewise_segmentation_is_the_2d_network_slice_by_slice():
    """The volume's logits are the 2D network's logits of each slice, stacked back (computed here by
    a plain loop over the slices); training sees the slices of the batch as one 2D batch."""
    import torch

    from gemini_pl.modules.slicewise import SliceWiseSegmentation, from_slices, to_slices

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 1, 3, 4, 5)
    assert to_slices(x, 2).shape == (10, 1, 3, 4) and torch.equal(to_slices(x, 2)[6, 0], x[1, 0, :, :, 1])
    for axis in (0, 1, 2):
        assert torch.equal(from_slices(to_slices(x, axis), 2, axis), x)
    torch.manual_seed(0)
    m = SliceWiseSegmentation(spatial_dims=3, num_classes=3, widths=[8] * 9, slice_chunk=3).eval()
    assert m.net.spatial_dims == 2
    vol = torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        got = m.segment_logits(vol)
        want = torch.stack([torch.stack([m.net(vol[n:n + 1, :, :, :, k])[0] for k in range(8)], dim=-1) for n in range(2)])
    assert got.shape == (2, 3, 16, 16, 8) and torch.allclose(got, want, atol=1e-5)
    label = torch.randint(0, 3, (2, 1, 16, 16, 8))
    (name, losses), = list(m.training_losses({"image": vol, "label": label}))
    with torch.no_grad():
        ref = m.seg_loss(m.net(vol.permute(0, 4, 1, 2, 3).reshape(16, 1, 16, 16)), label.permute(0, 4, 1, 2, 3).reshape(16, 1, 16, 16))
    assert name == "seg" and torch.allclose(losses["total"].detach(), ref, atol=1e-5)
    from gemini_pl.errors import ConfigError

    with pytest.raises(ConfigError, match="3D data"):
        SliceWiseSegmentation(spatial_dims=2, num_classes=3)


def test_pretrain_per_seed_gives_each_seed_its_own_backbone(tmp_path):
    """pretrain_per_seed: one pre-training per row and seed; each downstream cell loads its seed's."""
    rows = [{"row": "Scratch (3D U-Net)", "pretrain": None}, {"row": "GEMINI-MIP", "pretrain": "gemini_mip"}]
    mode = _mini_mode(tmp_path, rows)
    body = yaml.safe_load(mode.read_text())
    body.update(pretrain_per_seed=True, seeds=[0, 1, 2])
    mode.write_text(yaml.safe_dump(body))
    matrix = load_mip_matrix(mode)
    runs = tmp_path / "runs"
    cells = matrix.cells(runs)
    pre = [c for c in cells if c.task == "pretrain"]
    assert [c.seed for c in pre] == [0, 1, 2] and len({c.name for c in pre}) == 3
    for c in pre:   # the pre-training itself is seeded with its seed
        assert f"--seed_everything={c.seed}" in c.stages[0]["overrides"]
        assert f"--model.init_args.aug_seed={c.seed}" in c.stages[0]["overrides"]
    for c in cells:
        if c.row == "GEMINI-MIP" and c.task != "pretrain":
            assert c.stages[0]["init_from"] == str(runs / "cells" / pre[c.seed].name / "pretrain" / "checkpoints" / "last.ckpt")
    # without the key: one pre-training (seed 0) for every seed, as before
    body["pretrain_per_seed"] = False
    mode.write_text(yaml.safe_dump(body))
    assert [c.seed for c in load_mip_matrix(mode).cells(runs) if c.task == "pretrain"] == [0]


def test_paired_column_against_scratch_by_hand():
    """Per seed: the per-case differences row − Scratch (cases matched by name), then over seeds."""
    rows = [{"row": "Scratch (2D U-Net)", "pretrain": None}, {"row": "GEMINI-MIP", "type": "Ours", "pretrain": "gemini_mip"},
            {"row": "Rotation", "type": "GRL", "pretrain": "rotation"}]
    results = [_res("Scratch (2D U-Net)", "L5", s, d) for s, d in ((0, [50.0, 60.0]), (1, [50.0, 70.0]), (2, [40.0, 40.0]))]
    # GEMINI-MIP: seed diffs (+2, +4) -> 3, (+1, +1) -> 1, (+2, +2) -> 2: mean 2, sd 1, s.e. 0.577 -> holds
    results += [_res("GEMINI-MIP", "L5", s, d) for s, d in ((0, [52.0, 64.0]), (1, [51.0, 71.0]), (2, [42.0, 42.0]))]
    # Rotation: -1, +3, -2 -> mean 0, not significant; 2 of 6 pairs higher (the +3 seed's two cases)
    results += [_res("Rotation", "L5", s, d) for s, d in ((0, [49.0, 59.0]), (1, [53.0, 73.0]), (2, [38.0, 38.0]))]
    for r in results:
        r["table"] = "III"
    md = render_mip_markdown("III", rows, results, {"L5": "five labels"}, {}, {}, paired_vs="Scratch (2D U-Net)", scenes={"L5": "inner"})
    line = lambda name: [c.strip() for c in next(ln for ln in md.splitlines() if f"| {name} |" in ln).strip("|").split("|")]  # noqa: E731
    assert "L5 (inner) DSC | L5 vs Scratch (2D U-Net) (paired) |" in md and md.startswith("# Table III — pre-training on 2D chest X-rays")
    assert render_mip_markdown("III", rows, results, {"L5": "five labels"}, {}, {}, data_title="MNI slices").startswith(
        "# Table III's rows — here pre-trained on MNI slices, fine-tuned on five labels: ours\n")
    assert line("GEMINI-MIP")[3] == "+2.00 ± 1.00 (holds; higher on 6/6)"
    assert line("Rotation")[3] == "+0.00 ± 2.65 (not significant; higher on 2/6)"
    assert line("Scratch (2D U-Net)")[3] == "-"
    csv_rows = [ln.split(",") for ln in render_mip_csv("III", rows, results, ["L5"], {}).splitlines()]
    g = next(r for r in csv_rows if r[1] == "GEMINI-MIP" and r[4] == "DSC_PAIRED_VS Scratch (2D U-Net)")
    assert float(g[5]) == pytest.approx(2.0) and float(g[6]) == pytest.approx(1.0) and g[8] == "3" and g[14] == "holds"
    # all lower in every seed -> reversed
    worse = [_res("GEMINI-MIP", "L5", s, [c["dice"] - 3.0 for c in r["stages"][0]["cases"]]) for s, r in enumerate(results[:3])]
    md = render_mip_markdown("III", rows[:2], results[:3] + worse, {"L5": "five labels"}, {}, {}, paired_vs="Scratch (2D U-Net)")
    assert "-3.00 ± 0.00 (reversed; higher on 0/6)" in md
    # without paired_vs the column is absent
    assert "(paired)" not in render_mip_markdown("III", rows, results, {"L5": "x"}, {}, {})
    # any row can be the base: GEMINI-MIP − Rotation per seed: (+3, +5) -> 4, (-2, -2) -> -2, (+4, +4) -> 4
    md = render_mip_markdown("III", rows, results, {"L5": "five labels"}, {}, {}, paired_vs="Rotation")
    assert "L5 vs Rotation (paired) |" in md and line("Rotation")[3] == "-"
    cells = [c.strip() for c in next(ln for ln in md.splitlines() if "| GEMINI-MIP |" in ln).strip("|").split("|")]
    assert cells[3] == "+2.00 ± 3.46 (not significant; higher on 4/6)"
    csv_rows = [ln.split(",") for ln in render_mip_csv("III", rows, results, ["L5"], {}, paired_vs="Rotation").splitlines()]
    g = next(r for r in csv_rows if r[1] == "GEMINI-MIP" and r[4] == "DSC_PAIRED_VS Rotation")
    assert float(g[5]) == pytest.approx(2.0) and float(g[6]) == pytest.approx(12 ** 0.5)


def test_mip_mode_paired_vs_names_a_row(monkeypatch):
    """``paired_vs:`` must name one of the mode's rows; the old ``paired_vs_scratch:`` key is refused
    with a one-line pointer to its replacement (the real mode file, its keys changed as it is read)."""
    from gemini_pl.errors import ConfigError
    from gemini_pl.reproduce import mip

    real = mip.load_mode
    mode_file = REPO / "experiments/mip/table3/synthseg.yaml"
    for change, needle in (({"paired_vs": "Scratch"}, "paired_vs: 'Scratch' is not among the rows"),
                           ({"paired_vs_scratch": True}, "'paired_vs_scratch:' was replaced by 'paired_vs: <row>'")):
        monkeypatch.setattr(mip, "load_mode", lambda path, change=change: {**real(path), **change})
        with pytest.raises(ConfigError, match=re.escape(f"{mode_file}: {needle}")):
            mip.load_mip_matrix(mode_file)
    # Table II's modes go through the same check
    from gemini_pl.reproduce import matrix

    real2, t2 = matrix.load_mode, REPO / "experiments/table2/synthseg.yaml"
    monkeypatch.setattr(matrix, "load_mode", lambda path: {**real2(path), "paired_vs": "U-Net"})
    with pytest.raises(ConfigError, match=re.escape(f"{t2}: paired_vs: 'U-Net' is not among the rows")):
        matrix.load_matrix(t2)


def test_mni_mode_and_label_efficiency_share_their_cells(tmp_path):
    """The real-anatomy Table III mode and the label-efficiency curve: the same pre-training cells and
    the same five-label cells, so that each runs once; --data mni is refused for table 6."""
    from gemini_pl.reproduce.runner import main

    runs = tmp_path / "runs"
    t3 = load_mip_matrix(REPO / "experiments/mip/table3/mni.yaml")
    le = load_mip_matrix(REPO / "experiments/mip/label_efficiency/mni.yaml")
    assert t3.pretrain_per_seed and t3.paired_vs == "Scratch (2D U-Net)" and t3.seeds == [0, 1, 2] and t3.generate[0]["num_labeled"] == 20
    c3 = {c.name: c for c in t3.cells(runs)}
    shared = [c for c in le.cells(runs) if c.name in c3]
    assert {c.row for c in shared} == {"Scratch (2D U-Net)", "Models Genesis", "GEMINI-MIP"}
    assert sorted({c.task for c in shared}) == ["L5", "pretrain"] and len(shared) == 3 * 3 + 2 * 3
    for c in shared:   # identical runs, not only identical names
        assert c.stages == c3[c.name].stages
    with pytest.raises(SystemExit):
        main(["--table", "6", "--data", "mni", "--render-only", "--runs", str(runs), "--out", str(tmp_path)])
