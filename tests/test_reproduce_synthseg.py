"""The SynthSeg-derived modes of Tables II and III: the mode files, the dataset-generator registry,
``only_rows:``, Table II's paired column and the per-structure Dice table, checked by hand."""

from __future__ import annotations

import math

import pytest

from conftest import REPO, print_config
from gemini_pl.errors import ConfigError
from gemini_pl.reproduce.matrix import load_matrix
from gemini_pl.reproduce.mip import load_mip_matrix
from gemini_pl.reproduce.structures import render_structures, structure_means
from gemini_pl.reproduce.table import render_csv, render_markdown


def _res(row, seed, cases, task="S5", table="II"):
    """A finished cell whose per-case rows are ``cases``: ``[{"dice": .., "dice_a": .., ...}, ...]``."""
    return {"row": row, "task": task, "seed": seed, "table": table, "status": "ok",
            "stages": [{"name": "main", "cases": [{"case": f"c{i}", "avd": 1.0, **c} for i, c in enumerate(cases)]}]}


def test_synthseg_modes_load_their_rows_data_and_pairing(tmp_path):
    t2 = load_matrix(REPO / "experiments/table2/synthseg.yaml")
    assert [r["row"] for r in t2.rows] == ["U-Net Five", "UA-MT", "VoxelMorph (VM)", "BRBS", "GEMINI-Semi"]
    assert t2.ablations == [] and t2.seeds == [0, 1, 2] and t2.paired_vs == "U-Net Five" and t2.per_structure
    assert t2.generate == [{"generator": "synthseg", "root": "runs/synthseg_tables/data", "spatial_dims": 2, "seed": 0}]
    cells = t2.cells(tmp_path)
    assert len(cells) == 5 * 3 and {c.task for c in cells} == {"S5"}
    semi = next(c for c in cells if c.row == "GEMINI-Semi")
    assert any(p.endswith("synthseg/table_data.yaml") for p in semi.stages[-1]["configs"])
    assert any(p.endswith("synthseg/methods/gemini_semi.yaml") for p in semi.stages[-1]["configs"])

    t3 = load_mip_matrix(REPO / "experiments/mip/table3/synthseg.yaml")
    assert [r["row"] for r in t3.rows] == ["Scratch (2D U-Net)", "Models Genesis", "GVSL-MIP", "GEMINI-MIP"]
    assert t3.pretrain_per_seed and t3.paired_vs == "Scratch (2D U-Net)" and t3.per_structure and t3.generate == t2.generate
    # 3 pre-trained rows x 3 seeds + 4 rows x 3 seeds downstream
    assert len(t3.cells(tmp_path)) == 9 + 12


def test_balanced_modes_extend_the_synthseg_modes_and_add_the_balanced_ce(tmp_path, capsys):
    t2 = load_matrix(REPO / "experiments/table2/synthseg_balanced.yaml")
    base = load_matrix(REPO / "experiments/table2/synthseg.yaml")
    assert [r["row"] for r in t2.rows] == [r["row"] for r in base.rows] and t2.paired_vs == base.paired_vs
    assert t2.generate == base.generate and t2.seeds == base.seeds and t2.per_structure
    assert t2.budget.name == "synthseg_balanced.yaml" and "class_balanced_ce" in t2.notes[-1]
    t3 = load_mip_matrix(REPO / "experiments/mip/table3/synthseg_balanced.yaml")
    assert t3.budget.name == "budget_balanced.yaml" and t3.pretrain_per_seed and t3.paired_vs == "Scratch (2D U-Net)"
    # the budgets compose the plain ones and add the option: a UA-MT cell and a fine-tuning cell resolve it
    for cell in (next(c for c in t2.cells(tmp_path) if c.row == "UA-MT"),
                 next(c for c in t3.cells(tmp_path) if c.row == "GEMINI-MIP" and c.stages[-1]["name"] != "pretrain")):
        args = [a for f in cell.stages[-1]["configs"] for a in ("--config", f)]
        init = print_config(args, capsys)["model"]["init_args"]
        assert init["class_balanced_ce"] == 0.1 and init["lr"] == 0.001 and init["widths"][0] == 8
    # the _w1 modes extend them with the weight 1 (the first try)
    w1 = load_matrix(REPO / "experiments/table2/synthseg_balanced_w1.yaml")
    cell = next(c for c in w1.cells(tmp_path) if c.row == "BRBS")
    init = print_config([a for f in cell.stages[-1]["configs"] for a in ("--config", f)], capsys)["model"]["init_args"]
    assert init["class_balanced_ce"] == 1.0 and w1.paired_vs == "U-Net Five"
    assert load_mip_matrix(REPO / "experiments/mip/table3/synthseg_balanced_w1.yaml").budget.name == "budget_balanced_w1.yaml"


