#!/usr/bin/env bash
# The GPU checks of the performance targets, in one go (run from the repository root on a machine
# with at least one CUDA GPU, after `make install`). Writes Markdown tables and JSON under
# ${OUT:-benchmarks/gpu-results}/ and prints them.
#
#   1. per-module step time, peak memory, FLOPs, % of peak and GPU busy share at paper scale
#      (3D 128³ full width, 2D 512² × 5), fp32 and bf16-mixed  -> bf16/fp32 speed-up at 3D 128³
#   2. bf16 vs fp32 GEMINI losses on the GPU (tests/test_precision.py runs on CUDA when present)
#   3. 2-process DDP (gloo on CPU): same test metrics as 1 process (GPU_CHECKS_DDP=0 skips it)
#   4. data loading throughput (GPU_CHECKS_DATA=0 skips it)
# On a machine whose python already holds CUDA PyTorch: PY=python3 PYTHONPATH=src bash benchmarks/gpu_checks.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
$PY benchmarks/modules.py --paper --busy --precision 32 bf16-mixed --steps 10 --warmup 3 \
    --json "$OUT/modules_paper.json" | tee "$OUT/modules_paper.md"
$PY - "$OUT/modules_paper.json" <<'PYEOF' | tee "$OUT/bf16_speedup.md"
import json, sys
rows = json.load(open(sys.argv[1]))
by = {(r["name"], r["precision"]): r for r in rows}
print("| configuration | fp32 ms | bf16-mixed ms | speed-up (target >= 1.7 at 3D 128³) |\n|---|---:|---:|---:|")
for (name, prec), r in sorted(by.items()):
    if prec == "32" and (name, "bf16-mixed") in by:
        b = by[(name, "bf16-mixed")]
        print(f"| {name} | {r['step_ms']:.1f} | {b['step_ms']:.1f} | {r['step_ms'] / b['step_ms']:.2f}x |")
PYEOF
TESTS=(tests/test_precision.py)
[ "${GPU_CHECKS_DDP:-1}" = 1 ] && TESTS+=(tests/test_ddp_metrics.py)
$PY -m pytest -q -p no:cacheprovider "${TESTS[@]}" | tee "$OUT/tests.txt"
if [ "${GPU_CHECKS_DATA:-1}" = 1 ]; then $PY benchmarks/data_throughput.py | tee "$OUT/data_throughput.md"; fi
