"""Time and peak memory of each stage at full size: load, table, every policy, a judge-scored pool.

  python -m experiments.make_ptbxl_fullsize --out=/data/ptbxl-fullsize
  python -m experiments.bench_fullsize --data_dir=/data/ptbxl-fullsize [--json_out=bench.json]

Each stage runs in a fresh Python process (`--stage=NAME`, which this main starts
itself), so its figures are its own: the process first builds what the stage
needs (the dataset from the cache, the table, a judge policy's pool), then the
kernel's peak-RSS counter is reset (/proc/self/clear_refs) and the stage runs.
Columns: seconds (policies: the first jitted call, compile included, then the
median of --repeats jitted draws, then one eager call as the TSTR harness
makes it); peak RSS during the stage (VmHWM, which counts the memory-mapped
signal pages the stage touches) and peak anonymous RSS (sampled every 5 ms:
the process's own allocations); RSS before the stage; the largest worker
process (load). Stages:

  load_cold      load_ptbxl with an empty cache (decode by a thread pool, cache write)
  load_cached    load_ptbxl from the cache (content hash of every file, memmap)
  table          ecgjax.policies.make_table
  draw:<policy>  every registered policy at n = --n (default: the paper preset's tstr.n);
                 judge policies select from a real_matched pool of pool_factor x n with
                 random logits, probabilities and thresholds 0.5 (their cost does not
                 depend on the values)
  report:<name>  the policy_report the harness stores (the rebalancing policies)
  judge_pool     a randomly initialised classifier (the paper preset's xresnet1d50 with its
                 crop protocol) predicting --judge_signals records; the pool the judge
                 policies score, pool_factor x n, is extrapolated linearly and labelled so

The machine's other load changes the figures; nothing here asserts a speed.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import flags

from ecgjax import errors
from experiments import _memory

_DATA_DIR = flags.DEFINE_string("data_dir", None, "PTB-XL root to measure (required).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")
_N = flags.DEFINE_integer("n", None, "Draw size; default: the paper preset's tstr.n (8000).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed jitted draws per policy; the median counts.")
_JUDGE_SIGNALS = flags.DEFINE_integer(
  "judge_signals", 1024, "Records the judge predicts (the full pool is extrapolated from them)."
)
_STAGES = flags.DEFINE_list("stages", None, "Only these stages (default: all, in order).")
_STAGE = flags.DEFINE_string("stage", None, "Run one stage in this process (used internally).")
_CACHE_DIR = flags.DEFINE_string(
  "cache_dir", None, "Signal cache of --stage (used internally; the main makes a fresh one)."
)
flags.mark_flag_as_required("data_dir")

_MB = 1 << 20


class _AnonPeak(threading.Thread):
  """Samples RssAnon every 5 ms: the peak of the process's own (not file-backed) memory."""

  def __init__(self):
    super().__init__(daemon=True)
    self.peak = _memory.status()["RssAnon"]
    self._done = threading.Event()

  def run(self):
    while not self._done.wait(0.005):
      self.peak = max(self.peak, _memory.status()["RssAnon"])

  def stop(self) -> int:
    self._done.set()
    self.join()
    return max(self.peak, _memory.status()["RssAnon"])


def _draw_size() -> int:
  if _N.value is not None:
    return _N.value
  from ecgjax import configs

  return int(configs.get_config("paper").tstr.n)


def _judge_state(key, table, n, name):
  import jax
  import jax.numpy as jnp

  from ecgjax import policies as P

  pool = P.draw_pool(jax.random.fold_in(key, 1), table, n, name)
  logits = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), pool.labels.shape)
  return dict(
    pool=pool,
    judge_logits=logits,
    judge_probs=jax.nn.sigmoid(logits),
    thresholds=jnp.full((pool.labels.shape[1],), 0.5),
  )


