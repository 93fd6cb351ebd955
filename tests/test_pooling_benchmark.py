"""benchmarks/pooling.py runs and finds the replacements equal to PyTorch's kernels."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pooling_benchmark_prints_equal_values_and_a_registration_ratio():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pooling.py"), "--repeats", "1"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    max_rows = [line for line in out.splitlines() if line.startswith("| (") and line.endswith("|") and line.count("|") == 6]
    assert len(max_rows) == 5 and all(row.split("|")[5].strip() == "True" for row in max_rows)
    box_rows = [line for line in out.splitlines() if line.startswith("| (") and line.count("|") == 9]
    assert len(box_rows) == 5
    for row in box_rows:
        value, grad = (float(x) for x in row.split("|")[8].split("/"))
        assert value < 1e-5 and grad < 1e-5
    assert re.search(r"paired ratio \d+\.\d\d", out)
