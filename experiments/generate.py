"""Generates a synthetic cohort with a trained generator, as resumable .npz shards.

  python -m experiments.generate --workdir=workdir --n=8000 --out=workdir/cohorts/rm_s0

Conditioning tuples come from a sampling policy over the train folds (for now
`real_matched`: real train-record tuples drawn uniformly with replacement).
Each shard holds `signals` (k, 12, 1000) float32 mV, `cond`, `labels`, `rows`
and `index`; `manifest.json` lists the finished shards. Rerunning the same
command finishes an interrupted cohort; samples are identical whatever the
batch size or device count.
"""

import os

import jax
import numpy as np
from absl import flags

from ecgjax import cli, errors, policies
from ecgjax.data import load_ptbxl
from ecgjax.diffusion import cohort
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import ConfigError

cli.define_flags()
_N = flags.DEFINE_integer("n", None, "Number of synthetic ECGs (required, positive).")
_OUT = flags.DEFINE_string(
  "out", None, "Output directory; default <workdir>/cohorts/<policy>_seed<seed>."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draw and of the sampler noise.")
_POLICY = flags.DEFINE_enum(
  "policy", "real_matched", ["real_matched"], "Sampling policy for the conditioning tuples."
)
_SHARD_SIZE = flags.DEFINE_integer(
  "shard_size", 1024, "Samples per .npz shard (the unit of resumption)."
)


def real_matched_draw(ds, n: int, seed: int):
  """The registry's `real_matched` policy (docs/design.md §4); rows are mapped to dataset rows."""
  table = policies.make_table(ds)
  draw = policies.POLICIES["real_matched"](jax.random.PRNGKey(seed), table, n)
  rows = np.asarray(table.ds_rows)[np.asarray(draw.rows)]
  return np.asarray(draw.cond), np.asarray(draw.labels), rows


def generate(
  cfg, mesh, ds, workdir, n, out, seed, shard_size, stop_after_shards=None, progress=True
):
  if n is None or n <= 0:
    raise ConfigError(f"--n must be a positive integer, got {n}")
  gen = gen_lib.load(workdir, cfg, ds.content_key)
  cond, labels, rows = real_matched_draw(ds, n, seed)
  return cohort.generate_cohort(
    gen,
    cfg.sample,
    mesh,
    cond,
    labels,
    rows,
    out,
    seed=seed,
    shard_size=shard_size,
    stop_after_shards=stop_after_shards,
    progress=progress,
  )


def main(argv):
  del argv
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.data_dir())
  out = _OUT.value or os.path.join(cli.workdir(), "cohorts", f"{_POLICY.value}_seed{_SEED.value}")
  manifest = generate(cfg, mesh, ds, cli.workdir(), _N.value, out, _SEED.value, _SHARD_SIZE.value)
  run = manifest["last_run"]
  rate = (
    f"{run['samples_per_s']:.2f} samples/s" if run["samples_per_s"] else "nothing left to generate"
  )
  print(
    f"{out}: {sum(s['count'] for s in manifest['shards'])}/{manifest['n']} samples, "
    f"{run['generated']} generated in {run['seconds']:.1f} s ({rate})"
  )


if __name__ == "__main__":
  errors.run(main)
