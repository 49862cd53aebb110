#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine (the device tool's `run`), in one call of < 8 min.
#
# 1. Here, once, with the package registry reachable (writes .whl/, ignored through
#    .git/info/exclude; about 1.1 MB):
#        bash benchmarks/gpu.sh fetch
# 2. One device call from the repository root:
#        run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=480)
#    The GPU image has python3 3.12 with torch, JAX with CUDA, opencv, matplotlib, scipy,
#    scikit-learn and tqdm, but not grad-cam, ttach, captum or torchcam, and nothing can be
#    fetched there: those come as the carried wheels (flax too, pinned to the version this repo
#    is tested with). They are installed into /tmp/site, the suite runs with --device gpu
#    (parity at float32 highest precision: JAX 'highest', no TF32 in PyTorch; timing at each
#    framework's default precision), and the JSON, the PNG plots, the Markdown section and the
#    log are left in $OUT (at most 8 files come back). Append RESULTS_gpu.md's section to
#    benchmarks/RESULTS.md and commit it with the JSON and PNGs under benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl

if [[ "${1:-}" == fetch ]]; then
  PY=${PYTHON:-python3}
  mkdir -p .git/info "$WHEELS"
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  # grad-cam 1.5.7 is published as a source archive only: build its pure-Python wheel here.
  "$PY" -m pip wheel -q --no-deps -w "$WHEELS" grad-cam==1.5.7
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" \
    ttach==0.0.3 captum==0.9.0 torchcam==0.5.0 flax==0.12.8
  ls -l "$WHEELS"
  exit 0
fi

: "${OUT:?run this through the device tool (which sets OUT), or set OUT to a folder}"
ls "$WHEELS"/*.whl >/dev/null || { echo "no wheels in $WHEELS: run 'bash benchmarks/gpu.sh fetch' here first and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$WHEELS"/*.whl
export PYTHONPATH="/tmp/site:$PWD"
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU: no 75% preallocation, so both fit and JAX's peak is its own.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'PY'
import importlib.metadata as md
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, torch.cuda.get_device_name())
print({n: md.version(n) for n in ("flax", "grad-cam", "captum", "torchcam", "numpy")})
PY
# About 6 minutes of suite: the clock shares 330 s among the cells (cifar10_anytime at batch
# 1-1024, imagenet_step4 at 1-128: see benchmarks/cli.py), skipping a PyTorch call predicted to
# end past it; timeout is the hard stop. The JSON is written after every cell, so a stopped run
# still has its finished cells rendered below.
set +e
timeout 400 python3 -m benchmarks --device gpu --rounds 10 --cell-budget 15 --time-limit 330 \
  --strict-limit --out "$OUT" --md "$OUT/RESULTS_gpu.md" 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 && ! -s "$OUT/RESULTS_gpu.md" ]]; then
  latest=$(ls -t "$OUT"/run_*_gpu.json 2>/dev/null | head -1)
  [[ -n "$latest" ]] && python3 -m benchmarks.render "$latest" --md "$OUT/RESULTS_gpu.md" \
    > /dev/null
fi
exit "$status"
