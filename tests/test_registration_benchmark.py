"""benchmarks/registration.py on tiny phantoms: checkpoints rebuilt with their deformation model,
per-pair metrics equal to independently computed ones, and the printed table."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import REPO
from gemini_pl.classical import demons_displacement
from gemini_pl.errors import CheckpointError, ConfigError
from gemini_pl.metrics import folding_percent, mean_dice, sdlogj
from gemini_pl.spatial import integrate_velocity, warp


def _bench():
    spec = importlib.util.spec_from_file_location("registration_bench", REPO / "benchmarks" / "registration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def svf_checkpoint(tmp_path_factory):
    """A GeminiPretrain checkpoint of one iteration with the velocity preset, written by the CLI."""
    from gemini_pl.cli import cli_main

    root = tmp_path_factory.mktemp("bench")
    out = root / "run"
    cli_main(["fit", "--config", str(REPO / "experiments" / "demo" / "pretrain.yaml"),
              "--config", str(REPO / "experiments" / "homeomorphic" / "velocity.yaml"),
              "--trainer.default_root_dir", str(out), "--trainer.logger", "false", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
              "--data.init_args.root", str(root / "data"), "--data.init_args.size", "32",
              "--data.init_args.num_unlabeled", "4", "--data.init_args.num_test", "3", "--data.init_args.batch_size", "2",
              "--model.init_args.flow_init", "published"])
    ckpt = next(out.rglob("*.ckpt"))
    return root, ckpt


def test_per_pair_metrics_match_independent_computation(svf_checkpoint):
    root, ckpt = svf_checkpoint
    bench = _bench()
    module = bench.load_module(ckpt)
    assert type(module).__name__ == "GeminiPretrain" and module.hparams.integration_steps == 7
    from gemini_pl.data import GeminiDataModule

    dm = GeminiDataModule(root=str(root / "data"), dataset="phantom2d", eval_mode="pairs", num_val_pairs=3)
    dm.setup("test")
    pairs = [{k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in b.items()} for b in dm.test_dataloader()
             for i in range(b["image_a"].shape[0])][:2]
    k = int(dm.num_classes)
    rows = bench.evaluate(module, pairs, k, "multiclass", torch.device("cpu"))
    demons_rows = bench.evaluate(bench.demons_module(2), pairs, k, "multiclass", torch.device("cpu"))
    for i, p in enumerate(pairs):
        with torch.no_grad():
            f_a, f_b = module.net.features(torch.cat([p["image_a"], p["image_b"]])).chunk(2)
            flow = integrate_velocity(module.net.flow(f_a, f_b), 7)
        dice = 100 * float(mean_dice(warp(p["label_a"], flow, mode="nearest"), p["label_b"], k)[0])
        assert rows["dice"][i] == pytest.approx(dice, abs=1e-3)
        assert rows["folding"][i] == pytest.approx(float(folding_percent(flow)[0]), abs=1e-4)
        assert rows["sdlogj"][i] == pytest.approx(float(sdlogj(flow)[0]), rel=1e-4)
        phi = torch.from_numpy(demons_displacement(p["image_b"][0, 0].numpy(), p["image_a"][0, 0].numpy()))[None]
        assert demons_rows["folding"][i] == pytest.approx(float(folding_percent(phi)[0]), abs=1e-4)
        dice = 100 * float(mean_dice(warp(p["label_a"], phi, mode="nearest"), p["label_b"], k)[0])
        assert demons_rows["dice"][i] == pytest.approx(dice, abs=1e-3)
        assert rows["seconds"][i] > 0 and rows["hd95"][i] >= 0


def test_command_line_prints_one_row_per_method(svf_checkpoint, tmp_path, capsys):
    root, ckpt = svf_checkpoint
    out = tmp_path / "table.md"
    text = _bench().main(["--root", str(root / "data"), "--dataset", "phantom2d", "--num-val-pairs", "3", "--pairs", "2",
                          "--model", f"svf={ckpt}", "--device", "cpu", "--anchors", "demons", "--out", str(out)])
    lines = text.splitlines()
    assert lines[0].startswith("| method | warped-label Dice (%) | HD95 (mm) | folding (%) | SDlogJ | s / pair |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["demons (SimpleITK, symmetric forces)", "svf"]
    assert out.read_text() == text + "\n"
    assert "2 test pairs" in capsys.readouterr().out


def test_bad_model_argument_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="NAME=CHECKPOINT"):
        _bench().parse_models(["just/a/path.ckpt"])
    path = tmp_path / "seg.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "gemini_pl.modules.Segmentation"}, "state_dict": {"net.x": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="Segmentation, which has no a deformer"):
        _bench().load_module(path)


def test_json_holds_every_pair_and_the_table_its_means(svf_checkpoint, tmp_path):
    import json
    import statistics

    root, ckpt = svf_checkpoint
    js = tmp_path / "seed0.json"
    text = _bench().main(["--root", str(root / "data"), "--dataset", "phantom2d", "--num-val-pairs", "3", "--pairs", "2",
                          "--model", f"svf={ckpt}", "--device", "cpu", "--anchors", "demons", "--no-demons", "--json", str(js)])
    rows = json.loads(js.read_text())["svf"]
    assert len(rows["dice"]) == len(rows["pair"]) == 2 and rows["pair"][0] != rows["pair"][1]
    assert all("_to_" in p for p in rows["pair"])
    assert f"{statistics.fmean(rows['dice']):.2f} ±" in text.splitlines()[2]


def test_summary_pairs_each_seed_with_the_reference(tmp_path):
    """Hand-made files: demons once (shared), a method over three seeds; the paired differences and
    the verdict by hand."""
    import json

    pairs = ["a_to_b", "b_to_c"]
    demons = {"demons": {"pair": pairs, "dice": [80.0, 70.0], "folding": [0.1, 0.3], "sdlogj": [1.0, 1.0]}}
    (tmp_path / "demons.json").write_text(json.dumps(demons))
    # per seed, Dice minus demons: (+2, +4) -> +3; (+1, +1) -> +1; (+3, +1) -> +2: mean 2, sd 1, s.e. 0.577
    for s, dice in enumerate([[82.0, 74.0], [81.0, 71.0], [83.0, 71.0]]):
        # the pairs in another order in seed 2: matched by name
        order = [1, 0] if s == 2 else [0, 1]
        (tmp_path / f"seed{s}.json").write_text(json.dumps({"net": {
            "pair": [pairs[i] for i in order], "dice": [dice[i] for i in order], "folding": [0.0, 0.0],
            "sdlogj": [0.5, 0.5]}}))
    files = [tmp_path / f for f in ("demons.json", "seed0.json", "seed1.json", "seed2.json")]
    text = _bench().main(["--summary", *map(str, files), "--reference", "demons"])
    lines = text.splitlines()
    assert lines[2] == "| demons | 1 | 75.00 | 0.200 | 1.00 | – | – | – |"
    assert lines[3] == "| net | 3 | 78.00, 76.00, 77.00 | 0.000, 0.000, 0.000 | 0.50, 0.50, 0.50 | +3.00, +1.00, +2.00; +2.00 ± 1.00 | holds | 6/6 |"
    # a worse method in one seed: not significant
    (tmp_path / "seed2.json").write_text(json.dumps({"net": {"pair": pairs, "dice": [78.0, 70.0], "folding": [0, 0],
                                                             "sdlogj": [0, 0]}}))
    assert "+3.00, +1.00, -1.00; +1.00 ± 2.00 | not significant | 4/6 |" in _bench().main(
        ["--summary", *map(str, files), "--reference", "demons"])
    with pytest.raises(ConfigError, match="'nope' is in none"):
        _bench().main(["--summary", *map(str, files), "--reference", "nope"])


def _first_pair_rows(root, tmp_path, args: list[str]):
    """Run the benchmark on the first phantom test pair with ``args``; returns (printed row names,
    the --json rows, (image_a, image_b, label_a, label_b) of that pair, the number of classes)."""
    import json

    from gemini_pl.data import GeminiDataModule

    js = tmp_path / "rows.json"
    text = _bench().main(["--root", str(root / "data"), "--dataset", "phantom2d", "--num-val-pairs", "3", "--pairs", "1",
                          "--device", "cpu", "--anchors", "demons", "--no-demons", *args, "--json", str(js)])
    dm = GeminiDataModule(root=str(root / "data"), dataset="phantom2d", eval_mode="pairs", num_val_pairs=3)
    dm.setup("test")
    p = next(iter(dm.test_dataloader()))
    names = [line.split("|")[1].strip() for line in text.splitlines()[2:]]
    return names, json.loads(js.read_text()), tuple(p[k][:1] for k in ("image_a", "image_b", "label_a", "label_b")), int(dm.num_classes)


def test_refine_rows_are_the_refined_fields_of_each_model(svf_checkpoint, tmp_path):
    """``--refine 5 --refine-identity``: one refined row per model and the refinement alone; the
    refined row's Dice is that of :func:`~gemini_pl.refinement.refine_flow` on the model's own field."""
    from gemini_pl.refinement import refine_flow

    root, ckpt = svf_checkpoint
    names, rows, (a, b, la, lb), k = _first_pair_rows(root, tmp_path, ["--model", f"svf={ckpt}", "--refine", "5", "--identity",
                                                                       "--refine-identity"])
    assert names == ["svf", "svf + refine 5", "no registration (identity)", "refinement alone (from the identity), 5 steps"]
    module = _bench().load_module(ckpt)
    with torch.no_grad():
        hp = module.hparams
        assert (hp.refine_lr, hp.refine_grid, hp.refine_sigma) == (0.5, 2, 1.0)  # the defaults
        flow = refine_flow(a, b, module.flow(a, b), 5, 0.5, 2, module.refine_objective(), sigma=1.0)
        zero = refine_flow(a, b, torch.zeros_like(flow), 5, 0.5, 2, module.refine_objective(), sigma=1.0)
    assert rows["svf + refine 5"]["dice"][0] == pytest.approx(100 * float(mean_dice(warp(la, flow, mode="nearest"), lb, k)[0]), abs=1e-3)
    assert rows["no registration (identity)"]["dice"][0] == pytest.approx(100 * float(mean_dice(la, lb, k)[0]), abs=1e-3)
    assert rows["no registration (identity)"]["folding"][0] == 0.0
    alone = rows["refinement alone (from the identity), 5 steps"]["dice"][0]
    assert alone == pytest.approx(100 * float(mean_dice(warp(la, zero, mode="nearest"), lb, k)[0]), abs=1e-3)


def test_cascade_rows_are_the_composed_passes_of_each_model(svf_checkpoint, tmp_path):
    """``--cascade 1 2 --refine 3``: a row per passes × refinement, and the two-pass row's Dice is
    that of compose(φ_1, φ_2) with φ_2 the model's field of the moving image warped by φ_1, and the
    refined row's that of the refinement started from that field."""
    from gemini_pl.refinement import refine_flow
    from gemini_pl.spatial import compose

    root, ckpt = svf_checkpoint
    names, rows, (a, b, la, lb), k = _first_pair_rows(root, tmp_path, ["--model", f"svf={ckpt}", "--cascade", "1", "2",
                                                                       "--refine", "3"])
    assert names == ["svf", "svf + refine 3", "svf, 2 passes", "svf, 2 passes + refine 3"]
    module = _bench().load_module(ckpt)
    with torch.no_grad():
        first = module.flow(a, b)
        both = compose(first, module.flow(warp(a, first), b))
        both_refined = refine_flow(a, b, both, 3, 0.5, 2, module.refine_objective(), sigma=1.0)
    assert rows["svf, 2 passes"]["dice"][0] == pytest.approx(100 * float(mean_dice(warp(la, both, mode="nearest"), lb, k)[0]), abs=1e-3)
    assert rows["svf, 2 passes"]["folding"][0] == pytest.approx(float(folding_percent(both)[0]), abs=1e-6)
    refined = rows["svf, 2 passes + refine 3"]["dice"][0]  # the refinement starts from the two passes' field
    assert refined == pytest.approx(100 * float(mean_dice(warp(la, both_refined, mode="nearest"), lb, k)[0]), abs=1e-3)


