"""Loading time of a PTB-XL root cold (decode with wfdb) and from the signal cache.

  python -m experiments.bench_data [--data_dir=...] [--repeats=3]

Each cold run decodes into a fresh temporary cache; each warm run reads the
memory-mapped cache written by the cold run (including the content hash).
"""

import statistics
import tempfile
import time

import numpy as np
from absl import flags

from ecgjax import errors
from ecgjax.data import load_ptbxl

_DATA_DIR = flags.DEFINE_string("data_dir", None, "PTB-XL root; default: the embedded slice.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs of each kind; the median is reported.")


def main(argv):
  del argv
  cold, warm = [], []
  for _ in range(_REPEATS.value):
    with tempfile.TemporaryDirectory() as cache:
      t0 = time.perf_counter()
      ds = load_ptbxl(_DATA_DIR.value, cache_dir=cache, progress=False)
      cold.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      ds2 = load_ptbxl(_DATA_DIR.value, cache_dir=cache, progress=False)
      float(np.asarray(ds2.signals).sum())  # touch every page of the memmap
      warm.append(time.perf_counter() - t0)
  c, w = statistics.median(cold), statistics.median(warm)
  print(f"records: {len(ds)}")
  print(f"cold (wfdb decode + cache write): {c:.3f} s  ({len(ds) / c:.0f} records/s)")
  print(f"warm (content hash + memmap read): {w:.3f} s  ({len(ds) / w:.0f} records/s)")
  print(f"cache speed-up: {c / w:.1f}x")


if __name__ == "__main__":
  errors.run(main)
