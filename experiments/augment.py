"""Real-data augmentation with synthetic positives (paper 003, Table III).

  python -m experiments.augment --preset=mini --workdir=workdir --seeds=0,1
  python -m experiments.augment --config.augment.codes=AFIB,PVC --seeds=0,1,2

For the codes of --config.augment.codes (default AFIB, CRBBB, 1AVB, CLBBB,
PVC), a classifier over those codes trained on the real train folds as is
(baseline), with their positives duplicated (double), and with one synthetic
copy of each positive record (synthetic; the generator of
--config.generator.kind); G-mean and F1 per code on real fold 10 (thresholds
from fold 9). Writes <root>/augment/<arm>/seed_<s>/metrics.json (finished runs
are skipped) and <root>/augment/report/augment.{md,csv}; see
ecgjax/eval/augment.py for the definitions.
"""

import os

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.eval import augment, pipeline_setup, tstr

cli.define_flags()
_SEEDS = flags.DEFINE_string(
  "seeds", "0", "Comma-separated seeds (classifier and generator noise)."
)


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start(evaluation="augment")
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  codes = augment.parse_codes(cfg.augment.codes, ds.codes, harness.kind.codes)
  records = []
  for seed in seeds:
    for arm in augment.ARMS:
      record, skipped = augment.run(harness, codes, arm, seed)
      records.append(record)
      gm = ", ".join(f"{c} {_fmt(record['per_code_gmean'].get(c))}" for c in codes)
      print(f"seed {seed} {arm:9s}: G-mean {gm}" + ("  (finished earlier)" if skipped else ""))
  if cli.is_writer():
    out = os.path.join(augment.AUGMENT.directory(harness.root), "report")
    text, written = augment.render(records, out)
    print(text)
    for path in written.values():
      print("wrote", path)


def _fmt(v):
  return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
  errors.run(main)
