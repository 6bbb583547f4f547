"""Real + synthetic blend at fixed n (paper 000 section 6, Figure 2).

  python -m experiments.blend --fractions=0,0.25,0.5,0.75,1 --seeds=0 --preset=mini

A fraction f of n comes from real train records (real_subset), 1 - f from
real_matched synthetic samples. Writes
<workdir>/blend/frac_<f>/seed_<s>/metrics.json (with `real_fraction`).
"""

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.errors import ConfigError
from ecgjax.eval import pipeline_setup, runs, tstr

cli.define_flags()
_FRACTIONS = flags.DEFINE_string(
  "fractions", "0,0.25,0.5,0.75,1", "Comma-separated real fractions in [0, 1]."
)
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds.")
_N = flags.DEFINE_integer("n", None, "Total training-set size; default: the preset's tstr.n.")


def parse_fractions(text):
  return runs.parse_list(
    text, float, flag="--fractions", expected="comma-separated numbers in [0, 1]",
    ok=lambda f: 0.0 <= f <= 1.0,
  )  # fmt: skip


def main(argv):
  del argv
  fractions = parse_fractions(_FRACTIONS.value)
  seeds = tstr.parse_seeds(_SEEDS.value)
  n = tstr.check_n(_N.value)
  cfg, mesh = cli.start(evaluation="blend")
  ds = load_ptbxl(cli.data_dir())
  # The real part is drawn without replacement: refuse, before any training, a fraction
  # whose real part the train folds cannot hold (not after the smaller fractions ran).
  harness = tstr.Harness(cfg, mesh, ds, cli.workdir())
  total = harness.cohort_size(n)
  n_train = int(ds.train_mask.sum())
  too_many = [f for f in fractions if round(f * total) > n_train]
  if too_many:
    raise ConfigError(
      f"--fractions={_FRACTIONS.value}: the real part of {', '.join(f'{f:g}' for f in too_many)} "
      f"x n = {total} exceeds the {n_train} train records; give --n <= "
      f"{int(n_train / max(too_many))} or smaller fractions"
    )
  if any(f < 1 for f in fractions):
    pipeline_setup.ensure_generator(cfg, mesh, ds, cli.workdir())
  rows = []
  for f in fractions:
    for s in seeds:
      record, skipped = harness.run(f"blend_{f:g}", s, n=n, real_fraction=f)
      rows.append((record, skipped))
  tstr.print_table(rows)


if __name__ == "__main__":
  errors.run(main)
