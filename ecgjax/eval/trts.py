"""Train on real, test on synthetic (TRTS): the judge scored on a synthetic copy of fold 10.

The classifier trained on the real train folds (the judge) is scored on ECGs
generated from the test fold's own conditioning tuples, beside its score on
the real test fold (TRTR). A TRTS close to TRTR says the generator renders the
labelled conditions recognisably. With a generator that renders only some
codes (the simulator), both are scored on those codes. Runs:
<root>/trts/seed_<s>/metrics.json (ecgjax/eval/runs.py).
"""

from __future__ import annotations

import os

import numpy as np

from ecgjax import metrics
from ecgjax.eval import runs
from ecgjax.eval.render import markdown, write_text
from ecgjax.generators import cohort


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  """TRTS against TRTR, per seed and as mean ± std."""
  import pandas as pd

  rows = [
    {
      "seed": r["seed"],
      "generator": r.get("generator", "?"),
      "TRTS macro": r["macro_auroc"],
      "TRTR macro": r.get("trtr_macro_auroc"),
      "codes": r["n_evaluable"],
    }
    for r in sorted(records, key=lambda r: r["seed"])
  ]
  trts = runs.mean_std(r["macro_auroc"] for r in records)
  trtr = runs.mean_std(r.get("trtr_macro_auroc") for r in records)
  md = (
    "The judge (trained on real train folds) scored on a synthetic copy of the test fold "
    f"(TRTS) and on the real test fold (TRTR): TRTS {runs.fmt_mean_std(*trts)}, "
    f"TRTR {runs.fmt_mean_std(*trtr)}.\n\n" + markdown(pd.DataFrame(rows), ".4f")
  )
  return md, {"trts.md": write_text(os.path.join(out, "trts.md"), md)}


TRTS = runs.Evaluation(
  name="trts",
  title="Train real, test synthetic (TRTS)",
  summary="the judge scored on a synthetic copy of fold 10 beside the real fold (experiments.trts)",
  keys=("seed",),
  subdir=lambda k: f"seed_{k['seed']}",
  required={"seed": int, "macro_auroc": (int, float), "n_evaluable": int},
  render=render,
)


def run(harness, seeds, *, progress: bool = True):
  """TRTS for each seed with the harness's generator and judge; yields (record, skipped)."""
  ds, cfg, mesh = harness.ds, harness.cfg, harness.mesh
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
  identity = harness.settings(generator=True, judge=True)
  for seed in seeds:

    def make(r: runs.Run, seed=seed) -> dict:
      out = r.scratch("cohort")
      cohort.generate_cohort(
        gen, mesh, ds.cond[te], ds.labels[te], te, out, seed=seed, progress=progress
      )
      signals = cohort.read_cohort(out)["signals"]
      trts = metrics.summarize(y_te, judge.predict(signals, mesh)[:, cols], seed=seed, **common)
      return {
        "policy": "trts",
        "generator": harness.kind.name,
        "codes": harness.codes,
        "n_test": int(len(te)),
        "macro_auroc": trts["macro_auroc"],
        "buckets": trts["buckets"],
        "per_code": trts["per_code"],
        "n_evaluable": trts["n_evaluable"],
        "trtr_macro_auroc": trtr["macro_auroc"],
        "trtr_buckets": trtr["buckets"],
      }

    yield TRTS.run(harness.root, seed=seed).execute(identity, make, config=cfg, scratch=())
