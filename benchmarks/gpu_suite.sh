#!/usr/bin/env bash
# One-GPU benchmark suite (issue 9), <= 5 minutes on one H200, each part under its own timeout,
# results written as they come:
#   suite.log            what ran, how long, exit codes (124 = hit its timeout); jax, devices
#   codec.txt            benchmarks/codec_roundtrip.py --save: .sic files made and decoded on
#                        this device (the GPU codec bug); roundtrip.npz holds them, to decode on
#                        another machine with --verify roundtrip.npz
#   train_step_b2.jsonl  paper main step, 2 images/device (the official setting): seconds/step,
#                        compile s, peak memory, TFLOP/s, MFU, ratios to the official H200 step
#   eval.txt             16-level eval of a 768x512 image vs the official test() pass
#   train_step_b16.jsonl the same at 16 images/device (MFU goal >= 35% in bf16), then a
#                        kernel table of 3 traced steps: where the device time goes
#                        (benchmarks/_profile_summary.py; the trace stays in $TMPDIR)
#   compile.txt          benchmarks/compile.py for the tiny main step (the paper step's compile
#                        seconds are in the train-step lines; the whole table takes minutes)
#   init_params.txt      the paper model's eager init_params, cold (wall seconds); eager == jit
#                        values on this backend (tiny model)
#   autotune0.jsonl      only with T_AUTOTUNE set: the b2 step with --xla_gpu_autotune_level=0
#                        (how much of the compile is GEMM/conv autotuning, and what it buys)
#
#   benchmarks/gpu_suite.sh [--out DIR] [--wheels DIR] [--dry-run] [--help]
#     --out DIR     results folder (default: $OUT, else gpu_results/ in the current folder);
#                   relative paths are the caller's, as usual
#     --wheels DIR  folder made by benchmarks/gpu_wheels.sh: those of its wheels whose
#                   distribution is not installed already go to /tmp/svi_site (on PYTHONPATH; the
#                   image's own packages are left alone) and its alexnet.ckpt serves as LPIPS
#                   weights
#     --dry-run     CPU smoke test of the whole suite with the tiny config and tiny sizes
# Typical use: `benchmarks/gpu_wheels.sh gpu_wheels` here once (the folder is untracked, so it
# travels with the working tree), then on the GPU machine
# `bash benchmarks/gpu_suite.sh --wheels gpu_wheels --out "$OUT"`.
# Exit status: 0 when every part succeeded, 1 when any failed or hit its timeout (suite.log
# ends with the list), 2 for a usage error.
# Timeouts (seconds) can be set with T_SETUP, T_CODEC, T_STEP2, T_EVAL, T_STEP16, T_COMPILE,
# T_INIT, T_AUTOTUNE (defaults 40/60/120/100/130/60/60, ~1.4x the H200's part times (T_INIT:
# not yet measured there); autotune part off;
# the dry run allows 10-15 min each). The compilation cache is off (cold compiles). Measured on one H200 (2026-11-30, jax
# 0.11.2): codec 45 s with the large photo (this suite codes the small one only), paper step
# b2 79 s, eval 69 s, b16 ~90 s (compile 51 s): about 4.9 minutes in all with the tiny step's
# compile row; the full compile table (--configs paper,tiny) takes minutes more: run it alone.
# The paper config computes in bf16 on accelerators (model.dtype "auto"); any config field can be
# passed to the train-step parts through STEP_FLAGS, e.g. STEP_FLAGS=--config.model.dtype=float32.
set -u

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
RESULTS=${OUT:-gpu_results}
WHEELS=""
DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out | --wheels)
      if [[ $# -lt 2 || "$2" == --* ]]; then
        echo "gpu_suite.sh: $1 needs a folder (see --help)" >&2
        exit 2
      fi
      [[ "$1" == --out ]] && RESULTS=$2 || WHEELS=$2
      shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $1 (use --out DIR, --wheels DIR, --dry-run, --help)" >&2; exit 2 ;;
  esac
done
# Paths are the caller's: make them absolute before moving to the repository root.
RESULTS=$(mkdir -p "$RESULTS" && cd "$RESULTS" && pwd) || exit 2
if [[ -n "$WHEELS" ]]; then
  abs=$(cd "$WHEELS" 2>/dev/null && pwd) || { echo "gpu_suite.sh: no wheels folder $WHEELS" >&2; exit 2; }
  WHEELS=$abs
fi
cd "$(dirname "$0")/.."
mkdir -p "$RESULTS"
LOG="$RESULTS/suite.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 SVI_JAX_COMPILATION_CACHE=off
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
  [[ $rc == 0 ]] || FAILED+=("$name (rc=$rc)")
  if [[ "$outfile" != "$LOG" ]]; then  # the log already holds its own lines
    tail -n 3 "$outfile" | sed 's/^/    /' | tee -a "$LOG"
  fi
}
FAILED=()

if [[ $DRY == 1 ]]; then
  export JAX_PLATFORMS=cpu
  # A CPU compiles the tiny step in about 30 s idle, minutes when loaded: wider limits.
  : "${T_CODEC:=600}" "${T_COMPILE:=600}" "${T_STEP2:=900}" "${T_STEP16:=900}" "${T_EVAL:=900}"
  CONFIG=svi_jax/configs/tiny.py
  STEP_ARGS=(--steps 2 --warmup 1 "--config.data.crop_size=64")
  B_SMALL=1
  B_LARGE=2
  EVAL_ARGS=(--config tiny --size 128x64 --synthesis-batch 4 --repeats 1)
  COMPILE_ARGS=(--configs tiny)
  INIT_CONFIG=tiny
else
  CONFIG=svi_jax/configs/paper.py
  STEP_ARGS=(--steps 12 --warmup 2)
  B_SMALL=2
  B_LARGE=16
  EVAL_ARGS=(--config paper --size 768x512 --synthesis-batch 4 16 --repeats 3)
  COMPILE_ARGS=(--configs tiny --only step/main)
  INIT_CONFIG=paper
fi

log "gpu_suite: results in $RESULTS (dry run: $DRY)"
if [[ -n "$WHEELS" ]]; then
  # Only what the image lacks: a wheel whose distribution is already installed stays out, so
  # the image's own numpy/protobuf/... are never shadowed by another version.
  missing=()
  for wheel in "$WHEELS"/*.whl; do
    dist=$(basename "$wheel" | cut -d- -f1)
    python -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null ||
      missing+=("$wheel")
  done
  log "wheels to install: ${missing[*]##*/}"
  if [[ ${#missing[@]} -gt 0 ]]; then
    part "install wheels" "${T_SETUP:-40}" "$LOG" python -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --target /tmp/svi_site "${missing[@]}"
    export PYTHONPATH="$PYTHONPATH:/tmp/svi_site"
  fi
  if [[ -f "$WHEELS/alexnet.ckpt" ]]; then
    export SVI_LPIPS_WEIGHTS=$WHEELS
  fi
fi
part "environment" 20 "$LOG" sh -c 'python -c "import jax, sys; print(sys.version.split()[0], \"jax\", jax.__version__, jax.devices())"; nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "(no nvidia-smi)"'

CODEC_ARGS=()
[[ -f runs/tiny/export/export.json ]] && CODEC_ARGS=(--checkpoint runs/tiny)
part "codec round trip" "${T_CODEC:-60}" "$RESULTS/codec.txt" \
  python benchmarks/codec_roundtrip.py "${CODEC_ARGS[@]}" --small-only \
  --save "$RESULTS/roundtrip.npz"


# shellcheck disable=SC2086  # STEP_FLAGS: extra flags, split on spaces on purpose
part "train step, ${B_SMALL}/device" "${T_STEP2:-120}" "$RESULTS/train_step_b${B_SMALL}.jsonl" \
  python benchmarks/train_step.py --config "$CONFIG" --per_device_batch "$B_SMALL" \
  "${STEP_ARGS[@]}" ${STEP_FLAGS:-}
part "16-level eval" "${T_EVAL:-100}" "$RESULTS/eval.txt" \
  python benchmarks/eval.py "${EVAL_ARGS[@]}"
# shellcheck disable=SC2086
part "train step, ${B_LARGE}/device" "${T_STEP16:-130}" "$RESULTS/train_step_b${B_LARGE}.jsonl" \
  python benchmarks/train_step.py --config "$CONFIG" --per_device_batch "$B_LARGE" \
  "${STEP_ARGS[@]}" --profile "${TMPDIR:-/tmp}/svi_suite_trace" ${STEP_FLAGS:-}
if [[ -f benchmarks/compile.py ]]; then
  part "compile benchmark" "${T_COMPILE:-60}" "$RESULTS/compile.txt" \
    python benchmarks/compile.py "${COMPILE_ARGS[@]}"
else
  log "skip compile benchmark: benchmarks/compile.py is absent"
fi
# the eager init_params of the model, cold, in a fresh process (issue 9 measured 39.5 s on an
# H200 for Flax's jitted model.init), then whether eager and jitted init_params give the same
# float32 values on this backend (tiny model; equal on CPU, tests/test_init.py)
part "init_params" "${T_INIT:-60}" "$RESULTS/init_params.txt" python -c "
import time, jax, numpy as np
from svi_jax.configs import $INIT_CONFIG as c, tiny
from svi_jax.nn.model import build_model, init_params
model = build_model(c.get_config().model)
start = time.perf_counter()
jax.block_until_ready(init_params(model, jax.random.PRNGKey(0)))
print('init_params $INIT_CONFIG, eager, cold: %.2f s wall' % (time.perf_counter() - start))
small, key = build_model(tiny.get_config().model), jax.random.PRNGKey(3)
eager, jitted = init_params(small, key), jax.jit(lambda k: init_params(small, k))(key)
pairs = list(zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)))
worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
print('init_params tiny, eager == jit:', all(np.array_equal(a, b) for a, b in pairs), 'max diff', worst)"
if [[ -n "${T_AUTOTUNE:-}" && $DRY == 0 ]]; then
  # shellcheck disable=SC2086
  part "train step, ${B_SMALL}/device, autotune level 0" "$T_AUTOTUNE" "$RESULTS/autotune0.jsonl" \
    env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" python benchmarks/train_step.py \
    --config "$CONFIG" --per_device_batch "$B_SMALL" "${STEP_ARGS[@]}" ${STEP_FLAGS:-}
fi

log "gpu_suite done in $(($(date +%s) - START))s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  log "failed parts: $(IFS=';'; echo "${FAILED[*]}")"
  exit 1
fi
