#!/usr/bin/env bash
# The 3D rows of the registration benchmark ("Registration vs the classical anchor" in
# benchmarks/RESULTS.md): the real-anatomy demo's stages on the MNI152-derived volumes (mni3d,
# 99 x 117 x 95 at 2 mm; 40 unlabeled, 5 labeled, 20 test subjects, data seed 0) for every training
# seed, then benchmarks/registration.py on the 20 held-out test pairs. Meant for one CUDA GPU (the
# seeds' stages run side by side on it); ACCEL=cpu runs it on the CPU (slowly).
#
#   per seed S (seed_everything, data sampling and augmentation, as benchmarks/mni_transfer.py):
#     pretrain      GEMINI-MIP, published displacement     experiments/demo_mni/pretrain.yaml
#     pretrain_svf  GEMINI-MIP with the velocity field     + experiments/homeomorphic/velocity.yaml
#     reg           Registration from `pretrain`, published displacement   experiments/demo_mni/reg.yaml
#     reg_svf       the same with the velocity field
#     reg_svf_long  the velocity field, LONG_EPOCHS epochs (the 2D benchmark's longer run)
#   demons (deterministic) once, on the CPU, beside the training.
#
# Writes under $OUT (at most 8 files): log.txt (device, data checksums, stage times, failures),
# demons.json, seed<S>.json (the 200-iteration models) and long<S>.json (the longer one): every
# pair's values per method (benchmarks/registration.py --json); the table over seeds comes from
#   python benchmarks/registration.py --summary $OUT/*.json --reference "demons (SimpleITK, symmetric forces)"
#
# Usage (repository root, after `make install`):  bash benchmarks/registration_3d.sh
# Measured on one H100 (benchmarks/RESULTS.md): at 2 mm a training process holds about 9.7 GiB (batch 2,
# fp32) and six 200-iteration pre-trainings side by side took 276-285 s; the nine processes of three
# seeds' registrations ran out of the 80 GB, so there give SEEDS one at a time. At SPACING=4 the six
# pre-trainings took 70-74 s and the six 200-iteration registrations 60-76 s.
# Settings (environment): PY, OUT (benchmarks/gpu-results/reg3d), RUNS (runs/reg3d), SEEDS ("0 1 2"),
# EPOCHS (5) and LONG_EPOCHS (25) of LIMIT (40) iterations, BATCH (2 pairs; the 2D demo uses 4),
# ACCEL (gpu), PAIRS (20), ATLAS (the template .npz of `python -m gemini_pl.data.anatomy --save-atlas`,
# for a machine without nilearn), THREADS (CPU threads per training process, 2), SPACING (mm: every
# method trains and is scored on the volumes resampled to this spacing, e.g. 4 for 50 x 59 x 48;
# default the files' 2 mm), SKIP (stages not to run, e.g. "pretrain_svf reg_svf_long"; their rows
# are left out).
set -uo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results/reg3d}
RUNS=${RUNS:-runs/reg3d}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-5}
LONG_EPOCHS=${LONG_EPOCHS:-25}
LIMIT=${LIMIT:-40}
BATCH=${BATCH:-2}
ACCEL=${ACCEL:-gpu}
PAIRS=${PAIRS:-20}
THREADS=${THREADS:-2}
SPACING=${SPACING:-}
SKIP=" ${SKIP:-} "
PREP=(); SPC=()
if [ -n "$SPACING" ]; then PREP=(--data.init_args.preprocessing "{spacing: [$SPACING, $SPACING, $SPACING]}"); SPC=(--spacing "$SPACING" "$SPACING" "$SPACING"); fi
DEMONS="demons (SimpleITK, symmetric forces)"
mkdir -p "$OUT" "$RUNS"
LOG="$OUT/log.txt"
T0=$(date +%s)
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, lightning, monai; print('torch', torch.__version__, 'lightning', lightning.__version__, 'monai', monai.__version__)"; } >>"$LOG" 2>&1
say "data: mni3d (40 unlabeled, 5 labeled, 20 test, seed 0)${SPACING:+, resampled to $SPACING mm}"
$PY -m gemini_pl.data.anatomy --root data --dims 3 ${ATLAS:+--atlas "$ATLAS"} >>"$LOG" 2>&1 || { say "data generation failed"; exit 1; }
( cd data/mni3d && md5sum train/unlabeled/image/mni_0000.nii.gz test/labeled/image/mni_0045.nii.gz test/labeled/label/mni_0064.nii.gz ) >>"$LOG"
say "data ready"

