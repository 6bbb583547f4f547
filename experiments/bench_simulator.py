"""Recordings per second of the simulator generator next to neurokit2.ecg_simulate.

  python -m experiments.bench_simulator [--batch=1024] [--repeats=3] [--nk_seconds=20]

Both produce the same thing: 10 s at 100 Hz. ecgjax's simulator makes 12-lead
recordings (a batch is one jitted call; compile time is reported apart and
not counted); neurokit2 makes, one call per recording, 12 leads with its
`multileads` method and single-lead ECGs with `ecgsyn` and `simple`. Each
neurokit2 method runs for about --nk_seconds of wall time. Prints recordings/s
and the ratios, measured in this one run; nothing here asserts a speed.
Needs the `bench` extra (pip install -e ".[bench]") for neurokit2.
"""

import statistics
import time
import warnings

import jax
import numpy as np
from absl import flags

from ecgjax import errors
from ecgjax.errors import ConfigError
from ecgjax.generators import simulator

_BATCH = flags.DEFINE_integer("batch", 1024, "Recordings per jitted simulator call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed simulator calls; the median is reported.")
_NK_SECONDS = flags.DEFINE_float(
  "nk_seconds", 20.0, "Wall time spent on each neurokit2 method (at least one recording)."
)
_SAMPLING_RATE = flags.DEFINE_integer("sampling_rate", 100, "Hz of the recordings (100 or 500).")


def _recordings(n: int) -> simulator.Recording:
  """A mix of the classes: every fifth recording each of AFIB, AFLT, PVC, WPW."""
  kind = np.arange(n) % 5
  return simulator.Recording(
    afib=kind == 1,
    aflt=kind == 2,
    pvc=kind == 3,
    wpw=kind == 4,
    age=np.full(n, 60.0, np.float32),
    female=(np.arange(n) % 2).astype(np.float32),
  )


def bench_ecgjax(batch: int, repeats: int, fs: int) -> tuple[float, float]:
  """(compile + first call seconds, recordings per second)."""
  rec = _recordings(batch)
  t0 = time.perf_counter()
  jax.block_until_ready(
    simulator.simulate(jax.random.split(jax.random.PRNGKey(0), batch), rec, sampling_rate=fs)
  )
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    keys = jax.random.split(jax.random.PRNGKey(i + 1), batch)
    t0 = time.perf_counter()
    jax.block_until_ready(simulator.simulate(keys, rec, sampling_rate=fs))
    times.append(time.perf_counter() - t0)
  return first, batch / statistics.median(times)


def bench_neurokit(method: str, budget_s: float, fs: int) -> tuple[float, int]:
  """(recordings per second, recordings made) of neurokit2.ecg_simulate(method)."""
  try:
    import neurokit2 as nk
  except ImportError:
    raise ConfigError(
      'neurokit2 is not installed: pip install -e ".[bench]" (the benchmark extra)'
    ) from None
  made, t0 = 0, time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    while made == 0 or time.perf_counter() - t0 < budget_s:
      out = nk.ecg_simulate(
        duration=10, sampling_rate=fs, method=method, heart_rate=70, random_state=made
      )
      made += 1
  elapsed = time.perf_counter() - t0
  if method == "multileads":
    assert out.shape == (10 * fs, 12), out.shape
  else:
    assert len(out) == 10 * fs, len(out)
  return made / elapsed, made


def main(argv):
  del argv
  fs = _SAMPLING_RATE.value
  print(f"device: {jax.devices()[0].device_kind}; 10 s at {fs} Hz per recording")
  first, ours = bench_ecgjax(_BATCH.value, _REPEATS.value, fs)
  print(
    f"{'generator':<32} {'leads':>5} {'recordings/s':>13} {'ecgjax / it':>12}\n"
    f"{'ecgjax simulator (jit, batch ' + str(_BATCH.value) + ')':<32} {12:>5} {ours:>13.1f} "
    f"{'1':>12}   (compile + first batch {first:.1f} s, not counted)"
  )
  for method, leads in (("multileads", 12), ("ecgsyn", 1), ("simple", 1)):
    rate, made = bench_neurokit(method, _NK_SECONDS.value, fs)
    print(
      f"{'neurokit2 ' + method:<32} {leads:>5} {rate:>13.2f} {ours / rate:>11.0f}x"
      f"   ({made} recordings)"
    )


if __name__ == "__main__":
  errors.run(main)
