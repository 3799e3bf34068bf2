#!/usr/bin/env bash
# The CUDA paths and GPU figures, on a machine where torch sees a GPU (CI has none).
#
#   OUT=data/bench-gpu bash bench/gpu_check.sh [MATRIX_SECONDS]
#
# 1. tests/test_cuda.py: auto picks the GPU, the digits demo trains there and finds its poisons,
#    the GPU's features match the CPU's for the same model, k-NN on the GPU finds the CPU's neighbours;
# 2. python -m bench matrix on Fashion-MNIST with the model trained on the GPU, cells in the order below,
#    each written to $OUT/matrix_gpu.json as it finishes, until MATRIX_SECONDS (default 600) run out;
# 3. python -m bench speed on the first poisoned cell's features: the detector suite beside ART on this host.
# Needs the Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist and pip install -e '.[bench]'.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/bench-gpu}
HOME_DIR=${BENCH_HOME:-/tmp/sanitize-bench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
nproc

python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_detectors.py -k "cuda or gpu or torch_knn" \
  --durations=5 2>&1 | tee "$OUT/pytest_cuda.log"

timeout "${1:-600}" python3 -m bench matrix --home "$HOME_DIR" --out "$OUT/matrix_gpu.json" \
  --only none:0 wanet:0.01 badnets:0.05 wanet:0.05 blend:0.01 sig:0.03 blend:0.05 badnets:0.01 wanet:0.1 \
  sig:0.01 blend:0.1 badnets:0.1 sig:0.05
echo "matrix exit $?"

run=$(python3 - "$OUT/matrix_gpu.json" <<'PY'
import json, sys
cells = [c for c in json.load(open(sys.argv[1])) if c["attack"] != "none"]
print(cells[0]["run_id"] if cells else "")
PY
)
if [ -n "$run" ]; then
  timeout 300 python3 -m bench speed "$HOME_DIR/runs/$run" --out "$OUT/speed_gpu.json"
fi
