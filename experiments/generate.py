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

from absl import flags

from ecgjax import cli, errors, policies, storage
from ecgjax.data import load_ptbxl
from ecgjax.eval import cohorts
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


def main(argv):
  del argv
  cfg, mesh = cli.start()
  if _OUT.value is not None:
    storage.check(_OUT.value, "--out")
  cohorts.check_request(_N.value, _POLICY.value)
  ds = load_ptbxl(cli.data_dir())
  kind = cfg.generator.kind
  out = _OUT.value or cohorts.cohort_dir(cli.workdir(), kind, _POLICY.value, _SEED.value)
  manifest = cohorts.make_cohort(
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
  if kind == "simulator":  # every process simulates, process 0 writes the figure
    path = cohorts.simulated_vs_real(cfg, mesh, ds, os.path.join(out, "simulated_vs_real.png"))
    if cli.is_writer():
      print("wrote", path)


if __name__ == "__main__":
  errors.run(main)
