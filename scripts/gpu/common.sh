# Sourced by the GPU run scripts: environment, data cache warm-up, job launcher, packing of results.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FERKIT_DATA=${FERKIT_DATA:-$PWD/.gpudata} FERKIT_CACHE=/tmp/ferkit-cache
SPLITS=${SPLITS:-Training PublicTest PrivateTest}
RUNS=${RUNS:-/tmp/runs}
mkdir -p "$RUNS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy, cv2; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
python3 -c "import sys; from ferkit.data import load_split; [load_split(s) for s in sys.argv[1:]]" $SPLITS

# MPS=1: the jobs share one GPU through CUDA MPS (their kernels run side by side instead of taking turns);
# plain sharing when the daemon or a first client does not start. stop_mps at the end.
start_mps() {
  if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d \
     && timeout 60 python3 -c "import torch; print('MPS client ok', torch.ones(2, device='cuda').sum().item())"; then
    echo "MPS: on"
  else
    stop_mps; echo "MPS: off (plain sharing)"
  fi
}
stop_mps() { echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 || true; }
[ "${MPS:-0}" = 1 ] && start_mps

PIDS=()
# job NAME LIMIT_SECONDS ARGS...: one training run in the background, its log beside its folder ($EXTRA:
# more options for every run, e.g. EXTRA="--subset 256 --epochs 1" for a smoke test of a script).
job() {
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m ferkit.train --out "$RUNS/$name" --name "$name" "$@" ${EXTRA:-} > "$RUNS/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_all() { for p in "${PIDS[@]}"; do wait "$p"; done; PIDS=(); }

# pack_weights: every run's best.pt as weights.pt: float16 weights and metadata, no optimiser state.
pack_weights() { python3 scripts/gpu/pack_runs.py "$RUNS"; }

# pack OUTNAME: small files of every run (not last.pt), checkpoints as float16 weights only.
pack() {
  pack_weights
  (cd "$RUNS" && tar czf "$OUT/$1.tgz" --exclude='*/last.pt' --exclude='*/best.pt' .)
  ls -la "$OUT"
}

# pack_each: logs.tgz with every run's files but its checkpoints (logits.npz and any teacher .npz included), then
# one <run>.tgz per run with its weights.pt, best runs on PublicTest first, while they fit the device tool's limits.
pack_each() {
  python3 scripts/gpu/pack_runs.py "$RUNS" "$OUT"
  ls -la "$OUT"
}