def _prepare(stage: str, data_dir: str, cache_dir: str):
  """What the stage needs, built before the measurement; returns the stage's callable."""
  from ecgjax.data import load_ptbxl

  if stage in ("load_cold", "load_cached"):
    if stage == "load_cold" and os.listdir(cache_dir):
      raise errors.ConfigError(f"load_cold: the cache {cache_dir} is not empty")

    def load():
      ds = load_ptbxl(data_dir, cache_dir=cache_dir, progress=False)
      return {"records": len(ds)}

    return load
  import jax

  from ecgjax import policies as P

  ds = load_ptbxl(data_dir, cache_dir=cache_dir, progress=False)
  if stage == "table":
    return lambda: {"train_rows": jax.block_until_ready(P.make_table(ds)).num_rows}
  table = jax.block_until_ready(P.make_table(ds))
  n = _draw_size()
  if stage.startswith("draw:"):
    name = stage.removeprefix("draw:")
    spec = P.get(name)
    key = jax.random.PRNGKey(0)
    state = {}
    if spec.source == P.JUDGE_POOL:
      state = jax.block_until_ready(_judge_state(key, table, n, name))

    def draw():
      fn = jax.jit(spec.fn, static_argnums=2)
      t0 = time.perf_counter()
      jax.block_until_ready(fn(key, table, n, **state))
      first = time.perf_counter() - t0
      times = []
      for i in range(_REPEATS.value):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(i + 1), table, n, **state))
        times.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      jax.block_until_ready(spec.fn(jax.random.PRNGKey(99), table, n, **state))
      eager = time.perf_counter() - t0
      pool = spec.pool_factor * n if spec.source == P.JUDGE_POOL else None
      return {
        "n": n,
        "pool": pool,
        "first_s": first,
        "jit_s": statistics.median(times),
        "eager_s": eager,
      }

    return draw
  if stage.startswith("report:"):
    spec = P.get(stage.removeprefix("report:"))
    return lambda: {"keys": len(spec.report(table, list(ds.codes)))}
  if stage == "judge_pool":
    import jax.numpy as jnp

    from ecgjax import configs
    from ecgjax.data import pipeline
    from ecgjax.train import classifier as clf_lib

    ccfg = configs.get_config("paper").classifier
    model = clf_lib.build_model(ccfg)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 12, 1000)), train=False))(
      jax.random.PRNGKey(0)
    )
    crop, stride = clf_lib.check_protocol(ccfg)
    clf = clf_lib.Classifier(
      model,
      jax.device_get(variables),
      *ds.signal_stats(),
      crop=crop,
      crop_stride=stride,
    )
    mesh = pipeline.make_mesh()
    k = min(_JUDGE_SIGNALS.value, len(ds))
    signals = ds.signals[:k]  # a memmap slice: rows are read batch by batch
    pool = P.POOL_FACTOR["qfilter_matched"] * n

    def judge():
      t0 = time.perf_counter()
      clf.predict(signals[:1], mesh, logits=True)  # compile
      compile_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      logits = clf.predict(signals, mesh, logits=True)
      seconds = time.perf_counter() - t0
      assert logits.shape == (k, 71)
      return {
        "arch": ccfg.arch,
        "crop": crop,
        "signals": k,
        "compile_s": compile_s,
        "predict_s": seconds,
        "per_signal_ms": 1e3 * seconds / k,
        "pool": pool,
        "pool_s": seconds / k * pool,
        "pool_extrapolated": k < pool,
      }

    return judge
  raise errors.ConfigError(f"--stage={stage!r}: not a stage of this benchmark")


def _run_stage(stage: str) -> dict:
  fn = _prepare(stage, _DATA_DIR.value, _CACHE_DIR.value)
  before = _memory.status()
  reset = _memory.reset_peak()
  sampler = _AnonPeak()
  sampler.start()
  t0 = time.perf_counter()
  extra = fn()
  seconds = time.perf_counter() - t0
  anon = sampler.stop()
  after = _memory.status()
  children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  return {
    "stage": stage,
    "seconds": seconds,
    "peak_rss_mb": (after["VmHWM"] if reset else max(after["VmHWM"], 0)) / _MB,
    "peak_is_stage_only": reset,
    "peak_anon_mb": anon / _MB,
    "rss_before_mb": before["VmRSS"] / _MB,
    "workers_peak_mb": children / _MB if children else None,
    **extra,
  }


