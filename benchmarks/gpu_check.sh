#!/usr/bin/env bash
# The GPU check (issue 11), ready to run on a fresh GPU machine (one H100/H200, x86-64, CUDA driver):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]               # GPU: under 8 min, environment set-up included
#   bash benchmarks/gpu_check.sh --cpu-smoke [OUT_DIR]   # every step on the CPU, tiny sizes (a few minutes)
#
# Writes OUT_DIR/gpu_check.json (default OUT_DIR: $OUT where that is set, else /tmp/gpu_check_out)
# and OUT_DIR/gpu_check.log; the last line printed is the JSON object. The steps are in
# benchmarks/gpu_check.py (CUDA tests, stage one for clip-b16 and vitg, the image-QA teacher,
# one AMP epoch of videodistill), each with its own time limit inside one overall budget.
#
# The environment, first that works (each must import torch, open_clip, zarr, dask.distributed,
# decord, av and vqacache):
#   1. $VQACACHE_PYTHON, if set;
#   2. an existing .venv (uv's, from `uv sync`);
#   3. `uv sync --frozen --compile-bytecode` (needs the network, or uv's cache), at most $GPU_CHECK_SYNC_S (240) s;
#   4. the machine's python3 (e.g. an image with torch) plus the wheels in .whl/ (the project's
#      other dependencies, for a machine without network: see `--fetch-wheels` below), installed
#      into /tmp/vqacache-site, with src/ on PYTHONPATH.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels [PYVER]  # here, with network: the project's wheels that a
#                                                        # torch image lacks, cpPYVER (default 312), x86-64, into .whl/
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
T0=$(date +%s)

# what a torch image (torch, torchvision, transformers, timm, numpy, ...) lacks, at uv.lock's versions
EXTRA_PKGS="open_clip_torch ftfy wcwidth decord2 av zarr numcodecs donfig google_crc32c typing_extensions
  dask distributed partd locket tblib zict tornado"

if [ "${1:-}" = "--fetch-wheels" ]; then
  pyver="${2:-312}"
  specs=""
  for name in $EXTRA_PKGS; do
    norm=$(echo "$name" | tr '_' '-')
    ver=$(awk -v n="$norm" '$0=="[[package]]"{p=0} $0=="name = \""n"\""{p=1} p && /^version = /{gsub(/"/,"",$3); print $3; exit}' uv.lock)
    [ -n "$ver" ] && specs="$specs $norm==$ver" || echo "not in uv.lock: $norm" >&2
  done
  mkdir -p .whl
  echo "downloading:$specs"
  # shellcheck disable=SC2086
  python3 -m pip download --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $specs
  du -sh .whl
  exit $?
fi

MODE=()
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=(--cpu-smoke); shift; fi
OUT_DIR="${1:-${OUT:-/tmp/gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

CHECK='import torch, open_clip, zarr, dask.distributed, decord, av, vqacache'
works() { timeout 180 "$@" -c "$CHECK" >>"$OUT_DIR/setup.log" 2>&1; }

PY=""; SETUP=""
: >"$OUT_DIR/setup.log"
if [ -n "${VQACACHE_PYTHON:-}" ] && works "$VQACACHE_PYTHON"; then
  PY="$VQACACHE_PYTHON"; SETUP="VQACACHE_PYTHON"
elif [ -x .venv/bin/python ] && works .venv/bin/python; then
  PY="$ROOT/.venv/bin/python"; SETUP="existing .venv"
elif command -v uv >/dev/null 2>&1; then
  echo "[gpu_check] uv sync --frozen --compile-bytecode (at most ${GPU_CHECK_SYNC_S:-240} s)"
  if timeout "${GPU_CHECK_SYNC_S:-240}" uv sync --frozen --compile-bytecode >>"$OUT_DIR/setup.log" 2>&1 \
      && works .venv/bin/python; then
    PY="$ROOT/.venv/bin/python"; SETUP="uv sync"
  fi
fi
if [ -z "$PY" ] && command -v python3 >/dev/null 2>&1; then
  SITE=/tmp/vqacache-site
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "[gpu_check] python3 + .whl/ wheels into $SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      >>"$OUT_DIR/setup.log" 2>&1
  fi
  export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if works python3; then PY="$(command -v python3)"; SETUP="python3 + .whl"; fi
fi
SETUP_S=$(( $(date +%s) - T0 ))
if [ -z "$PY" ]; then
  msg="no Python environment with the project's dependencies (see $OUT_DIR/setup.log)"
  tail -5 "$OUT_DIR/setup.log" >&2
  printf '{"check": "vqacache gpu_check (issue 11)", "ok": false, "error": "%s", "setup_s": %s}\n' "$msg" "$SETUP_S" \
    | tee "$OUT_DIR/gpu_check.json"
  exit 2
fi
echo "[gpu_check] environment: $SETUP ($PY), ${SETUP_S} s"
export GPU_CHECK_SETUP="$SETUP" GPU_CHECK_SETUP_S="$SETUP_S"
# the steps' budget: what is left of 470 s after the set-up (GPU), so the whole run stays under 8 min
if [ -z "${GPU_CHECK_BUDGET_S:-}" ] && [ ${#MODE[@]} -eq 0 ]; then
  export GPU_CHECK_BUDGET_S=$(( 470 - SETUP_S > 240 ? 470 - SETUP_S : 240 ))
fi
exec "$PY" benchmarks/gpu_check.py "${MODE[@]}" "$OUT_DIR"
