"""benchmarks/gpu_lease.sh in its dry mode (GPU_LEASE_DRY=1): the whole script on tiny sizes on the CPU.

One run of the script (module fixture), then its files are read back: at most eight, each table
present in its file and on stdout, the numbers parsed and finite, the published side skipped with
its line when no published code is given, and the scale part's claims table holding the paired
per-seed differences.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {"device.txt", "published_vs_ours.md", "throughput.md", "throughput.json", "data_pipeline.md",
         "scale_evidence.md", "scale_cases.json", "log.txt"}


@pytest.fixture(scope="module")
def lease(tmp_path_factory):
    out = tmp_path_factory.mktemp("lease-out")
    work = tmp_path_factory.mktemp("lease-work")
    env = dict(os.environ, GPU_LEASE_DRY="1", OUT=str(out), PY=sys.executable, GEMINI_PUBLISHED="",
               GPU_LEASE_WORK=str(work), PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_lease.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    return out, res


def _table(text: str, first_header_cell: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table whose header starts with ``| first_header_cell |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _float(cell: str) -> float:
    return float(cell.replace("x", "").replace("%", "").split()[0])


def test_script_writes_at_most_eight_files_and_prints_every_table(lease):
    out, res = lease
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert len(names) <= 8 and names == FILES, names
    assert all((out / n).stat().st_size > 0 for n in names)
    assert "failed" not in res.stdout and "time cap" not in res.stdout, res.stdout[-3000:]
    for heading in ("## Published GEMINI-MIP vs gemini-pl", "## Throughput at paper scale", "## Data pipeline at paper scale",
                    "## GEMINI at scale: synthseg2d"):
        assert heading in res.stdout and heading in (out / "log.txt").read_text() + res.stdout
    device = (out / "device.txt").read_text()
    assert "mode: dry run" in device and "torch: " in device and "gemini_pl: importable" in device


def test_published_part_skips_with_its_line_and_times_ours(lease):
    out, res = lease
    text = (out / "published_vs_ours.md").read_text()
    skip = "published code: skipped — GEMINI_PUBLISHED is not set"
    assert skip in text and skip in res.stdout
    rows = _table(text, "input")
    assert [r[0].split()[0] for r in rows] == ["3D", "2D"]
    for r in rows:
        assert r[1] == "n/a"  # published side skipped
        ours = _float(r[3])
        assert math.isfinite(ours) and ours > 0


def test_throughput_rows_and_bf16_pair(lease):
    out, _ = lease
    rows = json.loads((out / "throughput.json").read_text())
    assert {(r["name"], r["precision"], r["option"]) for r in rows} == {
        ("pretrain-3d", "32", "eager"), ("pretrain-3d", "bf16-mixed", "eager"), ("pretrain-2d", "32", "eager")}
    for r in rows:
        assert math.isfinite(r["step_ms"]) and r["step_ms"] > 0 and r["gflop"] > 0
    text = (out / "throughput.md").read_text()
    speed = [line for line in text.splitlines() if line.startswith("| pretrain-3d | eager |")]
    assert len(speed) == 1
    fp32, bf16, ratio = (_float(c) for c in speed[0].strip("|").split("|")[2:5])
    assert ratio == pytest.approx(fp32 / bf16, rel=0.01)
    assert "compile: skipped (compiled variants run on CUDA only" in text


def test_data_pipeline_rates(lease):
    out, _ = lease
    rows = _table((out / "data_pipeline.md").read_text(), "input")
    assert {r[0].split()[0] for r in rows} == {"3D", "2D"} and len(rows) == 8
    for r in rows:
        rate = _float(r[4])
        assert math.isfinite(rate) and rate > 0
        assert r[6] in ("yes", "no")  # compared with the step rate of throughput.json


def test_scale_claims_table_holds_paired_numbers(lease):
    out, _ = lease
    text = (out / "scale_evidence.md").read_text()
    claims = _table(text, "labeled subjects | fine-tuned Dice (%) | scratch Dice (%) | paired difference per seed (points)")
    assert len(claims) == 1 and claims[0][0] == "1"
    row = claims[0]
    a, b = _float(row[1]), _float(row[2])
    per_seed = [float(x) for x in row[3].split(",")]
    assert len(per_seed) == 2 and all(math.isfinite(x) for x in per_seed)
    mean = float(row[4].split("±")[0])
    assert mean == pytest.approx(sum(per_seed) / 2, abs=0.011)
    wins, pairs = map(int, row[6].split("/"))
    assert pairs == 4 and 0 <= wins <= pairs  # 2 seeds x 2 test cases in the dry run
    assert row[7] in ("holds", "reversed", "not significant")
    assert 0 <= a <= 100 and 0 <= b <= 100
    data = json.loads((out / "scale_cases.json").read_text())
    assert data["pretrain"]["iterations"] >= 1 and data["pretrain"]["checkpoint"] is True
    assert len(data["runs"]) == 4 and all(len(r["cases"]) == 2 for r in data["runs"])
    assert {r["transfer"] != "" for r in data["runs"] if r["arm"] == "gemini"} == {True}
    assert data["claims"][0]["pairs"] == 4 and math.isfinite(data["claims"][0]["mean"])


STAND_IN = '''
"""A stand-in with the published script's interface (Trainer, train_epoch, train_iterator, GEMINI)."""
import os