def _all_stages() -> list[str]:
  from ecgjax import policies as P

  stages = ["load_cold", "load_cached", "table"]
  stages += [f"draw:{name}" for name in P.names()]
  stages += [f"report:{name}" for name, spec in P.REGISTRY.items() if spec.report is not None]
  return stages + ["judge_pool"]


def _machine() -> dict:
  import jax

  cpu = "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {
    "cpu": cpu,
    "cores": os.cpu_count(),
    "jax": jax.__version__,
    "device": jax.devices()[0].device_kind,
  }


def _fmt(value, spec=".2f"):
  return "-" if value is None else format(value, spec)


def _print(rows):
  print(f"{'stage':<30} {'seconds':>9} {'peak RSS':>9} {'peak anon':>9} {'RSS before':>10}  notes")
  for r in rows:
    notes = []
    if "first_s" in r:
      notes.append(
        f"n={r['n']}" + (f" pool={r['pool']}" if r["pool"] else "") + f"; first (compile) "
        f"{r['first_s']:.2f} s, jitted {1e3 * r['jit_s']:.1f} ms/draw, eager {r['eager_s']:.2f} s"
      )
    if "predict_s" in r:
      notes.append(
        f"{r['arch']} crop {r['crop']}: {r['signals']} records in {r['predict_s']:.1f} s "
        f"({r['per_signal_ms']:.1f} ms each, compile {r['compile_s']:.1f} s); "
        f"pool of {r['pool']}: {r['pool_s']:.0f} s"
        + (f" EXTRAPOLATED from {r['signals']}" if r["pool_extrapolated"] else " measured")
      )
    if r.get("workers_peak_mb"):
      notes.append(f"largest worker {r['workers_peak_mb']:.0f} MB")
    if not r["peak_is_stage_only"]:
      notes.append("peak RSS is the process's (clear_refs not allowed)")
    print(
      f"{r['stage']:<30} {_fmt(r['seconds']):>9} {_fmt(r['peak_rss_mb'], '.0f'):>6} MB "
      f"{_fmt(r['peak_anon_mb'], '.0f'):>6} MB {_fmt(r['rss_before_mb'], '.0f'):>7} MB  "
      + "; ".join(notes)
    )


def main(argv):
  del argv
  if not os.path.isdir(_DATA_DIR.value):
    raise errors.DataError(f"--data_dir={_DATA_DIR.value}: not a directory")
  if _STAGE.value:
    print("STAGE " + json.dumps(_run_stage(_STAGE.value), default=float))
    return
  stages = _STAGES.value or _all_stages()
  rows = []
  with tempfile.TemporaryDirectory(prefix="ecgjax-bench-cache-") as cache:
    for stage in stages:
      if stage != "load_cold" and not os.listdir(cache):  # later stages read the cache
        _child("load_cached", cache)
      rows.append(_child(stage, cache))
      print(f"  {stage}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
  machine = _machine()
  print(f"data: {_DATA_DIR.value}; machine: {machine}")
  _print(rows)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"data_dir": _DATA_DIR.value, "machine": machine, "stages": rows}, f, indent=1)


def _child(stage: str, cache: str) -> dict:
  argv = [sys.executable, "-m", "experiments.bench_fullsize", f"--stage={stage}"]
  argv += [f"--data_dir={_DATA_DIR.value}", f"--cache_dir={cache}", f"--repeats={_REPEATS.value}"]
  argv += [f"--judge_signals={_JUDGE_SIGNALS.value}"]
  if _N.value is not None:
    argv.append(f"--n={_N.value}")
  env = {**os.environ, "ECGJAX_CACHE_DIR": cache}
  out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
  lines = [line for line in out.stdout.splitlines() if line.startswith("STAGE ")]
  if out.returncode or not lines:
    raise errors.ConfigError(f"stage {stage} failed: {out.stderr.strip()[-2000:]}")
  return json.loads(lines[-1].removeprefix("STAGE "))


if __name__ == "__main__":
  errors.run(main)
