#!/usr/bin/env bash
# Cloud TPU VM slice for ecgjax: create, install, train, sweep, fetch, delete.
#
#   TPU_NAME=ecgjax ZONE=us-central2-b ACCELERATOR_TYPE=v4-16 launch/tpu_vm.sh create
#   launch/tpu_vm.sh install          # code + venv + jax[tpu] on every worker
#   launch/tpu_vm.sh train            # generator, then judge (custodian side)
#   launch/tpu_vm.sh sweep --seeds=0,1,2 -- --config.classifier.epochs=30
#   launch/tpu_vm.sh fetch            # results (tstr/, blend/, report/) to $LOCAL_OUT
#   launch/tpu_vm.sh delete
#
# A slice of more than one host runs the same command on every worker
# (`--worker=all`); each process joins one JAX job through
# jax.distributed.initialize(), which the entry points call themselves
# (`--distributed`, docs/design.md §3). Their `auto` mode looks for coordinator or
# TPU_WORKER_HOSTNAMES variables, which a plain ssh shell on a TPU VM need not
# have (JAX reads the topology from the metadata server), so this script passes
# --distributed=$DISTRIBUTED, default `on`; initialize() also works on a
# single-host slice. The hosts of a slice share no filesystem, so a slice of
# more than one host (counted from ACCELERATOR_TYPE, or HOSTS) needs its workdir
# in a bucket: BUCKET=gs://my-bucket (workdir gs://my-bucket/ecgjax/$TPU_NAME)
# or WORKDIR=gs://...; without either it is refused before anything is created.
# A single host keeps a local workdir by default. Nothing here is called by the
# tests beyond a syntax check and DRY_RUN=1 prints of the gcloud commands.
set -euo pipefail

# Slice (gcloud compute tpus tpu-vm create). Runtime versions by generation:
# v4: tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5; v6e: v2-alpha-tpuv6e.
TPU_NAME="${TPU_NAME:-ecgjax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-16}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"            # empty: gcloud's configured project
SPOT="${SPOT:-0}"                 # 1: a preemptible (spot) slice; the sweep resumes on rerun
# Code and data on the workers.
REPO_URL="${REPO_URL:-}"          # git URL to clone; empty: copy this checkout's files
REPO_REF="${REPO_REF:-}"          # branch/tag/commit to check out after cloning
REMOTE_DIR="${REMOTE_DIR:-ecgjax}"  # relative to the remote home
DATA_GCS="${DATA_GCS:-}"          # gs:// PTB-XL root, read from the bucket (--data_dir); empty: embedded slice
COPY_DATA="${COPY_DATA:-0}"       # 1: copy DATA_GCS to ~/ptb-xl on every worker at install and read it there
# Runs.
PRESET="${PRESET:-paper}"
HOSTS="${HOSTS:-}"                # hosts of the slice; empty: counted from ACCELERATOR_TYPE
BUCKET="${BUCKET:-}"              # gs://bucket (or bucket): the workdir goes to gs://bucket/ecgjax/$TPU_NAME
WORKDIR="${WORKDIR:-}"            # gs://... (any slice), or a path on each worker relative to REMOTE_DIR
                                  # (one host only); default: from BUCKET, else `workdir`
DISTRIBUTED="${DISTRIBUTED:-on}"
DETACH="${DETACH:-0}"             # 1: run under nohup, log to ~/ecgjax_<subcommand>.log, return at once
LOCAL_OUT="${LOCAL_OUT:-tpu_results}"  # fetch target on this machine
DRY_RUN="${DRY_RUN:-0}"           # 1: print the gcloud commands instead of running them

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

Subcommands: create | install | train [FLAGS] | sweep [SWEEP_FLAGS] [-- TSTR_FLAGS] | fetch | delete
Variables (environment): TPU_NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION PROJECT SPOT
  REPO_URL REPO_REF REMOTE_DIR DATA_GCS COPY_DATA PRESET HOSTS BUCKET WORKDIR DISTRIBUTED
  DETACH LOCAL_OUT DRY_RUN
See launch/README.md.
EOF
}

gc() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' gcloud "$@"
    printf '\n'
  else
    gcloud "$@"
  fi
}

