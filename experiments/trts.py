"""Train on real, test on synthetic (TRTS): the judge scored on a synthetic copy of fold 10.

  python -m experiments.trts --preset=mini --seeds=0
  python -m experiments.trts --preset=mini --config.generator.kind=simulator

The classifier trained on real train folds (the judge) is scored on ECGs
generated from the test fold's own conditioning tuples, next to its score on
the real test fold (TRTR). A TRTS close to TRTR says the generator renders
the labelled conditions recognisably. With a generator that renders only some
codes (the simulator), both are scored on those codes. Writes
<root>/trts/seed_<s>/metrics.json, root as in experiments.tstr.
"""

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.eval import pipeline_setup, trts, tstr

cli.define_flags()
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds of the synthetic test copy.")


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start(evaluation="trts")
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  pipeline_setup.ensure_judge(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
  for record, skipped in trts.run(harness, seeds):
    print(
      f"seed {record['seed']}: TRTS macro AUROC {fmt(record['macro_auroc'])} vs TRTR "
      f"{fmt(record['trtr_macro_auroc'])} over {record['n_evaluable']} codes"
      + ("  (finished earlier)" if skipped else "")
      + f" -> {trts.TRTS.run(harness.root, seed=record['seed']).path}"
    )


if __name__ == "__main__":
  errors.run(main)
