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

import os
import shutil

import numpy as np
from absl import flags

from ecgjax import cli, errors, fileio, metrics
from ecgjax.data import load_ptbxl
from ecgjax.eval import pipeline_setup, tstr
from ecgjax.generators import cohort

cli.define_flags()
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds of the synthetic test copy.")


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  pipeline_setup.ensure_judge(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  gen, (judge, _) = harness.generator, harness.judge
  cols = harness.columns
  te, va = np.flatnonzero(ds.test_mask), np.flatnonzero(ds.val_mask)
  p_val = judge.predict(np.asarray(ds.signals[va]), mesh)[:, cols]
  p_real = judge.predict(np.asarray(ds.signals[te]), mesh)[:, cols]
  y_te = ds.labels[te][:, cols]
  common = dict(
    y_true_val=ds.labels[va][:, cols],
    y_score_val=p_val,
    train_labels=ds.labels[ds.train_mask][:, cols],
    codes=harness.codes,
    min_test_positives=cfg.tstr.min_test_positives,
    n_boot=cfg.tstr.n_boot,
  )
  trtr = metrics.summarize(y_te, p_real, **common)
  for seed in seeds:
    run_dir = os.path.join(harness.root, "trts", f"seed_{seed}")
    path = os.path.join(run_dir, tstr.METRICS)
    if os.path.isfile(path):
      print(f"seed {seed}: finished earlier ({path})")
      continue
    out = os.path.join(run_dir, "cohort")
    cohort.generate_cohort(gen, mesh, ds.cond[te], ds.labels[te], te, out, seed=seed)
    signals = cohort.read_cohort(out)["signals"]
    trts = metrics.summarize(y_te, judge.predict(signals, mesh)[:, cols], seed=seed, **common)
    record = {
      "policy": "trts",
      "seed": seed,
      "generator": harness.kind.name,
      "codes": harness.codes,
      "n_test": int(len(te)),
      "macro_auroc": trts["macro_auroc"],
      "buckets": trts["buckets"],
      "per_code": trts["per_code"],
      "n_evaluable": trts["n_evaluable"],
      "trtr_macro_auroc": trtr["macro_auroc"],
      "trtr_buckets": trtr["buckets"],
      "config": cfg.to_dict(),
      "code_version": tstr.code_version(),
    }
    if cli.is_writer():
      fileio.write_json(path, record)
      shutil.rmtree(out, ignore_errors=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
    print(
      f"seed {seed}: TRTS macro AUROC {fmt(trts['macro_auroc'])} vs TRTR "
      f"{fmt(trtr['macro_auroc'])} over {trts['n_evaluable']} codes -> {path}"
    )


if __name__ == "__main__":
  errors.run(main)
