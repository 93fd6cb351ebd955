"""keep_freed_memory: freed multi-MB buffers are reused instead of page-faulted in again."""

import os
import subprocess
import sys

import pytest

from gemini_pl.runtime import keep_freed_memory

# Page faults (ru_minflt) per 96³ corruption call after warm-up, in a fresh interpreter.
SCRIPT = """
import resource, sys, torch
from gemini_pl.runtime import keep_freed_memory
applied = keep_freed_memory()
from gemini_pl.augment.corruption import CorruptionConfig, corrupt
torch.set_num_threads(1)
x = torch.rand(1, 1, 96, 96, 96)
g = torch.Generator().manual_seed(0)
cfg = CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0)
corrupt(x, cfg, g); corrupt(x, cfg, g)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    corrupt(x, cfg, g)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
"""


def _faults(opt_out: bool) -> tuple[str, float]:
    env = dict(os.environ, GEMINI_PL_KEEP_FREED_MEMORY="0" if opt_out else "1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_cuts_page_faults():
    applied_default, faults_default = _faults(opt_out=True)
    applied_tuned, faults_tuned = _faults(opt_out=False)
    assert applied_default == "False"  # the opt-out is honoured
    assert applied_tuned == "True"
    # measured here: ~1200 faults per call by default, ~170 with the setting
    assert faults_tuned < 0.5 * faults_default


def test_opt_out(monkeypatch):
    monkeypatch.setenv("GEMINI_PL_KEEP_FREED_MEMORY", "off")
    assert keep_freed_memory() is False
