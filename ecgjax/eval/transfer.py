"""Mixtures and transfer: real + synthetic training sets and synthetic pre-training (paper 001).

Every setting trains the 71-label classifier (the generator's codes), picks
its epoch on real fold 9 and is scored on real fold 10 as in TSTR (macro AUROC
by prevalence bucket):

  synthetic       `n_synthetic` generated ECGs of a real_matched draw, nothing real
                  (the pre-trained model of the finetune settings, exported once);
  mix_<r>         all real train records plus r x their number of real_matched
                  generated ECGs (`transfer.ratios`);
  scratch_<f>     a seeded fraction f of the real train records (`transfer.fractions`;
                  scratch_1 is the all-real baseline);
  finetune_<f>    the `synthetic` model fine-tuned on the same fraction, with the
                  same epochs and schedule.

Runs: <root>/transfer/<setting>/seed_<s>/metrics.json; the `synthetic` run also
keeps its model (model/).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import pandas as pd

from ecgjax.errors import ConfigError
from ecgjax.eval import runs
from ecgjax.eval.render import markdown, to_csv, write_text
from ecgjax.train import classifier as clf_lib


def _numbers(text: str, name: str, ok, span: str) -> list[float]:
  try:
    vals = [float(v) for v in str(text).split(",") if v.strip()]
  except ValueError:
    vals = []
  if not vals or not all(ok(v) for v in vals):
    raise ConfigError(f"--config.transfer.{name}={text!r}: expected comma-separated numbers {span}")
  return vals


def settings(tcfg) -> list[str]:
  """The settings of a `transfer` config section, in table order."""
  ratios = _numbers(tcfg.ratios, "ratios", lambda v: v > 0, "> 0")
  fractions = _numbers(tcfg.fractions, "fractions", lambda v: 0 < v <= 1, "in (0, 1]")
  return (
    ["synthetic"]
    + [f"scratch_{f:g}" for f in fractions]
    + [f"finetune_{f:g}" for f in fractions]
    + [f"mix_{r:g}" for r in ratios]
  )


class Transfer:
  def __init__(self, harness):
    self.h = harness
    self.tcfg = harness.cfg.transfer
    self.train_rows = np.flatnonzero(harness.ds.train_mask)

  def _synthetic(self, r: runs.Run, n: int, seed: int, salt: int):
    """A real_matched cohort of n generated ECGs in the run's scratch."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), salt)
    signals, labels, _ = self.h.draw_signals("real_matched", key, n, r.dir, seed)
    return signals, labels

  def _real(self, fraction: float, seed: int) -> np.ndarray:
    rows = self.train_rows
    k = max(1, int(round(fraction * len(rows))))
    if k >= len(rows):
      return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=k, replace=False))

  def pretrained(self, seed: int):
    """The `synthetic` run's classifier (trained and exported once) and its record."""
    r = TRANSFER.run(self.h.root, setting="synthetic", seed=seed)
    model_dir = os.path.join(r.dir, "model")
    done = r.done(self.identity("synthetic"))
    if done is not None and os.path.isdir(model_dir):
      return clf_lib.load(model_dir, self.h.cfg.classifier)[0], done, True
    n = int(self.tcfg.n_synthetic or self.h.cfg.tstr.n)
    t0 = time.perf_counter()
    r.scratch("cohort")
    signals, labels = self._synthetic(r, n, seed, 1)
    clf, summary = self._fit(r, signals, labels, seed)
    if jax.process_index() == 0:
      clf_lib.export(model_dir, clf, self.h.cfg.classifier)
    record = self._record(summary, clf, n_real=0, n_synthetic=n, init=None, t0=t0)
    return clf, r.write(record, self.identity("synthetic")), False

  def identity(self, setting: str) -> dict:
    """What decides a setting's record besides its directory: the harness's settings
    (with the generator for settings that use synthetic records) and the synthetic
    cohort's size."""
    synthetic = not setting.startswith("scratch")
    return {
      "n_synthetic": int(self.tcfg.n_synthetic or self.h.cfg.tstr.n),
      **self.h.settings(generator=synthetic),
    }

  def _fit(self, r, signals, labels, seed, init=None):
    r.scratch("classifier")
    return self.h.fit_and_score(signals, labels, seed, r.dir, init=init)

  def _record(self, summary, clf, *, n_real, n_synthetic, init, t0) -> dict:
    return {
      "n_real": int(n_real),
      "n_synthetic": int(n_synthetic),
      "init": init,
      "generator": self.h.kind.name,
      "codes": self.h.codes,
      "macro_auroc": summary["macro_auroc"],
      "buckets": summary["buckets"],
      "per_code": summary["per_code"],
      "n_evaluable": summary["n_evaluable"],
      "best_epoch": clf.best_epoch,
      "config": self.h.cfg.to_dict(),
      "code_version": runs.code_version(),
      "seconds": time.perf_counter() - t0,
    }

  def run(self, setting: str, seed: int) -> tuple[dict, bool]:
    if setting == "synthetic":
      _, record, skipped = self.pretrained(seed)
      return record, skipped
    r = TRANSFER.run(self.h.root, setting=setting, seed=seed)
    done = r.done(self.identity(setting))
    if done is not None:
      return done, True
    kind, value = setting.rsplit("_", 1)
    value = float(value)
    ds = self.h.ds
    t0 = time.perf_counter()
    if kind in ("scratch", "finetune"):
      rows = self._real(value, seed)
      signals, labels = np.asarray(ds.signals[rows]), ds.labels[rows].astype(np.float32)
      init = None
      if kind == "finetune":
        init = self.pretrained(seed)[0].variables
      clf, summary = self._fit(r, signals, labels, seed, init=init)
      record = self._record(
        summary, clf, n_real=len(rows), n_synthetic=0,
        init="synthetic" if init is not None else None, t0=t0,
      )  # fmt: skip
    elif kind == "mix":
      rows = self.train_rows
      n_syn = int(round(value * len(rows)))
      r.scratch("cohort")
      syn, syn_labels = self._synthetic(r, n_syn, seed, 2)
      signals = np.concatenate([np.asarray(ds.signals[rows]), syn])
      labels = np.concatenate(
        [ds.labels[rows].astype(np.float32), np.asarray(syn_labels, np.float32)]
      )
      clf, summary = self._fit(r, signals, labels, seed)
      record = self._record(summary, clf, n_real=len(rows), n_synthetic=n_syn, init=None, t0=t0)
    else:
      raise ConfigError(f"unknown transfer setting {setting!r}")
    return r.write(record, self.identity(setting)), False


