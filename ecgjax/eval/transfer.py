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

import jax
import numpy as np
import pandas as pd
from ml_collections import ConfigDict

from ecgjax.errors import ConfigError
from ecgjax.eval import runs, salts
from ecgjax.eval.render import markdown, to_csv, write_text
from ecgjax.train import classifier as clf_lib


def _numbers(text: str, name: str, ok, span: str) -> list[float]:
  return runs.parse_list(
    text, float, flag=f"--config.transfer.{name}", expected=f"comma-separated numbers {span}",
    ok=ok,
  )  # fmt: skip


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
    r.scratch("cohort")
    signals, labels, _ = self.h.draw_signals("real_matched", salts.key(seed, salt), n, r.dir, seed)
    return signals, labels

  def _real(self, fraction: float, seed: int) -> np.ndarray:
    rows = self.train_rows
    k = max(1, int(round(fraction * len(rows))))
    if k >= len(rows):
      return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=k, replace=False))

  def pretrained(self, seed: int):
    """The `synthetic` run's classifier (trained and exported once; later calls load it),
    its record and whether it was finished earlier."""
    r = TRANSFER.run(self.h.root, setting="synthetic", seed=seed)
    model_dir = os.path.join(r.dir, "model")
    trained = {}

    def make(r: runs.Run) -> dict:
      n = int(self.tcfg.n_synthetic or self.h.cfg.tstr.n)
      signals, labels = self._synthetic(r, n, seed, salts.TRANSFER_PRETRAIN)
      clf, summary = self.h.fit_and_score(signals, labels, seed, r.dir)
      if jax.process_index() == 0:
        clf_lib.export(model_dir, clf, self.h.cfg.classifier)
      trained["clf"] = clf
      return self._record(summary, clf, n_real=0, n_synthetic=n, init=None)

    record, skipped = r.execute(self.identity("synthetic"), make, config=self.h.cfg)
    clf = trained.get("clf") or clf_lib.load(model_dir, self.h.cfg.classifier)[0]
    return clf, record, skipped

  def identity(self, setting: str) -> dict:
    """What decides a setting's record besides its directory: the harness's settings
    (with the generator for settings that use synthetic records) and the synthetic
    cohort's size."""
    synthetic = not setting.startswith("scratch")
    return {
      "n_synthetic": int(self.tcfg.n_synthetic or self.h.cfg.tstr.n),
      **self.h.settings(generator=synthetic),
    }

  def _record(self, summary, clf, *, n_real, n_synthetic, init) -> dict:
    return {
      "n_real": int(n_real),
      "n_synthetic": int(n_synthetic),
      "init": init,
      "generator": self.h.kind.name,
      "codes": self.h.codes,
      **self.h.scored(summary, clf),
    }

  def run(self, setting: str, seed: int) -> tuple[dict, bool]:
    if setting == "synthetic":
      _, record, skipped = self.pretrained(seed)
      return record, skipped
    family, value = setting.rsplit("_", 1)
    if family not in ("scratch", "finetune", "mix"):
      raise ConfigError(f"unknown transfer setting {setting!r}")
    value = float(value)
    ds = self.h.ds

    def make(r: runs.Run) -> dict:
      if family in ("scratch", "finetune"):
        rows = self._real(value, seed)
        signals, labels = np.asarray(ds.signals[rows]), ds.labels[rows].astype(np.float32)
        init = self.pretrained(seed)[0].variables if family == "finetune" else None
        clf, summary = self.h.fit_and_score(signals, labels, seed, r.dir, init=init)
        return self._record(
          summary, clf, n_real=len(rows), n_synthetic=0,
          init="synthetic" if init is not None else None,
        )  # fmt: skip
      rows = self.train_rows
      n_syn = int(round(value * len(rows)))
      syn, syn_labels = self._synthetic(r, n_syn, seed, salts.TRANSFER_MIX)
      signals = np.concatenate([np.asarray(ds.signals[rows]), syn])
      labels = np.concatenate(
        [ds.labels[rows].astype(np.float32), np.asarray(syn_labels, np.float32)]
      )
      clf, summary = self.h.fit_and_score(signals, labels, seed, r.dir)
      return self._record(summary, clf, n_real=len(rows), n_synthetic=n_syn, init=None)

    r = TRANSFER.run(self.h.root, setting=setting, seed=seed)
    return r.execute(self.identity(setting), make, config=self.h.cfg)


def config(preset: str) -> ConfigDict:
  """cfg.transfer: mix_<r> for each of `ratios` (all real train records + r x as many
  synthetic ones), scratch_<f> and finetune_<f> for each of `fractions` (real subsets), and
  the synthetic-only / pre-training cohort's size `n_synthetic` (0: tstr.n)."""
  paper = preset == "paper"
  return ConfigDict(
    dict(
      ratios="0.5,1,2" if paper else "1",
      fractions="0.1,0.25,0.5,1" if paper else "0.25,1",
      n_synthetic=0 if paper else 512,
    )
  )


def table(records: list[dict]) -> pd.DataFrame:
  order = {"synthetic": 0, "scratch": 1, "finetune": 2, "mix": 3}
  key = lambda s: (order.get(s.rsplit("_", 1)[0] if s != "synthetic" else s, 9), s)
  rows = []
  for setting in sorted({r["setting"] for r in records}, key=key):
    rs = [r for r in records if r["setting"] == setting]
    row = {
      "setting": setting,
      "real records": rs[0]["n_real"],
      "synthetic records": rs[0]["n_synthetic"],
      "init": rs[0]["init"] or "random",
    }
    rows.append({**row, **runs.auroc_cells(rs)})
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
  config=config,
)
