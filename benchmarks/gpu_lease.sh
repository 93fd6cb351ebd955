#!/usr/bin/env bash
# One GPU run's measurements, prepared to run once in at most nine minutes on one H100 or H200
# (about eight minutes of part caps plus the machine's start). From the repository root:
#
#   bash benchmarks/gpu_lease.sh                      # GPU run; files under $OUT
#   GPU_LEASE_DRY=1 OUT=/tmp/x bash benchmarks/gpu_lease.sh   # the same on tiny sizes on the CPU (tests)
#
# Parts, in order, each under its own time cap (timeout), each writing its files as it goes; a part
# that fails or reaches its cap leaves a line saying so in its file and in log.txt, and the next
# part runs (set -u, not -e). Every table is also printed to stdout.
#
#   device      device.txt             GPU, driver, versions, cores, commit, published code path
#   published   published_vs_ours.md   the published GEMINI-MIP iteration vs GeminiPretrain's (2D, 3D)
#   throughput  throughput.md + .json  every module's step at paper scale, fp32/bf16, eager/compiled
#   data        data_pipeline.md       training-loader batches/s at paper scale vs the step rate
#   scale       scale_evidence.md + scale_cases.json   synthseg2d pre-training, fine-tuning vs scratch
#   (all)       log.txt                everything the parts printed, with their times
#
# The published code (YutingHe-list/GEMINI) is read from $GEMINI_PUBLISHED, else from the ignored
# folder benchmarks/published/GEMINI when it is there (benchmarks/published/README.md); without it
# the published side is skipped with a line saying so. Nothing is downloaded. Wheels of missing
# packages placed in .whl/ (benchmarks/gpu_wheels.sh) are installed into /tmp/gemini-site first.
#
# Settings (environment): OUT (default benchmarks/gpu-results/lease), PY (default .venv/bin/python
# when present, else python3), GPU_LEASE_DRY=1, GEMINI_PUBLISHED, caps in seconds
# GPU_LEASE_CAP_{DEVICE,PUBLISHED,THROUGHPUT,DATA,SCALE}, GPU_LEASE_PRETRAIN_S (pre-training time
# limit), GPU_LEASE_FT_ITERS (iterations per fine-tuning run), GPU_LEASE_WORK (scale part's folder).
set -u -o pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_LEASE_DRY:-0}
OUT=${OUT:-benchmarks/gpu-results/lease}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
if [ -z "${GEMINI_PUBLISHED+set}" ] && [ -d benchmarks/published/GEMINI/GEMINI_SS_MIP ]; then
    GEMINI_PUBLISHED="$PWD/benchmarks/published/GEMINI"
fi
export GEMINI_PUBLISHED=${GEMINI_PUBLISHED:-}
# wheels of missing packages (benchmarks/gpu_wheels.sh), installed only when an import fails
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import monai, jsonargparse, SimpleITK, nibabel" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gemini-site .whl/*.whl >>"$LOG" 2>&1 \
        && export PYTHONPATH="$PYTHONPATH:/tmp/gemini-site"
fi

if [ "$DRY" = 1 ]; then
    FLAG=(--dry)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny CPU runs: one thread is fastest on a shared machine
    caps=(60 120 120 120 240)  # generous: a safety net on a busy CPU, not a budget
else
    FLAG=()
    caps=(12 80 110 30 238)  # device, published, throughput, data, scale: 470 s (+ a wheel install)
fi
CAP_DEVICE=${GPU_LEASE_CAP_DEVICE:-${caps[0]}}
CAP_PUBLISHED=${GPU_LEASE_CAP_PUBLISHED:-${caps[1]}}
CAP_THROUGHPUT=${GPU_LEASE_CAP_THROUGHPUT:-${caps[2]}}
CAP_DATA=${GPU_LEASE_CAP_DATA:-${caps[3]}}
CAP_SCALE=${GPU_LEASE_CAP_SCALE:-${caps[4]}}
MARGIN=12  # seconds of each cap kept for the interpreter's start and the last writes

part() {  # part NAME FILE CAP COMMAND...: run COMMAND under CAP seconds, output to the log, then print FILE
    local name=$1 file=$2 cap=$3
    shift 3
    local t0=$SECONDS
    echo "=== $name (cap ${cap} s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
    timeout -k 10 "$cap" "$@" >>"$LOG" 2>&1
    local rc=$?
    local took=$((SECONDS - t0))
    echo "--- $name: ${took} s, exit ${rc}" >>"$LOG"
    if [ "$rc" -ne 0 ]; then
        local why="failed (exit $rc)"
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="stopped at its time cap"; fi
        local line="part $name: $why after ${took} s (the end of log.txt says why); what it measured before is above"
        [ -s "$OUT/$file" ] || echo "## $name: nothing measured" >"$OUT/$file"
        printf '\n%s\n' "$line" >>"$OUT/$file"
        echo "$line" | tee -a "$LOG"
    fi
    cat "$OUT/$file"
    echo
}

budget() { echo $(($1 > MARGIN + 5 ? $1 - MARGIN : 5)); }
L="$PY benchmarks/gpu_lease.py"
part device device.txt "$CAP_DEVICE" $L device --out "$OUT" "${FLAG[@]}"
part published published_vs_ours.md "$CAP_PUBLISHED" $L published --out "$OUT" "${FLAG[@]}" --budget "$(budget "$CAP_PUBLISHED")"
part throughput throughput.md "$CAP_THROUGHPUT" $L throughput --out "$OUT" "${FLAG[@]}" --budget "$(budget "$CAP_THROUGHPUT")"
part data data_pipeline.md "$CAP_DATA" $L data --out "$OUT" "${FLAG[@]}" --budget "$(budget "$CAP_DATA")"
SCALE_ARGS=(--budget "$(budget "$CAP_SCALE")")
[ -n "${GPU_LEASE_PRETRAIN_S:-}" ] && SCALE_ARGS+=(--pretrain-seconds "$GPU_LEASE_PRETRAIN_S")
[ -n "${GPU_LEASE_FT_ITERS:-}" ] && SCALE_ARGS+=(--ft-iterations "$GPU_LEASE_FT_ITERS")
[ -n "${GPU_LEASE_WORK:-}" ] && SCALE_ARGS+=(--work "$GPU_LEASE_WORK")
part scale scale_evidence.md "$CAP_SCALE" $L scale --out "$OUT" "${FLAG[@]}" "${SCALE_ARGS[@]}"
echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