def test_cascade_levels_rows_run_the_later_passes_on_other_levels(svf_checkpoint, tmp_path):
    """``--cascade 2 --cascade-levels 2`` (the checkpoint has one level): the row ``svf, 2 passes,
    later 2 levels`` scores compose(φ_1, φ_2) with φ_2 the two-level field of the warped moving
    image, not the one-level one."""
    from gemini_pl.spatial import compose

    root, ckpt = svf_checkpoint
    names, rows, (a, b, la, lb), k = _first_pair_rows(root, tmp_path, ["--model", f"svf={ckpt}", "--cascade", "2",
                                                                       "--cascade-levels", "2"])
    assert names == ["svf, 2 passes, later 2 levels"]
    module = _bench().load_module(ckpt)
    with torch.no_grad():
        first = module.flow(a, b)
        both = compose(first, module.flow(warp(a, first), b, levels=2))
        plain = compose(first, module.flow(warp(a, first), b))
    assert (both - plain).abs().max() > 1e-3
    assert rows[names[0]]["dice"][0] == pytest.approx(100 * float(mean_dice(warp(la, both, mode="nearest"), lb, k)[0]), abs=1e-3)
    assert rows[names[0]]["folding"][0] == pytest.approx(float(folding_percent(both)[0]), abs=1e-6)


