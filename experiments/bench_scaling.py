"""Sampler throughput on 1, 2, 4, 8 devices (and, through a launcher, 2 processes).

  python -m experiments.bench_scaling [--devices=1,2,4,8] [--preset=paper] [--batch=8] \
      [--num_steps=10] [--json_out=scaling.json]

Each device count runs `experiments.bench_sampler --notorch --devices=n` in its
own subprocess (XLA reads the device count once, at start-up), with
`XLA_FLAGS=--xla_force_host_platform_device_count=<max>` on a CPU host, so the
devices are fake CPU devices sharing this machine's cores: on a 2-core CPU the
figures show what sharding the batch over the ('data',) mesh costs, not a
speed-up (on a GPU or TPU host the real devices are used). `--batch` is the
global batch (strong scaling) unless `--weak`, where each device gets
`--batch` samples. The random weights and sampler settings are bench_sampler's.

Two processes: `--processes=2` runs the sampler through `launch/multiprocess.sh`
when that launcher exists (it starts N coordinated processes on this host,
each with its share of the devices); without it the row is recorded as skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import jax
from absl import flags

from ecgjax import configs, errors
from ecgjax.errors import ConfigError
from experiments import bench_sampler as bench

_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to time.")
_PRESET = flags.DEFINE_enum("preset", "paper", configs.PRESETS, "Model sizes.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch (per device with --weak).")
_WEAK = flags.DEFINE_bool("weak", False, "Weak scaling: --batch samples per device.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "DDIM steps (fewer than the preset's, for time).")
_ITERS = flags.DEFINE_integer("iters", 2, "Timed sampler calls per device count.")
_PROCESSES = flags.DEFINE_integer(
  "processes", 0, "Also time N processes through launch/multiprocess.sh (0: no)."
)
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write every figure and ratio here as JSON.")

LAUNCHER = os.path.join("launch", "multiprocess.sh")


def _run_sampler(args: list[str], env: dict, prefix: list[str] | None = None) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "r.json")
    cmd = [*(prefix or []), sys.executable, "-m", "experiments.bench_sampler", *args]
    proc = subprocess.run(
      [*cmd, f"--json_out={out}"], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not os.path.exists(out):
      raise ConfigError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
      return json.load(f)


def multiprocess_row(n_proc: int, args: list[str], env: dict) -> dict:
  """N coordinated processes on this host, through the project's launcher.

  The hook for launch/multiprocess.sh (NPROC DEVICES_PER_PROC -- COMMAND): it runs
  the command once per process with the coordinator environment set, one CPU
  device each. Skipped, and recorded so, while the launcher does not exist or
  bench_sampler is single-process.
  """
  if not os.path.exists(LAUNCHER):
    return {"processes": n_proc, "skipped": f"{LAUNCHER} does not exist yet"}
  # HOOK (multi-process): bench_sampler builds the whole batch and reads the whole output
  # in its one process; once it feeds its process-local slice (as the entry points'
  # pipelines do) and only process 0 writes the JSON, drop this early return.
  if not getattr(bench, "MULTIPROCESS_READY", False):
    return {
      "processes": n_proc,
      "skipped": "bench_sampler is single-process (see the HOOK in bench_scaling.py)",
    }
  try:
    r = _run_sampler(args, env, prefix=["bash", LAUNCHER, str(n_proc), "1", "--"])
  except ConfigError as e:
    return {"processes": n_proc, "skipped": f"the launcher failed: {str(e)[-500:]}"}
  sps = r["implementations"]["jax[float32]"]["samples_per_s"]
  return {"processes": n_proc, "samples_per_s": sps, "raw": r}


def main(argv):
  del argv
  counts = [int(d) for d in _DEVICES.value]
  env = dict(os.environ)
  if jax.default_backend() == "cpu":
    flag = f"--xla_force_host_platform_device_count={max(counts)}"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  rows, record_rows = [], []
  base = None
  for n in counts:
    batch = _BATCH.value * n if _WEAK.value else _BATCH.value
    if batch % n:
      raise ConfigError(f"--batch={batch} is not a multiple of {n} devices")
    args = [
      f"--preset={_PRESET.value}",
      f"--devices={n}",
      f"--batch={batch}",
      f"--num_steps={_STEPS.value}",
      f"--iters={_ITERS.value}",
      "--notorch",
    ]
    r = _run_sampler(args, env)
    jx = r["implementations"]["jax[float32]"]
    sps = jx["samples_per_s"]
    base = base or sps
    record_rows.append(
      {
        "devices": n,
        "batch": batch,
        "samples_per_s": sps,
        "vs_1_device": sps / base,
        "compile_s": jx["compile_s"],
        "seconds_per_call": jx["seconds_per_call"],
        "load_average": r["machine"]["load_average"],
      }
    )
    rows.append([n, batch, bench.fmt(sps), bench.fmt(sps / base), bench.fmt(jx["compile_s"], 2)])
    print(f"{n} device(s): {sps:.3g} samples/s", flush=True)
  mp = None
  if _PROCESSES.value:
    n = _PROCESSES.value
    args = [
      f"--preset={_PRESET.value}",
      f"--batch={_BATCH.value}",
      f"--num_steps={_STEPS.value}",
      f"--iters={_ITERS.value}",
      "--notorch",
    ]
    mp = multiprocess_row(n, args, env)
    if "skipped" in mp:
      rows.append([f"{n} processes", _BATCH.value, "skipped", "-", "-"])
      print(f"{n} processes: skipped ({mp['skipped']})")
    else:
      rows.append([f"{n} processes", _BATCH.value, bench.fmt(mp["samples_per_s"]), "-", "-"])
  bench.print_table(
    f"sampler scaling, {_PRESET.value}, {_STEPS.value} DDIM steps, "
    f"{'weak' if _WEAK.value else 'strong'} scaling ({jax.default_backend()} devices)",
    ["devices", "global batch", "samples/s", "vs 1 device", "compile s"],
    rows,
  )
  bench.write_json(
    _JSON_OUT.value,
    {
      "benchmark": "scaling",
      "machine": bench.machine_info(),
      "preset": _PRESET.value,
      "num_steps": _STEPS.value,
      "weak": _WEAK.value,
      "fake_cpu_devices": jax.default_backend() == "cpu",
      "rows": record_rows,
      "multiprocess": mp,
    },
  )


if __name__ == "__main__":
  errors.run(main)
