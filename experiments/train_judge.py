"""Trains the judge: an XResNet1d-50 on the real train folds, stored beside the generator.

  python -m experiments.train_judge --preset=mini --workdir=workdir

The judge scores generated pools for the filtering, relabelling and diversity
policies (docs/design.md §4) and is the real-trained model of TRTS. Writes
<workdir>/judge/ (weights, input statistics, F1 thresholds chosen on fold 9).
"""

import numpy as np

from ecgjax import cli, errors, metrics
from ecgjax.data import load_ptbxl
from ecgjax.eval import judge

cli.define_flags()


def main(argv):
  del argv
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.data_dir())
  clf = judge.train(cfg, ds, cli.workdir(), mesh)
  te = np.flatnonzero(ds.test_mask)
  auc = metrics.macro_auroc(
    ds.labels[te], clf.predict(np.asarray(ds.signals[te]), mesh), ds.evaluable()
  )
  print(
    f"judge: best epoch {clf.best_epoch + 1}, fold-9 macro AUROC {clf.val_auroc:.4f}, "
    f"fold-10 macro AUROC {auc:.4f} over {ds.evaluable().sum()} codes -> {judge.path(cli.workdir())}"
  )


if __name__ == "__main__":
  errors.run(main)
