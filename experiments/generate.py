"""Generates a synthetic cohort with any generator and any policy, as resumable .npz shards.

  python -m experiments.generate --workdir=workdir --n=8000 --policy=qstrat_matched
  python -m experiments.generate --config.generator.kind=simulator --n=1000 --out=sim_cohort

Conditioning tuples come from a sampling policy over the train folds (every
policy with generated signals; the judge policies generate their pool under
<out>/pool, score it with the judge and keep their selection). The generator
is `--config.generator.kind`: the latent diffusion model (trained first under
`mini` when the workdir has none) or paper 002's simulator (no training, no
weights). Each shard holds `signals` (k, 12, T) float32 mV, `cond`, `labels`,
`rows` and `index`; `manifest.json` lists the finished shards, the generator's
identity and notes (for the simulator: which drawn labels it renders with the
normal rule). Rerunning the same command finishes an interrupted cohort;
samples are identical whatever the batch size or device count. The simulator
also writes simulated_vs_real.png: one simulated and one real recording per
class it renders, 12 leads.
"""

import os

import jax
import numpy as np
from absl import flags

from ecgjax import cli, errors, generators, policies
from ecgjax.data import load_ptbxl
from ecgjax.errors import ConfigError
from ecgjax.eval import pipeline_setup, plots, tstr
from ecgjax.generators import cohort

cli.define_flags()
_N = flags.DEFINE_integer("n", None, "Number of synthetic ECGs (required, positive).")
_OUT = flags.DEFINE_string(
  "out", None, "Output directory; default <workdir>/cohorts/<kind>/<policy>_seed<seed>."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draw and of the generator's noise.")
_POLICY = flags.DEFINE_enum(
  "policy",
  "real_matched",
  policies.names(),
  "Sampling policy for the conditioning tuples (docs/design.md §4); real_subset is refused "
  "(it trains on real records).",
)
_SHARD_SIZE = flags.DEFINE_integer(
  "shard_size", cohort.DEFAULT_SHARD_SIZE, "Samples per .npz shard (the unit of resumption)."
)


def generate(
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
  if n is None or n <= 0:
    raise ConfigError(f"--n must be a positive integer, got {n}")
  spec = policies.get(policy)
  if spec.source == policies.REAL:
    raise ConfigError(
      f"--policy={policy} uses real records, not generated ones: nothing to generate"
    )
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir, progress=progress)
  gen = generators.for_config(cfg).load(cfg, ds, workdir)
  judge = None
  if spec.source == policies.JUDGE_POOL:
    if gen.sampling_rate != 100:
      raise ConfigError(
        f"--policy={policy}: the judge scores 100 Hz signals, not {gen.sampling_rate} Hz"
      )
    pipeline_setup.ensure_judge(cfg, mesh, ds, workdir, progress=progress)
    from ecgjax.eval import judge as judge_lib

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
  and a simulated one from its label alone (with the first train record's demographics)."""
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
  fake = gen.generate(np.stack(cond), jax.random.PRNGKey(seed), mesh=mesh)
  return plots.ecg_comparison(
    np.stack(real), fake, titles, out_path, fake_rate=gen.sampling_rate, fake_name="simulated"
  )


def main(argv):
  del argv
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.data_dir())
  kind = cfg.generator.kind
  out = _OUT.value or os.path.join(
    cli.workdir(), "cohorts", kind, f"{_POLICY.value}_seed{_SEED.value}"
  )
  manifest = generate(
    cfg, mesh, ds, cli.workdir(), _N.value, out, _SEED.value, _SHARD_SIZE.value,
    policy=_POLICY.value,
  )  # fmt: skip
  run = manifest["last_run"]
  rate = (
    f"{run['samples_per_s']:.2f} samples/s" if run["samples_per_s"] else "nothing left to generate"
  )
  print(
    f"{out}: {sum(s['count'] for s in manifest['shards'])}/{manifest['n']} samples, "
    f"{run['generated']} generated in {run['seconds']:.1f} s ({rate})"
  )
  if kind == "simulator" and cli.is_writer():
    print("wrote", simulated_vs_real(cfg, mesh, ds, os.path.join(out, "simulated_vs_real.png")))


if __name__ == "__main__":
  errors.run(main)
