"""Lead consistency: how far a cohort's limb leads are from Einthoven's and Goldberger's
identities, summarised per identity so real and synthetic cohorts can be tabled side by side.

The per-record measure is `ecgjax.data.signals.limb_residuals` (not redefined
here): for each record and identity, mean_t |residual(t)| / mean_{lead, t}
|limb lead|, the residuals being
  einthoven  I + III - II
  avr        aVR + (I + II) / 2
  avl        aVL - I + II / 2
  avf        aVF - II + I / 2
over the six limb leads (I, II, III, aVR, aVL, aVF; channels 0-5). A record
whose limb leads are all zero has residual 0. Recorded PTB-XL signals satisfy
the identities up to quantisation and filtering (median residual below 0.01 on
the embedded records); a generator that models the 12 leads independently
does not.

* `residual_summary(signals)`: per identity the median and the mean of the
  per-record residuals over the cohort's records, and the record count.
* `residual_table(cohorts)`: those summaries for several cohorts as one
  DataFrame, one row per identity, columns `<cohort>_median`, `<cohort>_mean`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgjax.data.signals import limb_residuals

__all__ = ["IDENTITIES", "residual_summary", "residual_table"]

IDENTITIES = ("einthoven", "avr", "avl", "avf")


def _check_signals(signals) -> np.ndarray:
  x = np.asarray(signals)
  if x.ndim != 3 or x.shape[1] < 6:
    raise ValueError(f"signals must be (N, 12, T) with the limb leads first, got shape {x.shape}")
  if len(x) == 0:
    raise ValueError("signals has no records")
  return x


def residual_summary(signals) -> dict[str, dict[str, float]]:
  """{identity: {"median", "mean", "n"}} of `limb_residuals(signals)` over records."""
  residuals = limb_residuals(_check_signals(signals))
  return {
    name: {"median": float(np.median(r)), "mean": float(np.mean(r)), "n": len(r)}
    for name, r in residuals.items()
  }


def residual_table(cohorts: dict[str, np.ndarray]) -> pd.DataFrame:
  """One row per identity; for each named cohort (e.g. {"real": x, "synthetic": y}) the
  columns `<name>_median` and `<name>_mean` of its per-record residuals."""
  if not cohorts:
    raise ValueError("residual_table: no cohorts")
  columns = {}
  for name, signals in cohorts.items():
    summary = residual_summary(signals)
    columns[f"{name}_median"] = [summary[i]["median"] for i in IDENTITIES]
    columns[f"{name}_mean"] = [summary[i]["mean"] for i in IDENTITIES]
  return pd.DataFrame(columns, index=pd.Index(IDENTITIES, name="identity"))