def test_identity_and_refinement_alone_need_no_model_or_anchor(phantom_root):
    """``--no-demons --identity --refine-identity --refine 3`` benchmarks those two rows alone (they
    were refused as "nothing to benchmark"); ``--refine-identity`` without ``--refine`` still is."""
    text = _bench().main(["--root", str(phantom_root), "--dataset", "phantom2d", "--num-val-pairs", "3",
                          "--pairs", "1", "--device", "cpu", "--anchors", "demons", "--no-demons", "--identity",
                          "--refine-identity", "--refine", "3"])
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == [
        "no registration (identity)", "refinement alone (from the identity), 3 steps"]
    with pytest.raises(ConfigError, match="nothing to benchmark"):
        _bench().main(["--anchors", "demons", "--no-demons", "--refine-identity"])


def test_the_memory_setting_is_printed_and_can_be_left_alone(phantom_root, capsys, monkeypatch):
    """The benchmark times in the gemini-pl command's memory setting (``keep_freed_memory``) unless
    ``--default-malloc`` is given, and says which in its header."""
    bench = _bench()
    calls = []
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: calls.append(1) or True)
    base = ["--root", str(phantom_root), "--dataset", "phantom2d", "--num-val-pairs", "3", "--pairs", "1",
            "--device", "cpu", "--anchors", "demons", "--no-demons", "--identity"]
    bench.main(base)
    assert calls == [1] and "keep_freed_memory: True" in capsys.readouterr().out
    bench.main([*base, "--default-malloc"])
    assert calls == [1] and "keep_freed_memory: False" in capsys.readouterr().out