# demons: deterministic, on the CPU, beside the training
( $PY benchmarks/registration.py --root data --dataset mni3d "${SPC[@]}" --device cpu --pairs "$PAIRS" --json "$OUT/demons.json" \
    >"$RUNS/demons.log" 2>&1 && say "demons done" || { say "demons FAILED"; tail -20 "$RUNS/demons.log" >>"$LOG"; } ) &

fit() {  # fit <seed> <stage> <args...>
  local s=$1 stage=$2; shift 2
  local dir="$RUNS/seed$s/$stage" start=$(date +%s)
  [[ "$SKIP" == *" $stage "* ]] && return 0
  mkdir -p "$dir"
  if OMP_NUM_THREADS=$THREADS $PY -m gemini_pl.cli fit "$@" --data.init_args.dataset mni3d "${PREP[@]}" \
      --data.init_args.batch_size "$BATCH" --trainer.accelerator "$ACCEL" --trainer.precision 32-true \
      --trainer.limit_train_batches "$LIMIT" --trainer.default_root_dir "$dir" \
      --seed_everything "$s" --model.init_args.aug_seed "$s" --data.init_args.seed "$s" >"$dir/fit.log" 2>&1; then
    say "seed $s $stage: $(( $(date +%s) - start )) s"
  else
    say "seed $s $stage FAILED"; tail -20 "$dir/fit.log" >>"$LOG"; return 1
  fi
}

evaluate() {  # evaluate <json> <NAME=CKPT>...
  local json=$1; shift
  local args=()
  for m in "$@"; do [ -f "${m#*=}" ] && args+=(--model "$m"); done  # a failed stage leaves no checkpoint
  [ ${#args[@]} -gt 0 ] || { say "nothing to evaluate for $(basename "$json")"; return 1; }
  $PY benchmarks/registration.py --root data --dataset mni3d "${SPC[@]}" --no-demons --device "$([ "$ACCEL" = gpu ] && echo cuda || echo cpu)" \
      --pairs "$PAIRS" --json "$json" "${args[@]}" >>"$RUNS/eval.log" 2>&1 && say "evaluated $(basename "$json")" \
      || { say "evaluation FAILED ($json)"; tail -20 "$RUNS/eval.log" >>"$LOG"; }
}

seed_chain() {
  local s=$1 R="$RUNS/seed$1" svf=experiments/homeomorphic/velocity.yaml
  local reg=(--config experiments/demo_mni/reg.yaml --model.init_args.init_from "$R/pretrain/checkpoints/last.ckpt")
  fit "$s" pretrain_svf --config experiments/demo_mni/pretrain.yaml --config "$svf" --trainer.max_epochs "$EPOCHS" &
  local pre_svf=$!
  fit "$s" pretrain --config experiments/demo_mni/pretrain.yaml --trainer.max_epochs "$EPOCHS" || { wait $pre_svf; return 1; }
  fit "$s" reg_svf_long "${reg[@]}" --config "$svf" --trainer.max_epochs "$LONG_EPOCHS" &
  local long=$!
  fit "$s" reg "${reg[@]}" --trainer.max_epochs "$EPOCHS" &
  local disp=$!
  fit "$s" reg_svf "${reg[@]}" --config "$svf" --trainer.max_epochs "$EPOCHS"
  wait $pre_svf $disp
  evaluate "$OUT/seed$s.json" \
    "GEMINI-MIP published (no fine-tuning)=$R/pretrain/checkpoints/last.ckpt" \
    "GEMINI-MIP pre-trained with the velocity field=$R/pretrain_svf/checkpoints/last.ckpt" \
    "Registration fine-tuned, displacement (published), $((EPOCHS * LIMIT)) it=$R/reg/checkpoints/last.ckpt" \
    "Registration fine-tuned, velocity field, $((EPOCHS * LIMIT)) it=$R/reg_svf/checkpoints/last.ckpt"
  wait "$long" && evaluate "$OUT/long$s.json" \
    "Registration fine-tuned, velocity field, $((LONG_EPOCHS * LIMIT)) it=$R/reg_svf_long/checkpoints/last.ckpt"
}

for s in $SEEDS; do seed_chain "$s" & done
wait
say "all done"
$PY benchmarks/registration.py --summary "$OUT"/demons.json "$OUT"/seed*.json "$OUT"/long*.json --reference "$DEMONS" | tee -a "$LOG"
