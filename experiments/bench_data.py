"""Loading time of a PTB-XL root: cold (decode), from the signal cache, and a plain wfdb loop.

  python -m experiments.bench_data [--data_dir=...] [--repeats=3] [--json_out=data.json]

Each cold run decodes into a fresh temporary cache; each warm run reads the
memory-mapped cache written by the cold run (including the content hash, and
touching every page). The reference is what a script without ecgjax would do:
`wfdb.rdsamp` on every record of `ptbxl_database.csv`, one after the other,
stacked into one array (`--wfdb_max_records` caps it on a big root; the rate
is then that of the records read). Ratios are records/s against records/s,
all from this one run; nothing here asserts a speed.
"""

import os
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import wfdb
from absl import flags

from ecgjax import errors
from ecgjax.data import embedded_data_dir, load_ptbxl

_DATA_DIR = flags.DEFINE_string("data_dir", None, "PTB-XL root; default: the embedded slice.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs of each kind; the median is reported.")
_WFDB_MAX = flags.DEFINE_integer(
  "wfdb_max_records", 0, "Records the plain wfdb.rdsamp loop reads (0: all of them)."
)
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write every figure and ratio here as JSON.")


def wfdb_loop(root: str, limit: int = 0) -> tuple[int, float]:
  """(records, seconds) of wfdb.rdsamp over the database's records, stacked."""
  rel = pd.read_csv(os.path.join(root, "ptbxl_database.csv"))["filename_lr"].tolist()
  rel = rel[:limit] if limit else rel
  t0 = time.perf_counter()
  signals = np.stack([wfdb.rdsamp(os.path.join(root, r))[0].T.astype(np.float32) for r in rel])
  elapsed = time.perf_counter() - t0
  assert signals.shape == (len(rel), 12, 1000)
  return len(rel), elapsed


def main(argv):
  del argv
  root = _DATA_DIR.value or embedded_data_dir()
  cold, warm, loop = [], [], []
  for _ in range(_REPEATS.value):
    with tempfile.TemporaryDirectory() as cache:
      t0 = time.perf_counter()
      ds = load_ptbxl(_DATA_DIR.value, cache_dir=cache, progress=False)
      cold.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      ds2 = load_ptbxl(_DATA_DIR.value, cache_dir=cache, progress=False)
      float(np.asarray(ds2.signals).sum())  # touch every page of the memmap
      warm.append(time.perf_counter() - t0)
    n_loop, s = wfdb_loop(root, _WFDB_MAX.value)
    loop.append(s)
  n = len(ds)
  c, w, lp = statistics.median(cold), statistics.median(warm), statistics.median(loop)
  rate = {"cold": n / c, "cached": n / w, "wfdb_loop": n_loop / lp}
  print(f"records: {n} ({root})")
  print(f"cold (decode + cache write):      {c:8.3f} s  {rate['cold']:9.0f} records/s")
  print(f"cached (content hash + memmap):   {w:8.3f} s  {rate['cached']:9.0f} records/s")
  print(f"plain wfdb.rdsamp loop ({n_loop} rec): {lp:8.3f} s  {rate['wfdb_loop']:9.0f} records/s")
  print(f"cached vs cold: {rate['cached'] / rate['cold']:.1f}x")
  print(f"cached vs the wfdb loop: {rate['cached'] / rate['wfdb_loop']:.1f}x")
  print(f"cold vs the wfdb loop: {rate['cold'] / rate['wfdb_loop']:.1f}x")
  if _JSON_OUT.value:
    import json

    record = {
      "benchmark": "data",
      "root": root,
      "records": n,
      "wfdb_loop_records": n_loop,
      "repeats": _REPEATS.value,
      "cpu_count": os.cpu_count(),
      "load_average": list(os.getloadavg()),
      "seconds": {"cold": cold, "cached": warm, "wfdb_loop": loop},
      "records_per_s": rate,
      "ratios": {
        "cached_vs_cold": rate["cached"] / rate["cold"],
        "cached_vs_wfdb_loop": rate["cached"] / rate["wfdb_loop"],
        "cold_vs_wfdb_loop": rate["cold"] / rate["wfdb_loop"],
      },
    }
    os.makedirs(os.path.dirname(os.path.abspath(_JSON_OUT.value)), exist_ok=True)
    with open(_JSON_OUT.value, "w") as f:
      json.dump(record, f, indent=2)
    print(f"wrote {_JSON_OUT.value}")


if __name__ == "__main__":
  errors.run(main)
