"""Mixtures and synthetic pre-training (paper 001): real + synthetic training sets.

  python -m experiments.transfer --preset=mini --workdir=workdir --seeds=0,1
  python -m experiments.transfer --config.transfer.ratios=0.5,1,2,4 --config.transfer.fractions=0.1,1

Trains the classifier on: synthetic only (a real_matched cohort, then exported
as the pre-trained model); a fraction of the real train records from scratch
and fine-tuned from the synthetic model (--config.transfer.fractions); all
real train records plus r x as many synthetic ones (--config.transfer.ratios).
Each is scored on real fold 10 as in TSTR. Writes
<root>/transfer/<setting>/seed_<s>/metrics.json (finished runs skipped) and
<root>/transfer/report/transfer.{md,csv}; see ecgjax/eval/transfer.py.
"""

import os

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.eval import pipeline_setup, transfer, tstr

cli.define_flags()
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds (subsets, draws, weights).")


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start(evaluation="transfer")
  settings = transfer.settings(cfg.transfer)
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  exp = transfer.Transfer(harness)
  records = []
  for seed in seeds:
    for setting in settings:
      record, skipped = exp.run(setting, seed)
      records.append(record)
      m = record["macro_auroc"]
      print(
        f"seed {seed} {setting:14s}: macro AUROC {'n/a' if m is None else f'{m:.4f}'} "
        f"(real {record['n_real']}, synthetic {record['n_synthetic']})"
        + ("  (finished earlier)" if skipped else "")
      )
  if cli.is_writer():
    out = os.path.join(transfer.TRANSFER.directory(harness.root), "report")
    text, written = transfer.render(records, out)
    print(text)
    for path in written.values():
      print("wrote", path)


if __name__ == "__main__":
  errors.run(main)
