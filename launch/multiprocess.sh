#!/usr/bin/env bash
# NPROC copies of a command on this machine as one multi-process JAX job on CPU devices.
#
# Each copy gets the coordinator (127.0.0.1 and a free port), the process count and its
# process id in the environment, which ecgjax.cli.start() passes to
# jax.distributed.initialize(), plus DEVICES_PER_PROC CPU devices of its own
# (XLA_FLAGS=--xla_force_host_platform_device_count) and gloo cross-process collectives.
# The entry points need no extra flag. When one process fails or is killed, the others
# are killed too (a collective would wait for it forever) and the launcher exits with
# that process's status; it exits 0 only when every process did.
set -uo pipefail

usage() {
  cat <<EOF
Usage: launch/multiprocess.sh NPROC DEVICES_PER_PROC [--] COMMAND [ARGS...]

Starts NPROC copies of COMMAND as processes 0..NPROC-1 of one JAX job on this machine,
each with DEVICES_PER_PROC CPU devices (NPROC x DEVICES_PER_PROC devices in all), e.g.

  launch/multiprocess.sh 2 2 -- python -m experiments.tstr --policy=real_matched --workdir=w

Environment set for each process:
  JAX_COORDINATOR_ADDRESS   127.0.0.1:PORT (PORT: a free port, or \$COORDINATOR_PORT)
  JAX_NUM_PROCESSES         NPROC
  JAX_PROCESS_ID            0..NPROC-1
  JAX_PLATFORMS             cpu
  JAX_CPU_COLLECTIVES_IMPLEMENTATION  gloo
  XLA_FLAGS                 --xla_force_host_platform_device_count=DEVICES_PER_PROC (replacing
                            any device count already there; other XLA flags are kept)

Output lines are prefixed with [p<id>]. If a process exits non-zero or is killed, the
others get SIGTERM (SIGKILL after \$KILL_GRACE_S seconds, default 10) and the launcher
exits with the failed process's status (128 + signal for a killed one). SIGINT or SIGTERM
to the launcher stops every process.
EOF
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit 0
fi
if (($# < 3)); then
  usage >&2
  exit 2
fi
nproc="$1"
per_proc="$2"
shift 2
[[ "${1:-}" == "--" ]] && shift
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ && "$per_proc" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NPROC and DEVICES_PER_PROC must be positive integers, got '$nproc' '$per_proc'" >&2
  exit 2
fi
if (($# == 0)); then
  echo "error: no command given (see --help)" >&2
  exit 2
fi

python_bin="${PYTHON:-python3}"
port="${COORDINATOR_PORT:-}"
if [[ -z "$port" ]]; then
  port="$("$python_bin" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')" || {
    echo "error: could not find a free port with $python_bin" >&2
    exit 2
  }
fi
grace="${KILL_GRACE_S:-10}"

pids=()
stop_all() {
  local sig="$1" pid
  for pid in "${pids[@]}"; do
    kill "-$sig" "$pid" 2>/dev/null
  done
}

alive() {
  local pid
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

terminate() {
  local waited=0
  stop_all TERM
  while alive && ((waited < grace * 5)); do
    sleep 0.2
    waited=$((waited + 1))
  done
  stop_all KILL
}

on_signal() {
  echo "multiprocess.sh: interrupted, stopping every process" >&2
  terminate
  exit 130
}
trap on_signal INT TERM

# Any device count already in XLA_FLAGS gives way to DEVICES_PER_PROC.
xla_flags="${XLA_FLAGS:-}"
xla_flags="$(printf '%s' "$xla_flags" |
  sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g; s/  +/ /g; s/^ //; s/ $//')"
xla_flags="${xla_flags:+$xla_flags }--xla_force_host_platform_device_count=$per_proc"

for ((i = 0; i < nproc; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
    JAX_NUM_PROCESSES="$nproc" \
    JAX_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu \
    JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
    XLA_FLAGS="$xla_flags" \
    "$@" > >(sed -u "s/^/[p$i] /") 2> >(sed -u "s/^/[p$i] /" >&2) &
  pids+=("$!")
done
echo "multiprocess.sh: $nproc processes x $per_proc CPU devices, coordinator 127.0.0.1:$port," \
  "pids ${pids[*]}" >&2

status=0
remaining=$nproc
declare -A finished=()
while ((remaining > 0)); do
  # Poll, so a process that dies is noticed whichever one it is.
  for ((i = 0; i < nproc; i++)); do
    pid="${pids[$i]}"
    [[ -n "${finished[$i]:-}" ]] && continue
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      rc=$?
      finished[$i]=1
      remaining=$((remaining - 1))
      if ((rc != 0 && status == 0)); then
        status=$rc
        echo "multiprocess.sh: process $i (pid $pid) exited with status $rc; stopping the others" >&2
        terminate
      fi
    fi
  done
  ((remaining > 0)) && sleep 0.2
done
wait 2>/dev/null
exit "$status"
