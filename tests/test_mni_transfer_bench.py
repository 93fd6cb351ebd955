"""benchmarks/mni_transfer.py: the variants' stage plans and the paired analysis of hand-made
per-case results (verdicts computed by hand)."""

from __future__ import annotations

import csv
import importlib.util
import sys

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("mni_transfer_bench", REPO / "benchmarks" / "mni_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _write(path, dice):
    path.mkdir(parents=True)
    with open(path / "test_cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "dice"])
        w.writerows([[f"s{i}", d] for i, d in enumerate(dice)])


def test_switch_variants_turn_on_one_switch_each():
    b = _bench()
    assert b.VARIANTS["mip_inverse"].pretrain == ("pretrain_inverse", ["--model.init_args.lambda_inverse", "0.1"])
    assert b.VARIANTS["mip_velocity"].pretrain[1] == ["--config", str(REPO / "experiments/homeomorphic/velocity.yaml")]
    semi = b.VARIANTS["semi_jacobian"]
    assert semi.config == "semi" and semi.pretrain is False and semi.against[0] == "semi"
    assert semi.extra == ["--model.init_args.lambda_jacobian", "1.0"]


def test_chain_commands(tmp_path, monkeypatch):
    """A pre-trained variant: its own pre-training, then fit from its last weights and test; a Semi
    variant: no init_from, the switch given to fit and test."""
    b = _bench()
    calls = []
    monkeypatch.setattr(b, "_cli", lambda *a, threads=1: calls.append(a))
    b._chain(tmp_path / "seed1", ["--data.init_args.root", "d"], 1, b.VARIANTS["mip_jacobian"], 1)
    assert calls[0][:3] == ("fit", "--config", str(b.CONFIGS / "pretrain.yaml"))
    assert calls[0][-2:] == ("--model.init_args.lambda_jacobian", "1.0")
    assert "--model.init_args.init_from" in calls[1]
    assert calls[1][calls[1].index("--model.init_args.init_from") + 1] == str(tmp_path / "seed1/pretrain_jacobian/checkpoints/last.ckpt")
    assert calls[2][0] == "test" and len(calls) == 3
    calls.clear()
    b._chain(tmp_path / "seed1", [], 1, b.VARIANTS["semi_bending"], 1)
    assert len(calls) == 2 and all("--model.init_args.init_from" not in c for c in calls)
    assert all(str(REPO / "experiments/homeomorphic/bending.yaml") in c for c in calls)


def test_analyse_pairs_cases_within_seeds(tmp_path):
    b = _bench()
    for s, (scratch, tuned, plain) in enumerate([([80, 90], [82, 93], [80, 91]), ([70, 70], [71, 72], [70, 70]),
                                                  ([60, 62], [62, 64], [61, 61])]):
        _write(tmp_path / f"seed{s}" / "seg_scratch" / "results", scratch)
        _write(tmp_path / f"seed{s}" / "seg_long" / "results", tuned)
        _write(tmp_path / f"seed{s}" / "seg_gemini" / "results", plain)
    out = b.analyse(tmp_path, [0, 1, 2], ["long"])
    lines = {ln.split("|")[2].strip(): [c.strip() for c in ln.split("|")] for ln in out.splitlines()[2:]}
    # vs scratch: seed means 2.5, 1.5, 2.0 -> mean 2.0, sd 0.5, s.e. 0.29 -> holds; 6/6 higher
    v = lines["seg_long − seg_scratch"]
    assert v[6:10] == ["+2.50, +1.50, +2.00", "+2.00 ± 0.50", "holds", "6/6"]
    # vs plain: 1.5, 1.5, 2.0 -> holds
    assert lines["seg_long − seg_gemini"][8] == "holds"