def test_anchors_default_to_demons_and_the_installed_tools(monkeypatch):
    """--anchors: the named ones in order; by default demons and each installed tool of the bench
    extra; --no-demons drops demons; an unknown or missing tool is a one-line ConfigError."""
    import gemini_pl.classical as classical

    bench = _bench()
    monkeypatch.setattr(classical, "method_installed", lambda m: m in ("demons", "syn"))
    assert bench.parse_anchors(None) == ["demons", "syn"]
    with pytest.raises(ConfigError, match="greedy_affine is not installed"):
        bench.parse_anchors("greedy_affine")
    assert bench.parse_anchors(None, no_demons=True) == ["syn"]
    assert bench.parse_anchors("syn, demons,syn") == ["syn", "demons"]
    assert bench.parse_anchors("demons", no_demons=True) == []
    with pytest.raises(ConfigError, match=r'greedy is not installed: pip install "gemini-pl\[bench\]"'):
        bench.parse_anchors("demons,greedy")
    with pytest.raises(ConfigError, match="unknown anchor 'elastix'"):
        bench.parse_anchors("elastix")
    monkeypatch.setattr(classical, "method_installed", lambda m: True)
    assert bench.parse_anchors(None) == ["demons", "greedy", "syn"]  # greedy_affine only when named
    assert bench.parse_anchors("greedy_affine,greedy") == ["greedy_affine", "greedy"]
    assert bench.anchor_module("greedy_affine", 2, threads=1).options == {"affine": True, "threads": 1}
    assert [bench.ANCHOR_NAMES[m] for m in ("demons", "greedy", "syn")] == [
        "demons (SimpleITK, symmetric forces)", "Greedy (NCC r2, 100x50x20, no affine)", "ANTs SyN (CC, SyNCC: rigid + affine + SyN)"]
    with pytest.raises(ConfigError, match="nothing to benchmark"):
        bench.main(["--anchors", "demons", "--no-demons"])


