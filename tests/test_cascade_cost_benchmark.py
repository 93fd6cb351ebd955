"""benchmarks/cascade_cost.py runs and finds register()'s passes equal to the plain composition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cascade_cost_benchmark_prints_a_ratio_and_the_same_map():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cascade_cost.py"), "--repeats", "1", "--passes", "2", "3"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [2, 3]
    for _, plain, cached, ratio, diff in rows:
        assert float(plain) > 0 and float(cached) > 0 and float(ratio) > 0
        assert float(diff) < 1e-4  # random weights: fields of a fraction of a voxel, the same map
