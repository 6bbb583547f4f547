"""Synthetic cohorts of a policy with any generator, as resumable .npz shards (docs/design.md §9).

`make_cohort` is what `experiments.generate` runs and what the audit uses for
`--policy`: conditioning tuples from a sampling policy over the train folds
(every policy with generated signals; the judge policies generate their pool
under <out>/pool, score it with the judge and keep their selection), one ECG
per tuple from `cfg.generator.kind`. A policy's cohort lives by default in
`cohort_dir(workdir, kind, policy, seed)`.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ecgjax import generators, policies
from ecgjax.errors import ConfigError
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import pipeline_setup, plots, tstr

COHORTS_DIR = "cohorts"


def cohort_dir(workdir: str, kind: str, policy: str, seed: int) -> str:
  """<workdir>/cohorts/<kind>/<policy>_seed<seed>: where a policy's cohort goes by default."""
  return os.path.join(workdir, COHORTS_DIR, kind, f"{policy}_seed{seed}")


def check_request(n, policy: str) -> None:
  """Refuses a cohort size or policy that cannot give a cohort (before any data is read)."""
  if n is None or n <= 0:
    raise ConfigError(f"--n must be a positive integer, got {n}")
  if policies.get(policy).source == policies.REAL:
    raise ConfigError(
      f"--policy={policy} uses real records, not generated ones: nothing to generate"
    )


def make_cohort(
  cfg,
  mesh,
  ds,
  workdir,
  n,
  out,
  seed,
  shard_size,
  stop_after_shards=None,
  progress=True,
  policy="real_matched",
):
  """Writes (or finishes) the cohort; returns its manifest."""
  check_request(n, policy)
  spec = policies.get(policy)
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir, progress=progress)
  gen = generators.for_config(cfg).load(cfg, ds, workdir)
  judge = None
  if spec.source == policies.JUDGE_POOL:
    if gen.sampling_rate != 100:
      raise ConfigError(
        f"--policy={policy}: the judge scores 100 Hz signals, not {gen.sampling_rate} Hz"
      )
    pipeline_setup.ensure_judge(cfg, mesh, ds, workdir, progress=progress)
    judge = judge_lib.load(workdir, cfg)
  return tstr.policy_cohort(
    policy,
    jax.random.PRNGKey(seed),
    n,
    out,
    seed,
    gen=gen,
    table=policies.make_table(ds),
    mesh=mesh,
    judge=judge,
    shard_size=shard_size,
    stop_after_shards=stop_after_shards,
    progress=progress,
  )


def simulated_vs_real(cfg, mesh, ds, out_path, seed=0) -> str:
  """One real record per class the simulator renders (the first with that label and none of
  the other classes; NORM: normal and no class) beside a simulated one from the same
  conditioning vector. A class with no such record in the data gets an empty real panel
  and a simulated one from its label alone (with the first train record's demographics).
  Under several processes every process calls it and process 0 writes the figure."""
  from ecgjax.generators import simulator

  gen = generators.get("simulator").load(cfg, ds)
  codes = list(ds.codes)
  classes = [codes.index(c) for c in simulator.CLASSES]
  first_train = np.flatnonzero(ds.train_mask)[0]
  real, cond, titles = [], [], []
  for name in ("NORM",) + simulator.CLASSES:
    has = ds.labels[:, codes.index(name)]
    others = ds.labels[:, [c for c in classes if codes[c] != name]].any(1)
    rows = np.flatnonzero(has & ~others)
    if len(rows):
      real.append(np.asarray(ds.signals[rows[0]]))
      cond.append(ds.cond[rows[0]])
      titles.append(f"{name} (ecg_id {ds.ecg_id[rows[0]]})")
    else:
      real.append(np.full(ds.signals.shape[1:], np.nan, np.float32))
      c = np.array(ds.cond[first_train], np.float32)
      c[: len(codes)] = 0
      c[codes.index(name)] = 1
      cond.append(c)
      titles.append(f"{name} (no real record in this data)")
  # Every process generates (the batch is split over the whole mesh); process 0 plots.
  fake = gen.generate(np.stack(cond), jax.random.PRNGKey(seed), mesh=mesh)
  if jax.process_index() != 0:
    return out_path
  return plots.ecg_comparison(
    np.stack(real), fake, titles, out_path, fake_rate=gen.sampling_rate, fake_name="simulated"
  )