def test_an_anchor_row_is_scored_from_the_tools_own_field(phantom_root):
    """Greedy on two phantom pairs (one thread): Dice of the label warped by Greedy's field and
    folding / SDlogJ of that field, computed here independently, equal the benchmark's row."""
    pytest.importorskip("picsl_greedy")
    from gemini_pl.classical import greedy_displacement
    from gemini_pl.data import GeminiDataModule

    bench = _bench()
    dm = GeminiDataModule(root=str(phantom_root), dataset="phantom2d", eval_mode="pairs", num_val_pairs=3)
    dm.setup("test")
    pairs = [{k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in b.items()} for b in dm.test_dataloader()
             for i in range(b["image_a"].shape[0])][:2]
    k = int(dm.num_classes)
    rows = bench.evaluate(bench.anchor_module("greedy", 2, threads=1), pairs, k, "multiclass", torch.device("cpu"))
    for i, p in enumerate(pairs):
        phi = torch.from_numpy(greedy_displacement(p["image_b"][0, 0].numpy(), p["image_a"][0, 0].numpy(), threads=1))[None]
        dice = 100 * float(mean_dice(warp(p["label_a"], phi, mode="nearest"), p["label_b"], k)[0])
        assert rows["dice"][i] == pytest.approx(dice, abs=1e-3)
        assert rows["folding"][i] == pytest.approx(float(folding_percent(phi)[0]), abs=1e-4)
        assert rows["sdlogj"][i] == pytest.approx(float(sdlogj(phi)[0]), rel=1e-4)


def test_anchors_are_timed_without_a_warm_up_pair():
    """evaluate(warmup=False) registers each pair once (a classical tool has no kernels to warm up,
    and a 3D SyN pair takes minutes); the networks keep the untimed warm-up pair. A stub that
    does not warp: Dice of two 4x4 squares overlapping on 4x3 is 2·12/32 = 75 %."""
    bench = _bench()

    class Stub(torch.nn.Module):
        calls = 0

        def register_pair(self, batch):
            Stub.calls += 1
            return {"flow": torch.zeros(1, 2, 8, 8), "warped_label": batch["label_a"]}

    a, b = torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 1, 8, 8, dtype=torch.long)
    a[..., 2:6, 2:6], b[..., 2:6, 3:7] = 1, 1
    pairs = [{"image_a": a.float(), "image_b": b.float(), "label_a": a, "label_b": b, "name_a": ["a"], "name_b": ["b"]}] * 3
    rows = bench.evaluate(Stub(), pairs, 2, "multiclass", torch.device("cpu"), warmup=False)
    assert Stub.calls == 3 and rows["dice"] == pytest.approx([75.0] * 3) and rows["folding"] == [0.0] * 3
    bench.evaluate(Stub(), pairs, 2, "multiclass", torch.device("cpu"))
    assert Stub.calls == 3 + 4
