"""Real-data augmentation with synthetic positives (paper 003, Table III; docs/design.md §10).

For chosen codes (default AFIB, CRBBB, 1AVB, CLBBB, PVC) one multi-label
classifier over those codes is trained on the real train folds in three arms:

  baseline   the train records as they are;
  double     every record positive for a chosen code appears twice (so any gain of
             `synthetic` is not just from a larger training set);
  synthetic  the train records plus one generated ECG per such positive record,
             conditioned on that record's own conditioning vector (its labels and
             demographics), labelled with its labels.

Each arm picks its epoch on real fold 9 and is scored on real fold 10: G-mean
and F1 per code at thresholds chosen on fold 9 (G-mean-optimal and
F1-optimal respectively, `metrics.summarize`), and AUROC. Paper 003 trains its
classifier per abnormality; one classifier over the chosen codes costs a
third of the compute and doubles each code's positives the same way (records
positive for another chosen code are doubled too, and counted in
`n_added`). Runs: <root>/augment/<arm>/seed_<s>/metrics.json.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
from ml_collections import ConfigDict

from ecgjax.errors import ConfigError
from ecgjax.eval import runs
from ecgjax.eval.render import markdown, to_csv, write_text
from ecgjax.generators import cohort

ARMS = ("baseline", "double", "synthetic")


def parse_codes(text: str, ds_codes, generator_codes=None) -> list[str]:
  codes = runs.parse_list(
    text, flag="--config.augment.codes", expected="at least one code, e.g. AFIB,PVC"
  )
  unknown = [c for c in codes if c not in ds_codes]
  if unknown:
    raise ConfigError(f"--config.augment.codes: unknown code(s) {', '.join(unknown)}")
  if generator_codes is not None:
    missing = [c for c in codes if c not in generator_codes]
    if missing:
      raise ConfigError(
        f"--config.augment.codes: the generator does not render {', '.join(missing)} "
        f"(it renders {', '.join(generator_codes)})"
      )
  return codes


def run(harness, codes: list[str], arm: str, seed: int) -> tuple[dict, bool]:
  """One arm for one seed on the TSTR harness; returns (record, finished earlier)."""
  if arm not in ARMS:
    raise ConfigError(f"augment arm {arm!r}: choose one of {', '.join(ARMS)}")
  identity = {"codes": list(codes), **harness.settings(generator=arm == "synthetic")}

  def make(r: runs.Run) -> dict:
    ds = harness.ds
    cols = np.array([list(ds.codes).index(c) for c in codes])
    tr = np.flatnonzero(ds.train_mask)
    pos = tr[ds.labels[tr][:, cols].any(axis=1)]
    t0 = time.perf_counter()
    signals, labels = np.asarray(ds.signals[tr]), ds.labels[tr].astype(np.float32)
    added = 0
    if arm == "double" and len(pos):
      signals = np.concatenate([signals, np.asarray(ds.signals[pos])])
      labels = np.concatenate([labels, ds.labels[pos].astype(np.float32)])
      added = len(pos)
    elif arm == "synthetic" and len(pos):
      out = r.scratch("cohort")
      cohort.generate_cohort(
        harness.generator, harness.mesh, ds.cond[pos], ds.labels[pos], pos, out, seed=seed,
        progress=harness.progress,
      )  # fmt: skip
      made = cohort.read_cohort(out)
      signals = np.concatenate([signals, made["signals"]])
      labels = np.concatenate([labels, made["labels"].astype(np.float32)])
      added = len(pos)
    t1 = time.perf_counter()
    clf, summary = harness.fit_and_score(signals, labels, seed, r.dir, columns=cols)
    te = ds.test_mask
    return {
      "codes": codes,
      "generator": harness.kind.name if arm == "synthetic" else None,
      "n_train": int(len(signals)),
      "n_added": int(added),
      "train_positives": {c: int(ds.labels[tr][:, j].sum()) for c, j in zip(codes, cols)},
      "test_positives": {c: int(ds.labels[te][:, j].sum()) for c, j in zip(codes, cols)},
      "per_code_gmean": summary["per_code_gmean"],
      "per_code_f1": summary["per_code_f1"],
      "per_code_auroc": summary["per_code"],
      "macro_auroc": summary["macro_auroc"],
      "n_evaluable": summary["n_evaluable"],
      "excluded_codes": summary["excluded_codes"],
      "best_epoch": clf.best_epoch,
      "timings": {"data_s": t1 - t0, "classifier_s": time.perf_counter() - t1},
    }

  r = AUGMENT.run(harness.root, arm=arm, seed=seed)
  return r.execute(identity, make, config=harness.cfg)


def table(records: list[dict]) -> pd.DataFrame:
  """Paper 003 Table III: one row per metric, one column per (code, arm); mean ± std."""
  codes = list(dict.fromkeys(c for r in records for c in r["codes"]))
  rows = []
  for metric, key in (
    ("G-mean", "per_code_gmean"),
    ("F1", "per_code_f1"),
    ("AUROC", "per_code_auroc"),
  ):
    row = {"metric": metric}
    for code in codes:
      for arm in ARMS:
        vals = [r[key].get(code) for r in records if r["arm"] == arm and code in r["codes"]]
        row[f"{code} {arm}"] = runs.fmt_mean_std(*runs.mean_std(vals))
    rows.append(row)
  return pd.DataFrame(rows)


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  df = table(records)
  first = records[0]
  pos = ", ".join(
    f"{c} {first['train_positives'][c]}/{first['test_positives'][c]}" for c in first["codes"]
  )
  seeds = sorted({r["seed"] for r in records})
  md = (
    "Multi-label classifier over the chosen codes on the real train folds: as is (baseline), "
    "their positives duplicated (double), and with one synthetic copy of each positive "
    f"(synthetic). Real fold 10, seeds {', '.join(map(str, seeds))}; train/test positives: "
    f"{pos}. n/a: no positive in the test fold.\n\n" + markdown(df)
  )
  return md, {
    "augment.md": write_text(os.path.join(out, "augment.md"), md),
    "augment.csv": to_csv(df, os.path.join(out, "augment.csv")),
  }


AUGMENT = runs.Evaluation(
  name="augment",
  title="Augmentation with synthetic positives (paper 003, Table III)",
  summary="baseline / doubled positives / synthetic positives, G-mean and F1 per code "
  "(experiments.augment)",
  keys=("arm", "seed"),
  subdir=lambda k: os.path.join(k["arm"], f"seed_{k['seed']}"),
  required={"arm": str, "seed": int, "codes": list, "per_code_gmean": dict, "per_code_f1": dict},
  render=render,
  config=lambda preset: ConfigDict(dict(codes="AFIB,CRBBB,1AVB,CLBBB,PVC")),
)