def table(records: list[dict]) -> pd.DataFrame:
  order = {"synthetic": 0, "scratch": 1, "finetune": 2, "mix": 3}
  key = lambda s: (order.get(s.rsplit("_", 1)[0] if s != "synthetic" else s, 9), s)
  rows = []
  for setting in sorted({r["setting"] for r in records}, key=key):
    rs = [r for r in records if r["setting"] == setting]
    m = runs.mean_std(r["macro_auroc"] for r in rs)
    row = {
      "setting": setting,
      "real records": rs[0]["n_real"],
      "synthetic records": rs[0]["n_synthetic"],
      "init": rs[0]["init"] or "random",
      "macro AUROC": runs.fmt_mean_std(*m, digits=4),
    }
    for b in ("common", "moderate", "rare"):
      row[b] = runs.fmt_mean_std(*runs.mean_std(r["buckets"].get(b) for r in rs), digits=4)
    row["seeds"] = m[2]
    rows.append(row)
  return pd.DataFrame(rows)


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  df = table(records)
  md = (
    "Real and synthetic training sets (paper 001): synthetic only, real subsets from scratch "
    "and fine-tuned from the synthetic model, and all real records with synthetic ones added; "
    "macro AUROC on real fold 10, mean ± std over seeds.\n\n" + markdown(df)
  )
  return md, {
    "transfer.md": write_text(os.path.join(out, "transfer.md"), md),
    "transfer.csv": to_csv(df, os.path.join(out, "transfer.csv")),
  }


TRANSFER = runs.Evaluation(
  name="transfer",
  title="Mixtures and synthetic pre-training (paper 001)",
  summary="real + synthetic at several ratios; pre-train on synthetic, fine-tune on real "
  "(experiments.transfer)",
  keys=("setting", "seed"),
  subdir=lambda k: os.path.join(k["setting"], f"seed_{k['seed']}"),
  required={"setting": str, "seed": int, "macro_auroc": (int, float), "buckets": dict},
  render=render,
)
