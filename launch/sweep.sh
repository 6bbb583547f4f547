#!/usr/bin/env bash
# Table 1 sweep: every sampling policy x every seed through TSTR, then the report.
#
# Each policy is one `python -m experiments.tstr --policy=P --seeds=S` call;
# tstr skips seeds whose metrics.json already exists, so rerunning the same
# command after a crash or preemption finishes the sweep without redoing work.
# The report aggregates whatever seeds are there, so it is also safe to run
# while a sweep is incomplete.
set -euo pipefail


usage() {
  cat <<EOF
Usage: launch/sweep.sh [--policies=a,b] [--seeds=0,1,2] [--preset=mini|paper]
                       [--workdir=DIR] [--data_dir=DIR] [--keep_going] [--no_report]
                       [--dry_run] [-- EXTRA_TSTR_FLAGS...]

Runs python -m experiments.tstr for each policy over the seeds, then
python -m experiments.report --workdir=DIR.

  --policies=LIST  comma-separated policies (default: every registered policy, in
                   Table 1 order, as printed by python -m ecgjax.policies)
  --seeds=LIST     comma-separated seeds (default: 0,1,2)
  --preset=NAME    tstr preset (default: mini)
  --workdir=DIR    workdir holding the generator, judge and results (default: workdir)
  --data_dir=DIR   PTB-XL root (default: the embedded 400-record slice)
  --keep_going     on a failed policy, go on with the others; exit 1 at the end
  --no_report      skip the report (multi-host: run it on worker 0 only)
  --dry_run        print the commands instead of running them
  -- FLAGS...      passed to every tstr call, e.g. -- --config.classifier.epochs=5

Environment: PYTHON (default: python) is the interpreter used.
EOF
}

policies=""
seeds="0,1,2"
preset="mini"
workdir="workdir"
data_dir=""
keep_going=0
report=1
dry_run=0
extra=()

while (($#)); do
  case "$1" in
    --policies=*) policies="${1#*=}" ;;
    --seeds=*) seeds="${1#*=}" ;;
    --preset=*) preset="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --data_dir=*) data_dir="${1#*=}" ;;
    --keep_going) keep_going=1 ;;
    --no_report) report=0 ;;
    --dry_run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done

PYTHON="${PYTHON:-python}"
if [[ -z "$policies" ]]; then
  # The policy registry (ecgjax/policies/registry.py) is the one list of policies.
  policies=$("$PYTHON" -m ecgjax.policies) || {
    echo "error: could not list the policies with $PYTHON -m ecgjax.policies" >&2
    exit 1
  }
fi

for value in "$policies" "$seeds" "$preset" "$workdir"; do
  if [[ -z "$value" ]]; then
    echo "error: --policies, --seeds, --preset and --workdir must not be empty" >&2
    exit 1
  fi
done
if [[ ! "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "error: --seeds must be comma-separated non-negative integers, got '$seeds'" >&2
  exit 1
fi

common=(--preset="$preset" --workdir="$workdir")
if [[ -n "$data_dir" ]]; then
  common+=(--data_dir="$data_dir")
fi

run() {
  if ((dry_run)); then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

IFS=',' read -r -a policy_list <<<"$policies"
failed=()
for policy in "${policy_list[@]}"; do
  echo "== $policy (seeds $seeds)" >&2
  if ! run "$PYTHON" -m experiments.tstr --policy="$policy" --seeds="$seeds" "${common[@]}" ${extra[@]+"${extra[@]}"}; then
    if ((keep_going)); then
      failed+=("$policy")
    else
      echo "error: experiments.tstr failed for policy $policy" >&2
      exit 1
    fi
  fi
done

if ((report)); then
  run "$PYTHON" -m experiments.report --workdir="$workdir"
fi

if ((${#failed[@]})); then
  echo "error: experiments.tstr failed for: ${failed[*]}" >&2
  exit 1
fi
