#!/usr/bin/env bash
# One-GPU benchmark suite (issue 9), <= 5 minutes on one H200, each part under its own timeout,
# results written as they come:
#   env.txt              jax version and devices
#   compile.txt          benchmarks/compile.py (compile seconds / HLO sizes; skipped if absent)
#   train_step_b2.jsonl  paper main step, 2 images/device (the official setting): seconds/step,
#                        compile s, peak memory, TFLOP/s, MFU, ratios to the official H200 step
#   train_step_b16.jsonl the same at 16 images/device (MFU goal >= 35% in bf16)
#   eval.txt             16-level eval of a 768x512 image vs the official test() pass
#   suite.log            what ran, how long, exit codes (124 = hit its timeout)
#
#   benchmarks/gpu_suite.sh [--out DIR] [--wheels DIR] [--dry-run]
#     --out DIR     results folder (default: $OUT, else gpu_results/)
#     --wheels DIR  folder made by benchmarks/gpu_wheels.sh: its wheels are installed with
#                   `pip install --no-index` and its alexnet.ckpt serves as LPIPS weights
#     --dry-run     CPU smoke test of the whole suite with the tiny config and tiny sizes
# Typical use: `benchmarks/gpu_wheels.sh gpu_wheels` here once (the folder is untracked, so it
# travels with the working tree), then on the GPU machine
# `bash benchmarks/gpu_suite.sh --wheels gpu_wheels --out "$OUT"`.
# Timeouts (seconds) can be set with T_SETUP, T_COMPILE, T_STEP2, T_STEP16, T_EVAL (defaults
# 40/60/70/60/45, with 20 for the environment check: <= 295 s in all; the dry run allows 10-15 min each).
# The paper config computes in bf16 on accelerators (model.dtype "auto"); any config field can be
# passed to the train-step parts through STEP_FLAGS, e.g. STEP_FLAGS=--config.model.dtype=float32.
set -u

cd "$(dirname "$0")/.."
RESULTS=${OUT:-gpu_results}
WHEELS=""
DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) RESULTS=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "gpu_suite.sh: unknown argument $1 (use --out DIR, --wheels DIR, --dry-run)" >&2; exit 2 ;;
  esac
done
mkdir -p "$RESULTS"
LOG="$RESULTS/suite.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# part NAME TIMEOUT OUTFILE CMD...: run CMD under `timeout`, its output appended to OUTFILE as
# it comes (line-buffered), and log its duration and exit status; never stops the suite.
part() {
  local name=$1 limit=$2 outfile=$3
  shift 3
  log "start $name (timeout ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$outfile" 2>&1
  local rc=$?
  log "end $name: rc=$rc in $(($(date +%s) - t0))s -> $outfile"
  tail -n 3 "$outfile" | sed 's/^/    /' | tee -a "$LOG"
}

if [[ $DRY == 1 ]]; then
  export JAX_PLATFORMS=cpu
  # A CPU compiles the tiny step in about 30 s idle, minutes when loaded: wider limits.
  : "${T_COMPILE:=600}" "${T_STEP2:=900}" "${T_STEP16:=900}" "${T_EVAL:=900}"
  CONFIG=svi_jax/configs/tiny.py
  STEP_ARGS=(--steps 2 --warmup 1 "--config.data.crop_size=64")
  B_SMALL=1
  B_LARGE=2
  EVAL_ARGS=(--config tiny --size 128x64 --synthesis-batch 4 --repeats 1)
  COMPILE_ARGS=(--configs tiny)
else
  CONFIG=svi_jax/configs/paper.py
  STEP_ARGS=(--steps 12 --warmup 2)
  B_SMALL=2
  B_LARGE=16
  EVAL_ARGS=(--config paper --size 768x512 --synthesis-batch 4 16 --repeats 3)
  COMPILE_ARGS=()
fi

log "gpu_suite: results in $RESULTS (dry run: $DRY)"
if [[ -n "$WHEELS" ]]; then
  part "install wheels" "${T_SETUP:-40}" "$RESULTS/env.txt" \
    python -m pip install --no-index --find-links "$WHEELS" \
    constriction ml-collections grain tensorboardX
  if [[ -f "$WHEELS/alexnet.ckpt" ]]; then
    export SVI_LPIPS_WEIGHTS=$WHEELS
  fi
fi
part "environment" 20 "$RESULTS/env.txt" python -c \
  'import jax, sys; print(sys.version.split()[0], "jax", jax.__version__, jax.devices())'

if [[ -f benchmarks/compile.py ]]; then
  part "compile benchmark" "${T_COMPILE:-60}" "$RESULTS/compile.txt" \
    python benchmarks/compile.py "${COMPILE_ARGS[@]}"
else
  log "skip compile benchmark: benchmarks/compile.py is absent"
fi

# shellcheck disable=SC2086  # STEP_FLAGS: extra flags, split on spaces on purpose
part "train step, ${B_SMALL}/device" "${T_STEP2:-70}" "$RESULTS/train_step_b${B_SMALL}.jsonl" \
  python benchmarks/train_step.py --config "$CONFIG" --per_device_batch "$B_SMALL" \
  "${STEP_ARGS[@]}" ${STEP_FLAGS:-}
# shellcheck disable=SC2086
part "train step, ${B_LARGE}/device" "${T_STEP16:-60}" "$RESULTS/train_step_b${B_LARGE}.jsonl" \
  python benchmarks/train_step.py --config "$CONFIG" --per_device_batch "$B_LARGE" \
  "${STEP_ARGS[@]}" ${STEP_FLAGS:-}
part "16-level eval" "${T_EVAL:-45}" "$RESULTS/eval.txt" \
  python benchmarks/eval.py "${EVAL_ARGS[@]}"

log "gpu_suite done in $(($(date +%s) - START))s"
