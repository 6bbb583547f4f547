"""The judge: an XResNet1d-50 trained by the custodian on the real train folds (docs/design.md §4).

Stored beside the generator in <workdir>/judge/, with per-class decision
thresholds chosen on fold 9 (F1-optimal), which `iter_relabel` uses.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ecgjax import metrics, storage
from ecgjax.data import pipeline
from ecgjax.train import classifier as clf_lib

JUDGE_DIR = "judge"


def path(workdir: str) -> str:
  return os.path.join(workdir, JUDGE_DIR)


def exists(workdir: str) -> bool:
  p = path(workdir)
  return any(d.isdigit() for d in storage.listdir(p))


def train(cfg, ds, workdir: str, mesh, *, progress: bool = True) -> clf_lib.Classifier:
  tr, va = np.flatnonzero(ds.train_mask), np.flatnonzero(ds.val_mask)
  val_signals = np.asarray(ds.signals[va])
  clf = clf_lib.train_classifier(
    cfg.classifier,
    np.asarray(ds.signals[tr]),
    ds.labels[tr],
    val_signals,
    ds.labels[va],
    mesh=mesh,
    seed=cfg.classifier.seed,
    progress=progress,
    ckpt_dir=os.path.join(workdir, "judge_train"),
    desc="judge",
  )
  thresholds = metrics.choose_thresholds(ds.labels[va], clf.predict(val_signals, mesh), metric="f1")
  clf_lib.export(  # process 0 writes it
    path(workdir), clf, cfg.classifier, {"thresholds": np.asarray(thresholds, np.float32)}
  )
  pipeline.barrier("judge exported")  # the others may load it next
  return clf


def load(workdir: str, cfg) -> tuple[clf_lib.Classifier, np.ndarray]:
  """(judge, thresholds (71,))."""
  from ecgjax.errors import CheckpointError

  if not exists(workdir):
    raise CheckpointError(
      f"no judge in {path(workdir)}; run python -m experiments.train_judge --workdir={workdir}"
    )
  f32 = jax.ShapeDtypeStruct((71,), np.float32)
  clf, extra = clf_lib.load(path(workdir), cfg.classifier, {"thresholds": f32})
  return clf, np.asarray(extra["thresholds"])