def test_mode_extends_replaces_keys_whole_and_refuses_cycles(tmp_path):
    from gemini_pl.reproduce.matrix import load_mode

    (tmp_path / "a.yaml").write_text("seeds: [0, 1]\nnotes: [x]\nbudget: b.yaml\n")
    (tmp_path / "c.yaml").write_text("extends: a.yaml\nnotes: [y, z]\n")
    assert load_mode(tmp_path / "c.yaml") == {"seeds": [0, 1], "notes": ["y", "z"], "budget": "b.yaml"}
    (tmp_path / "a.yaml").write_text("extends: c.yaml\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_mode(tmp_path / "c.yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.yaml").write_text("extends: ../a.yaml\n")
    with pytest.raises(ConfigError, match=r"extends: ../a.yaml must name a mode file in the same folder"):
        load_mode(tmp_path / "sub" / "e.yaml")
    (tmp_path / "d.yaml").write_text("extends: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"d.yaml: extends: nope.yaml is not a file"):
        load_mode(tmp_path / "d.yaml")


def test_only_rows_names_an_unknown_row(tmp_path):
    mode = (REPO / "experiments/table2/synthseg.yaml").read_text().replace("BRBS,", "BRBZ,")
    (tmp_path / "mode.yaml").write_text(mode.replace("matrix: matrix.yaml", f"matrix: {REPO}/experiments/table2/matrix.yaml"))
    with pytest.raises(ConfigError, match=r"only_rows: 'BRBZ' not among the rows"):
        load_matrix(tmp_path / "mode.yaml")


def test_generate_dataset_dispatches_and_refuses_unknown_generators(tmp_path):
    from gemini_pl.data.synthetic import generate_dataset

    path = generate_dataset({"generator": "phantom", "root": tmp_path, "spatial_dims": 2, "size": 16,
                             "num_unlabeled": 2, "num_labeled": 1, "num_test": 1, "num_val": 0})
    assert path == tmp_path / "phantom2d" and len(list((path / "train" / "unlabeled" / "image").iterdir())) == 2
    with pytest.raises(ConfigError, match="generator='nope' is not one of phantom, mni, synthseg"):
        generate_dataset({"generator": "nope"})


def test_table2_paired_column_by_hand():
    rows = [{"row": "U-Net Five", "method": "unet_five"}, {"row": "GEMINI-Semi", "method": "gemini_semi"},
            {"row": "BRBS", "method": "brbs"}]
    base = {0: [60.0, 70.0], 1: [50.0, 50.0], 2: [80.0, 60.0]}
    results = [_res("U-Net Five", s, [{"dice": d} for d in v]) for s, v in base.items()]
    # GEMINI-Semi: per seed (+2, +4) -> 3, (+1, +3) -> 2, (+4, +4) -> 4: mean 3, sd 1 -> holds, 6/6 higher
    semi = {0: [62.0, 74.0], 1: [51.0, 53.0], 2: [84.0, 64.0]}
    results += [_res("GEMINI-Semi", s, [{"dice": d} for d in v]) for s, v in semi.items()]
    # BRBS only seed 0, -5 and +1 -> -2 (one seed: s.e. over cases 3 -> not significant), 1/2 higher
    results += [_res("BRBS", 0, [{"dice": 55.0}, {"dice": 71.0}])]
    md = render_markdown(rows, results, {}, tasks=("S5",), paired_vs="U-Net Five", reference_only=True)
    cells = lambda name: [c.strip() for c in next(ln for ln in md.splitlines() if f"| {name} |" in ln).strip("|").split("|")]  # noqa: E731
    assert "| S5 DSC | S5 vs U-Net Five (paired) | S5 DSC paper |" in md
    assert cells("GEMINI-Semi")[3] == "+3.00 ± 1.00 (holds; higher on 6/6)"
    assert cells("BRBS")[3].startswith("-2.00 (not significant (1 seed); higher on 1/2)")
    assert cells("U-Net Five")[3] == "-"
    # DSC pooled over the seeds' cases: mean of 62, 74, 51, 53, 84, 64
    assert cells("GEMINI-Semi")[2].startswith(f"{(62 + 74 + 51 + 53 + 84 + 64) / 6:.1f}±")
    csv_rows = [ln.split(",") for ln in render_csv(rows, results, tasks=("S5",), paired_vs="U-Net Five").splitlines()]
    head = csv_rows[0]
    g = dict(zip(head, next(r for r in csv_rows if r[0] == "GEMINI-Semi" and r[3] == "DSC")))
    assert float(g["paired_mean"]) == pytest.approx(3.0) and float(g["paired_sd_over_seeds"]) == pytest.approx(1.0)
    assert g["paired_verdict"] == "holds" and g["paired_vs"] == "U-Net Five"
    # without paired_vs: the paper's three tasks and no paired column
    assert "paired" not in render_markdown(rows, results, {}).split("\n\n")[2]


def test_structure_means_and_lost_structures_by_hand():
    rows = [{"row": "U-Net Five"}, {"row": "GEMINI-Semi"}]
    nan = math.nan
    results = [
        _res("U-Net Five", 0, [{"dice": 50, "dice_cortex": 80.0, "dice_thalamus": 20.0},
                               {"dice": 50, "dice_cortex": 90.0, "dice_thalamus": nan}]),
        _res("U-Net Five", 1, [{"dice": 50, "dice_cortex": 70.0, "dice_thalamus": 30.0},
                               {"dice": 50, "dice_cortex": 70.0, "dice_thalamus": 10.0}]),
        _res("GEMINI-Semi", 0, [{"dice": 50, "dice_cortex": 85.0, "dice_thalamus": 0.0},
                                {"dice": 50, "dice_cortex": 95.0, "dice_thalamus": 8.0}]),
        _res("GEMINI-Semi", 1, [{"dice": 50, "dice_cortex": 75.0, "dice_thalamus": 40.0},
                                {"dice": 50, "dice_cortex": 65.0, "dice_thalamus": 30.0}]),
    ]
    # the NaN case is left out of the thalamus mean of seed 0
    assert structure_means(results, "U-Net Five", "S5") == {0: {"cortex": 85.0, "thalamus": 20.0},
                                                            1: {"cortex": 70.0, "thalamus": 20.0}}
    md = render_structures("Table II", rows, results, ["S5"], base="U-Net Five")
    assert "| row | seed | mean | cortex | thalamus |" in md
    assert "| GEMINI-Semi | 0 | 47.0 | 90.0 | 4.0 |" in md          # (90 + 4) / 2
    assert "- U-Net Five: lowest structure mean 20.0 % (thalamus, seed 0); no structure under 10 % in any of 2 seed(s)." in md
    assert "- GEMINI-Semi: lowest structure mean 4.0 % (thalamus, seed 0); lost: thalamus (seed 0)." in md
    # delta vs U-Net Five per structure: cortex (90-85, 70-70) -> +2.5; thalamus (4-20, 35-20) -> -0.5
    assert "| GEMINI-Semi | 2 | +1.0 | +2.5 | -0.5 |" in md


def test_cli_synthseg_mode_renders_both_tables_and_refuses_table6(tmp_path):
    from gemini_pl.reproduce.runner import main

    out = tmp_path / "out"
    main(["--data", "synthseg", "--render-only", "--runs", str(tmp_path / "r2"), "--out", str(out)])
    main(["--table", "3", "--data", "synthseg", "--render-only", "--runs", str(tmp_path / "r3"), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"table2.md", "table2.csv", "table2_structures.md", "table3.md",
                                              "table3.csv", "table3_structures.md"}
    assert "S5 vs U-Net Five (paired)" in (out / "table2.md").read_text()
    assert "S5 vs Scratch (2D U-Net) (paired)" in (out / "table3.md").read_text()
    with pytest.raises(SystemExit):
        main(["--table", "6", "--data", "synthseg", "--render-only", "--runs", str(tmp_path), "--out", str(out)])


def test_compare_two_runs_paired_by_hand(tmp_path, capsys):
    import json

    from gemini_pl.reproduce.compare import compare_runs, main

    def write(runs, row, seed, dice, struct, status="ok", select="final"):
        d = tmp_path / runs / "cells" / f"{row}_{seed}_{select}"
        d.mkdir(parents=True)
        cases = [{"case": f"c{i}", "dice": v, "dice_small": s} for i, (v, s) in enumerate(zip(dice, struct))]
        d.joinpath("result.json").write_text(json.dumps({"row": row, "task": "S5", "seed": seed, "status": status, "select": select,
                                                         "stages": [{"name": "main", "cases": cases}]}))

    # A − B per case: seed 0 (+2, +4) -> +3; seed 1 (+2, +2) -> +2; over seeds +2.5 ± 0.71 (s.e. 0.5): holds
    write("a", "U-Net", 0, [72, 74], [40, 50]); write("b", "U-Net", 0, [70, 70], [0, 2])
    write("a", "U-Net", 1, [72, 62], [30, 35]); write("b", "U-Net", 1, [70, 60], [20, 22])
    write("a", "BRBS", 0, [50, 50], [5, 5], status="failed"); write("b", "BRBS", 0, [50, 50], [5, 5])
    # a cell that tested the best checkpoint is its own row, never mixed with the final weights'
    write("a", "U-Net", 0, [10, 10], [1, 1], select="best"); write("b", "U-Net", 0, [0, 0], [1, 1], select="best")
    (tmp_path / "a" / "cells" / "pre").mkdir()
    (tmp_path / "a" / "cells" / "pre" / "result.json").write_text(json.dumps(
        {"row": "U-Net", "task": "pretrain", "seed": 0, "status": "ok", "stages": [{"name": "pretrain"}]}))
    text = compare_runs(tmp_path / "a", tmp_path / "b")
    line = next(x for x in text.splitlines() if x.startswith("| U-Net | "))
    assert "| 0, 1 | 70.0 | 67.5 | +3.00 / +2.00 | +2.50 ± 0.71 | holds (4/4) | small 32.5 (seed 1) | small 1.0 (seed 0) |" in line
    assert "| U-Net (best) | S5 | 0 | 10.0 | 0.0 | +10.00 |" in text
    assert "BRBS" not in text and "pretrain" not in text    # a failed cell and a cell without cases are left out
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp.md")])
    assert (tmp_path / "cmp.md").read_text() == text and capsys.readouterr().out == text
    with pytest.raises(ConfigError, match="no cells/ folder"):
        compare_runs(tmp_path / "nope", tmp_path / "b")
