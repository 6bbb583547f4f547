"""Streaming cohorts: peak memory of generating a cohort and of a classifier epoch over it.

  python -m experiments.bench_cohort --n=10000,100000 --json_out=bench_cohort.json

For each n, in a fresh subprocess (so each peak is that n's alone): draws n
`real_matched` conditioning tuples from the embedded slice's train folds,
generates them with the simulator into a temporary cohort of .npz shards
(--dir; 48 kB a sample, so 4.8 GB for 100,000), then trains a classifier for
one epoch on the cohort read lazily (grain reads one row per element from the
shards; nothing is concatenated), validating on the real fold 9, and deletes
the cohort. Prints, per phase, the wall time and the peak resident set
(VmHWM, reset between phases through /proc/self/clear_refs where the kernel
allows it, else ru_maxrss). The classifier is --arch (default xresnet1d_tiny:
the data path is what is measured, not the model) on --crop-sample crops with
batch --batch_size, on the codes the simulator renders, as TSTR trains it.
--eager reads the cohort the old way (all shards concatenated in memory) for
comparison. Nothing here asserts a speed or a size.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags

from ecgjax import configs, errors, generators, policies
from ecgjax.data import load_ptbxl, pipeline
from ecgjax.errors import ConfigError
from ecgjax.eval import tstr
from ecgjax.generators import cohort
from ecgjax.train import classifier as clf_lib
from experiments import _memory

_N = flags.DEFINE_list(
  "n", ["10000"], "Cohort sizes, comma-separated; each runs in a fresh subprocess when several."
)
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the figures (a list, one per n) here.")
_DIR = flags.DEFINE_string(
  "dir", None, "Where the temporary cohorts go (needs n x 48 kB free); default: $TMPDIR or /tmp."
)
_SHARD_SIZE = flags.DEFINE_integer("shard_size", cohort.DEFAULT_SHARD_SIZE, "Samples per shard.")
_ARCH = flags.DEFINE_enum(
  "arch", "xresnet1d_tiny", list(clf_lib.ARCHS), "Classifier architecture (classifier.arch)."
)
_BATCH = flags.DEFINE_integer("batch_size", 256, "Classifier batch size.")
_CROP = flags.DEFINE_integer("crop", 250, "Training crop in samples (0: the whole 10 s record).")
_EAGER = flags.DEFINE_bool(
  "eager", False, "Read the cohort concatenated in memory (the pre-streaming path) instead."
)
_KEEP = flags.DEFINE_bool("keep", False, "Keep the generated cohort instead of deleting it.")

_BYTES_PER_SAMPLE = 12 * 1000 * 4


def _status_mb(field: str) -> float | None:
  value = _memory.status().get(field)
  return None if value is None else value / (1 << 20)


def _peak_mb() -> float:
  hwm = _status_mb("VmHWM")
  return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n: int) -> dict:
  base = _DIR.value or tempfile.gettempdir()
  os.makedirs(base, exist_ok=True)
  need = int(n * _BYTES_PER_SAMPLE * 1.05) + (256 << 20)
  free = shutil.disk_usage(base).free
  if free < need:
    raise ConfigError(
      f"--dir={base}: {free / 1e9:.1f} GB free, a {n}-sample cohort needs {need / 1e9:.1f} GB"
    )
  cfg = configs.get_config("mini")
  cfg.generator.kind = "simulator"
  cfg.classifier.update(arch=_ARCH.value, epochs=1, batch_size=_BATCH.value, crop=_CROP.value)
  ds = load_ptbxl(None, progress=False)
  mesh = pipeline.make_mesh()
  kind = generators.for_config(cfg)
  gen = kind.load(cfg, ds, None)
  table = policies.make_table(ds)
  draw = policies.get("real_matched").fn(jax.random.PRNGKey(0), table, n)
  cond, labels = np.asarray(draw.cond), np.asarray(draw.labels)
  rows = np.asarray(table.ds_rows)[np.asarray(draw.rows)]
  columns = tstr.covered_columns(ds.codes, kind.codes)
  va = np.flatnonzero(ds.val_mask)
  val_signals, val_labels = np.asarray(ds.signals[va]), ds.labels[va][:, columns]
  out_dir = tempfile.mkdtemp(prefix=f"ecgjax_bench_cohort_{n}_", dir=base)
  result = {
    "n": n,
    "shard_size": _SHARD_SIZE.value,
    "arch": _ARCH.value,
    "batch_size": _BATCH.value,
    "crop": _CROP.value,
    "read": "eager" if _EAGER.value else "lazy",
    "devices": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "peak_reset": _memory.reset_peak(),
    "start_rss_mb": _status_mb("VmRSS"),
  }
  try:
    t0 = time.perf_counter()
    cohort.generate_cohort(
      gen, mesh, cond, labels, rows, out_dir, seed=0, shard_size=_SHARD_SIZE.value, progress=False
    )
    result["generate_s"] = time.perf_counter() - t0
    result["generate_peak_rss_mb"] = _peak_mb()
    result["disk_bytes"] = sum(
      os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)
    )
    _memory.reset_peak()
    result["train_start_rss_mb"] = _status_mb("VmRSS")
    t0 = time.perf_counter()
    made = cohort.read_cohort(out_dir, lazy=not _EAGER.value)
    train_labels = np.asarray(made["labels"])[:, columns]
    clf = clf_lib.train_classifier(
      cfg.classifier, made["signals"], train_labels, val_signals, val_labels,
      mesh=mesh, ckpt_dir=None, seed=0, progress=False,
    )  # fmt: skip
    result["train_s"] = time.perf_counter() - t0
    result["train_steps"] = n // (_BATCH.value - _BATCH.value % jax.device_count())
    result["train_peak_rss_mb"] = _peak_mb()
    result["val_macro_auroc"] = clf.val_auroc
  finally:
    if not _KEEP.value:
      shutil.rmtree(out_dir, ignore_errors=True)
    else:
      result["cohort"] = out_dir
  return result


def _print(r: dict) -> None:
  print(
    f"n={r['n']:>7} ({r['read']}): {r['disk_bytes'] / 1e9:.2f} GB in "
    f"{-(-r['n'] // r['shard_size'])} shards; "
    f"generate {r['generate_s']:.1f} s ({r['n'] / r['generate_s']:.0f}/s), "
    f"peak RSS {r['generate_peak_rss_mb']:.0f} MB; "
    f"epoch of {r['train_steps']} steps ({r['arch']}, batch {r['batch_size']}, crop {r['crop']}) "
    f"{r['train_s']:.1f} s, peak RSS {r['train_peak_rss_mb']:.0f} MB"
  )


def main(argv):
  del argv
  sizes = [int(v) for v in _N.value]
  if not sizes or min(sizes) <= 0:
    raise ConfigError(f"--n={','.join(_N.value)}: expected positive integers")
  if len(sizes) == 1:
    results = [run_one(sizes[0])]
  else:
    results = []
    passed = [a for a in sys.argv[1:] if not a.startswith(("--n=", "--json_out="))]
    for n in sizes:
      with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        cmd = [sys.executable, "-m", "experiments.bench_cohort", f"--n={n}"]
        proc = subprocess.run([*cmd, f"--json_out={tmp.name}", *passed])
        if proc.returncode != 0:
          raise ConfigError(f"the n={n} run failed (exit status {proc.returncode})")
        with open(tmp.name) as f:
          results.extend(json.load(f))
  for r in results:
    _print(r)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  errors.run(main)