# Hosts of a slice: v2/v3 have 8 TensorCores a host, v4 and v5p 8 TensorCores (4 chips) a
# host, v5e (v5litepod-N) and v6e N chips on one host up to 8, else 4 a host.
hosts_of() {
  local type="$1" n
  n="${type##*-}"
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "error: ACCELERATOR_TYPE=$type: cannot count its hosts; set HOSTS" >&2
    return 1
  fi
  case "$type" in
    v5litepod-* | v5e-* | v6e-*) if ((n <= 8)); then echo 1; else echo $(((n + 3) / 4)); fi ;;
    *) echo $(((n + 7) / 8)) ;;
  esac
}

if [[ -z "$HOSTS" ]]; then
  HOSTS="$(hosts_of "$ACCELERATOR_TYPE")" || exit 1
fi
if [[ -z "$WORKDIR" ]]; then
  if [[ -n "$BUCKET" ]]; then
    bucket="${BUCKET#gs://}"
    WORKDIR="gs://${bucket%/}/ecgjax/$TPU_NAME"
  else
    WORKDIR=workdir
  fi
fi

# A workdir on every host's own disk would split the job's files: refused at once.
check_workdir() {
  if ((HOSTS > 1)) && [[ "$WORKDIR" != gs://* ]]; then
    echo "error: ACCELERATOR_TYPE=$ACCELERATOR_TYPE is a slice of $HOSTS hosts, which share no filesystem: set BUCKET=gs://your-bucket (or WORKDIR=gs://...) for the workdir (launch/README.md)" >&2
    exit 1
  fi
}

scope=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then
  scope+=(--project="$PROJECT")
fi

# on WORKER COMMAND: one shell command line on worker WORKER ("all" or an index).
on() {
  gc compute tpus tpu-vm ssh "$TPU_NAME" "${scope[@]}" --worker="$1" --command="$2"
}

# Shell-quotes its arguments into one command line for the remote bash.
quote() {
  local out
  out="$(printf '%q ' "$@")"
  printf '%s' "${out% }"
}

# Remote prefix: the checkout with its virtual environment active.
dir="$(quote "$REMOTE_DIR")"
in_repo="cd ~/$dir && . .venv/bin/activate"
# WORKDIR as the remote shell sees it: relative paths are inside the checkout.
if [[ "$WORKDIR" == /* || "$WORKDIR" == gs://* ]]; then
  remote_workdir="$(quote "$WORKDIR")"
else
  remote_workdir="\$HOME/$dir/$(quote "$WORKDIR")"
fi
# $HOME is escaped here so that the remote shell expands it.
data_arg=""
if [[ -n "$DATA_GCS" && "$COPY_DATA" == 1 ]]; then
  data_arg=" --data_dir=\"\$HOME/ptb-xl\""
elif [[ -n "$DATA_GCS" ]]; then
  data_arg=" $(quote --data_dir="${DATA_GCS%/}")"
fi

# Runs a long command on all workers, in the foreground or detached.
on_all_long() {
  local name="$1" cmd="$2"
  if [[ "$DETACH" == 1 ]]; then
    on all "nohup bash -c $(quote "$cmd") > ~/ecgjax_$name.log 2>&1 < /dev/null & echo started: ~/ecgjax_$name.log"
  else
    on all "$cmd"
  fi
}

create() {
  local extra=()
  if [[ "$SPOT" == 1 ]]; then
    extra+=(--spot)
  fi
  gc compute tpus tpu-vm create "$TPU_NAME" "${scope[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
}

install() {
  if [[ -n "$REPO_URL" ]]; then
    local checkout=""
    if [[ -n "$REPO_REF" ]]; then
      checkout=" && git -C ~/$dir checkout $(quote "$REPO_REF")"
    fi
    on all "(test -d ~/$dir/.git || git clone $(quote "$REPO_URL") ~/$dir) && git -C ~/$dir fetch -q --all$checkout"
  else
    # Tracked and untracked-but-not-ignored files: the code as it is here, without .venv or workdirs.
    local tarball
    tarball="$(mktemp -t ecgjax_src.XXXXXX.tgz)"
    trap 'rm -f "$tarball"' RETURN
    (cd "$(git rev-parse --show-toplevel)" && git ls-files -z --cached --others --exclude-standard |
      tar --null -T - -czf "$tarball")
    gc compute tpus tpu-vm scp "$tarball" "$TPU_NAME":ecgjax_src.tgz "${scope[@]}" --worker=all
    on all "mkdir -p ~/$dir && tar -xzf ~/ecgjax_src.tgz -C ~/$dir && rm ~/ecgjax_src.tgz"
  fi
  # jax[tpu] brings libtpu; the version range matches pyproject.toml's jax pin.
  on all "cd ~/$dir && (python3 -m venv .venv || (sudo apt-get update -q && sudo apt-get install -y -q python3-venv && python3 -m venv .venv)) \
&& . .venv/bin/activate && pip install -q -U pip && pip install -q -e . && pip install -q 'jax[tpu]>=0.10.2,<0.11' \
&& python -c 'import jax; print(jax.devices())'"
  if [[ -n "$DATA_GCS" && "$COPY_DATA" == 1 ]]; then
    on all "mkdir -p ~/ptb-xl && gcloud storage cp -r $(quote "${DATA_GCS%/}")/'*' ~/ptb-xl/"
  fi
}

# train [FLAGS]: the custodian's generator and judge; FLAGS go to both (e.g. --config.* overrides).
train() {
  local flags
  flags="$(quote --preset="$PRESET" --workdir="$WORKDIR" --distributed="$DISTRIBUTED" "$@")$data_arg"
  on_all_long train "$in_repo && python -m experiments.train_generator $flags && python -m experiments.train_judge $flags"
}

# sweep [SWEEP_FLAGS] [-- TSTR_FLAGS]: launch/sweep.sh on every worker, then the report on worker 0,
# the only one whose workdir holds the metrics files.
sweep() {
  local sweep_flags=() tstr_flags=()
  while (($#)); do
    if [[ "$1" == -- ]]; then
      shift
      tstr_flags=("$@")
      break
    fi
    sweep_flags+=("$1")
    shift
  done
  local cmd
  cmd="$in_repo && launch/sweep.sh $(quote --preset="$PRESET" --workdir="$WORKDIR" --no_report)$data_arg"
  cmd+=" $(quote ${sweep_flags[@]+"${sweep_flags[@]}"} -- --distributed="$DISTRIBUTED" ${tstr_flags[@]+"${tstr_flags[@]}"})"
  on_all_long sweep "$cmd"
  if [[ "$DETACH" != 1 ]]; then
    on 0 "$in_repo && python -m experiments.report $(quote --workdir="$WORKDIR")"
  fi
}

# fetch: the results (tstr/, blend/, report/; not the checkpoints) into $LOCAL_OUT, from the
# bucket, or from worker 0 (the only writer) for a local workdir.
fetch() {
  if [[ "$WORKDIR" == gs://* ]]; then
    local part
    mkdir -p "$LOCAL_OUT"
    for part in tstr blend report; do
      if [[ "$DRY_RUN" == 1 ]] || gcloud storage ls "${WORKDIR%/}/$part/" > /dev/null 2>&1; then
        gc storage rsync -r "${WORKDIR%/}/$part" "$LOCAL_OUT/$part"
      fi
    done
    if [[ "$DRY_RUN" != 1 ]]; then
      echo "results in $LOCAL_OUT (python -m experiments.report --workdir=$WORKDIR remakes the report)"
    fi
    return
  fi
  on 0 "cd $remote_workdir && tar -czf ~/ecgjax_results.tgz \$(ls -d tstr blend report 2>/dev/null)"
  mkdir -p "$LOCAL_OUT"
  gc compute tpus tpu-vm scp "$TPU_NAME":ecgjax_results.tgz "$LOCAL_OUT/" "${scope[@]}" --worker=0
  if [[ "$DRY_RUN" != 1 ]]; then
    tar -xzf "$LOCAL_OUT/ecgjax_results.tgz" -C "$LOCAL_OUT"
    rm "$LOCAL_OUT/ecgjax_results.tgz"
    echo "results in $LOCAL_OUT (python -m experiments.report --workdir=$LOCAL_OUT remakes the report)"
  fi
}

delete() {
  gc compute tpus tpu-vm delete "$TPU_NAME" "${scope[@]}"
}

if (($# == 0)); then
  usage
  exit 1
fi
subcommand="$1"
shift
case "$subcommand" in
  create | install | fetch | train | sweep) check_workdir ;;
esac
case "$subcommand" in
  create | install | fetch | delete)
    if (($#)); then
      echo "error: $subcommand takes no arguments, got: $*" >&2
      exit 1
    fi
    "$subcommand"
    ;;
  train | sweep) "$subcommand" "$@" ;;
  -h | --help | help) usage ;;
  *) echo "error: unknown subcommand '$subcommand' (create|install|train|sweep|fetch|delete)" >&2; exit 1 ;;
esac
