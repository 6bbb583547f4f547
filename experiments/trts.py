"""Train on real, test on synthetic (TRTS): the judge scored on a synthetic copy of fold 10.

  python -m experiments.trts --preset=mini --seeds=0

The classifier trained on real train folds (the judge) is scored on ECGs
generated from the test fold's own conditioning tuples, next to its score on
the real test fold (TRTR). A TRTS close to TRTR says the generator renders
the labelled conditions recognisably. Writes <workdir>/trts/seed_<s>/metrics.json.
"""

import os
import shutil

import numpy as np
from absl import flags

from ecgjax import cli, errors, fileio
from ecgjax.data import load_ptbxl
from ecgjax.diffusion import generator as gen_lib
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import metrics, pipeline_setup, tstr

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
  gen = gen_lib.load(workdir, cfg, ds.content_key)
  judge, _ = judge_lib.load(workdir, cfg)
  te, va = np.flatnonzero(ds.test_mask), np.flatnonzero(ds.val_mask)
  p_val = judge.predict(np.asarray(ds.signals[va]), mesh)
  p_real = judge.predict(np.asarray(ds.signals[te]), mesh)
  common = dict(
    y_true_val=ds.labels[va],
    y_score_val=p_val,
    train_labels=ds.labels[ds.train_mask],
    codes=list(ds.codes),
    min_test_positives=cfg.tstr.min_test_positives,
    n_boot=cfg.tstr.n_boot,
  )
  trtr = metrics.summarize(ds.labels[te], p_real, **common)
  for seed in seeds:
    run_dir = os.path.join(workdir, "trts", f"seed_{seed}")
    path = os.path.join(run_dir, tstr.METRICS)
    if os.path.isfile(path):
      print(f"seed {seed}: finished earlier ({path})")
      continue
    signals = tstr.generate_signals(
      gen, cfg, mesh, ds.cond[te], ds.labels[te], te, os.path.join(run_dir, "cohort"), seed
    )
    trts = metrics.summarize(ds.labels[te], judge.predict(signals, mesh), seed=seed, **common)
    record = {
      "policy": "trts",
      "seed": seed,
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
      shutil.rmtree(os.path.join(run_dir, "cohort"), ignore_errors=True)
    print(
      f"seed {seed}: TRTS macro AUROC {trts['macro_auroc']:.4f} vs TRTR {trtr['macro_auroc']:.4f} "
      f"over {trts['n_evaluable']} codes -> {path}"
    )


if __name__ == "__main__":
  errors.run(main)