import torch
import torch.nn as nn


class GEMINI(nn.Module):
    def __init__(self, n_channels=1, chan=(4,) * 9, classes=1):
        super().__init__()
        self.conv = nn.Conv2d(n_channels, chan[-1], 3, padding=1)
        self.res_conv = nn.Conv2d(chan[-1], classes, 1)
        self.calls = []

    def forward(self, A, B, res=False):  # no gvs argument, as at the published commit
        self.calls.append(res)
        if res:
            return self.res_conv(self.conv(A))
        fA, fB = self.conv(A), self.conv(B)
        return fA, fB, fA[:, :2], fB[:, :2]


class Trainer:
    def __init__(self, unlabeled_dir="data", checkpoint_dir="weights", result_dir="results", batch_size=5, lr=1e-4):
        assert os.listdir(unlabeled_dir)
        self.lr, self.iters = lr, 200
        self.Network = GEMINI()
        self.opt = torch.optim.Adam(self.Network.parameters(), lr=lr)
        self.dataloader_train = None

    def train_iterator(self, aug, a, b):
        fA, fB, ab, ba = self.Network(a, b)
        (ab.mean() + ba.mean() + fA.mean() - fB.mean()).backward()
        self.opt.step()
        self.opt.zero_grad()
        res = self.Network(aug, None, gvs=False)
        ((res - a) ** 2).mean().backward()
        self.opt.step()
        self.opt.zero_grad()

    def train_epoch(self, epoch):
        for i in range(self.iters):
            a, b = next(self.dataloader_train.__iter__())
            assert a.shape == b.shape
            self.train_iterator(a + 0.01, a, b)
            print("iteration", i)
'''


def test_published_runner_drives_a_stand_in_of_the_script(tmp_path):
    """run_published.py on a stand-in with the script's interface: the loader is swapped, the
    restoration call reaches the network as res=True, and the timings come back finite."""
    folder = tmp_path / "GEMINI_SS_MIP"
    folder.mkdir()
    (folder / "GEMINI_SS_MIP_2d.py").write_text(STAND_IN)
    (tmp_path / "COMMIT").write_text("0123abc\n")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "published" / "run_published.py"), "--root", str(tmp_path),
                          "--dims", "2", "--size", "16", "--batch", "2", "--steps", "3", "--warmup", "1",
                          "--widths", *["4"] * 9], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["published_commit"] == "0123abc" and (out["dims"], out["size"], out["batch"]) == (2, 16, 2)
    assert 0 < out["train_step_ms"] <= out["iteration_ms"] and math.isfinite(out["iteration_ms"])
