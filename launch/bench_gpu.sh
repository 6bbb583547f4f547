#!/usr/bin/env bash
# Throughput on one GPU, JAX against the PyTorch twins on the same GPU, at the paper's sizes:
# the guided DDIM sampler (float32 and bfloat16; the twin eager and under torch.compile),
# the generator's VAE and U-Net training steps, and the XResNet1d-50 train and inference
# steps. Each benchmark prints its table and writes OUT_DIR/<name>.json and <name>.log;
# a benchmark that fails or runs past its time limit is reported and the next one runs.
#
#   launch/bench_gpu.sh [OUT_DIR]        (default: bench-gpu)
#
# Sizes and limits come from the environment (defaults in brackets): SAMPLER_BATCH [256],
# SAMPLER_STEPS [100], VAE_BATCH [128], UNET_BATCH [256], XRESNET_BATCH [128],
# PEAK_SIZE [8192], SAMPLER_LIMIT [200], TRAIN_LIMIT [200], XRESNET_LIMIT [80] seconds. PYTHON [python3].
# JAX takes XLA_PYTHON_CLIENT_MEM_FRACTION [0.45] of the GPU's memory, leaving the rest to
# PyTorch. Both sides run float32 matmuls and convolutions at their GPU default (TF32),
# so the twins' samples are compared at --tolerance=0.05 of the largest |sample|.
# WHEELS=DIR: first install every wheel in DIR (--no-deps, --no-index, into a folder put on
# PYTHONPATH): for a machine whose Python has jax with CUDA, flax, optax, orbax, torch and
# pandas but not wfdb, grain or ml-collections, and no network. DRY_RUN=1 prints the
# commands instead of running them. The default limits add up to 8 minutes.
# Exits 1 when any benchmark failed.
set -uo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
out=${1:-bench-gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
export PYTHONUNBUFFERED=1
status=0

run() {  # the command, or under DRY_RUN=1 its words
  if [[ -n ${DRY_RUN:-} ]]; then
    echo "$*"
  else
    "$@"
  fi
}

bench() {  # bench NAME LIMIT MODULE ARGS...
  local name=$1 limit=$2
  shift 2
  if [[ -n ${DRY_RUN:-} ]]; then
    echo "timeout $limit $py -m $* --json_out=$out/$name.json"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout "$limit" "$py" -m "$@" --json_out="$out/$name.json" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}

if [[ -n ${WHEELS:-} ]]; then
  site=${WHEELS_SITE:-/tmp/ecgjax-wheels}
  run "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
run nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
[[ -n ${DRY_RUN:-} ]] || "$py" - <<'EOF'
import importlib.metadata as md
print(", ".join(f"{p} {md.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")))
import jax
print("jax devices:", jax.devices())
EOF

bench sampler "${SAMPLER_LIMIT:-200}" experiments.bench_sampler --preset=paper \
  --batch="${SAMPLER_BATCH:-256}" --num_steps="${SAMPLER_STEPS:-100}" --iters=3 \
  --compute_dtypes=float32,bfloat16 --tolerance=0.05 --peak_size="${PEAK_SIZE:-8192}" --pass_rounds=10
bench generator_train "${TRAIN_LIMIT:-200}" experiments.bench_generator_train --preset=paper \
  --vae_batch="${VAE_BATCH:-128}" --unet_batch="${UNET_BATCH:-256}" --steps=5 --warmup=2 \
  --compute_dtypes=float32,bfloat16
bench xresnet "${XRESNET_LIMIT:-80}" experiments.bench_xresnet \
  --batch="${XRESNET_BATCH:-128}" --steps=10 --warmup=3 --conv_impl=xla,fast \
  --modes=train,infer
exit "$status"
