"""Host-side (numpy) evaluation metrics for the TSTR protocol (docs/design.md §2, §5).

Everything here works on plain ``(N, K)`` arrays (``K = 71`` SCP statements for
PTB-XL, but nothing is hard-coded): ``y_true`` is a binary label matrix (bool or
0/1 numbers) and ``y_score`` a real-valued score matrix (probabilities or
logits; thresholds are in the same units as the scores).

* ``prevalence_buckets`` / ``evaluable_codes``: train-fold prevalence buckets
  (common p >= 5 %, moderate 2 % <= p < 5 %, rare p < 2 %) and the evaluable-code
  mask (>= 1 positive in train, >= ``min_test_positives`` positives and >= 1
  negative in test).
* ``auroc_per_code``: rank-based Mann-Whitney AUROC with average ranks for ties;
  identical to ``sklearn.metrics.roc_auc_score`` column by column, NaN where a
  column has no positive or no negative.
* ``choose_thresholds`` / ``f1_per_code`` / ``gmean_per_code``: per-class
  thresholds chosen on the validation fold (fold 9) maximising F1 or
  G-mean = sqrt(TPR * TNR); a sample is predicted positive when
  ``score >= threshold``.
* ``bootstrap_macro_auroc``: 90 % percentile interval of the macro AUROC over
  evaluable codes; resamples in which an evaluable code has no positive or no
  negative are redrawn (Strodthoff et al. 2021, ``get_appropriate_bootstrap_samples``).
* ``summarize``: the JSON-serialisable metrics block of ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ecgjax.data import table

__all__ = [
  "prevalence_buckets",
  "evaluable_codes",
  "exclusion_reasons",
  "auroc_per_code",
  "macro_auroc",
  "choose_thresholds",
  "f1_per_code",
  "gmean_per_code",
  "bootstrap_indices",
  "bootstrap_macro_auroc_samples",
  "bootstrap_macro_auroc",
  "summarize",
]

DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #
def _as_labels(y: Any, name: str) -> np.ndarray:
  """Return ``y`` as a 2-D bool array, or raise ValueError naming ``name``."""
  arr = np.asarray(y)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D (N, K) label array, got shape {arr.shape}")
  if arr.dtype == bool:
    return arr
  if not (np.issubdtype(arr.dtype, np.number)):
    raise ValueError(f"{name} must be binary (bool or 0/1 numbers), got dtype {arr.dtype}")
  if arr.size and np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
    raise ValueError(f"{name} contains NaN; labels must be binary (0/1)")
  if arr.size and not np.isin(arr, (0, 1)).all():
    bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
    raise ValueError(
      f"{name} must be binary (0/1); shape {arr.shape} contains other values, e.g. {bad.tolist()}"
    )
  return arr.astype(bool)


def _as_scores(s: Any, name: str) -> np.ndarray:
  arr = np.asarray(s)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D (N, K) score array, got shape {arr.shape}")
  if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ValueError(f"{name} must be a real-valued score array, got dtype {arr.dtype}")
  arr = arr.astype(np.float64, copy=False)
  if np.isnan(arr).any():
    rows, cols = np.nonzero(np.isnan(arr))
    raise ValueError(
      f"{name} (shape {arr.shape}) contains {rows.size} NaN score(s), "
      f"first at row {int(rows[0])}, column {int(cols[0])}"
    )
  return arr


def _check_pair(
  y_true: Any, y_score: Any, true_name: str = "y_true", score_name: str = "y_score"
) -> tuple[np.ndarray, np.ndarray]:
  y = _as_labels(y_true, true_name)
  s = _as_scores(y_score, score_name)
  if y.shape != s.shape:
    raise ValueError(
      f"{true_name} and {score_name} must have the same shape, got {y.shape} and {s.shape}"
    )
  return y, s


def _check_mask(mask: Any, k: int, name: str = "mask") -> np.ndarray:
  m = np.asarray(mask)
  if m.dtype != bool:
    raise ValueError(f"{name} must be a bool array, got dtype {m.dtype}")
  if m.shape != (k,):
    raise ValueError(f"{name} must have shape ({k},), got {m.shape}")
  return m


def _check_thresholds(thresholds: Any, k: int) -> np.ndarray:
  t = np.asarray(thresholds, dtype=np.float64)
  if t.shape != (k,):
    raise ValueError(f"thresholds must have shape ({k},), got {t.shape}")
  if np.isnan(t).any():
    raise ValueError(f"thresholds (shape {t.shape}) contains NaN")
  return t


# --------------------------------------------------------------------------- #
# Buckets and evaluable codes
# --------------------------------------------------------------------------- #
def _at_least(counts: np.ndarray, n: int, frac: float) -> np.ndarray:
  """Exact ``counts / n >= frac`` (no float rounding at the bucket boundaries)."""
  f = Fraction(str(frac))
  return counts.astype(object) * f.denominator >= f.numerator * n


def prevalence_buckets(
  train_labels: Any,
  common: float = table.COMMON_MIN,
  moderate: float = table.RARE_MAX,
) -> dict[str, Any]:
  """Per-code train-fold prevalence and bucket assignment.

  Returns a dict with
    ``prevalence``: (K,) float64, p_k = positives / N_train;
    ``counts``: (K,) int64 positives in train;
    ``bucket``: (K,) array of ``"common"`` (p >= 5 %), ``"moderate"``
    (2 % <= p < 5 %) or ``"rare"`` (p < 2 %, including p = 0);
    ``masks``: {bucket name: (K,) bool}.
  The boundaries are compared exactly (5 of 100 rows is common, 2 of 100 moderate).
  """
  y = _as_labels(train_labels, "train_labels")
  n = y.shape[0]
  if n == 0:
    raise ValueError(f"train_labels must have at least one row, got shape {y.shape}")
  counts = y.sum(axis=0).astype(np.int64)
  if (common, moderate) == (table.COMMON_MIN, table.RARE_MAX):
    bucket = table.bucket_of(counts / n)  # the one definition of docs/design.md §2
  else:
    is_c = _at_least(counts, n, common).astype(bool)
    is_m = _at_least(counts, n, moderate).astype(bool) & ~is_c
    bucket = np.select([is_c, is_m], list(table.BUCKETS[:2]), table.BUCKETS[2])
  return {
    "prevalence": counts / n,
    "counts": counts,
    "bucket": bucket,
    "masks": {name: bucket == name for name in table.BUCKETS},
  }


def evaluable_codes(train_labels: Any, test_labels: Any, min_test_positives: int = 1) -> np.ndarray:
  """(K,) bool: >= 1 train positive, >= ``min_test_positives`` test positives, >= 1 test negative."""
  tr = _as_labels(train_labels, "train_labels")
  te = _as_labels(test_labels, "test_labels")
  if tr.shape[1] != te.shape[1]:
    raise ValueError(
      f"train_labels and test_labels must have the same number of codes, got {tr.shape} and {te.shape}"
    )
  return table.evaluable_codes(tr, te, int(min_test_positives))


def exclusion_reasons(
  train_labels: Any, test_labels: Any, min_test_positives: int = 1
) -> list[str | None]:
  """Per code: None when evaluable, else a human-readable reason (reasons joined by '; ')."""
  tr = _as_labels(train_labels, "train_labels")
  te = _as_labels(test_labels, "test_labels")
  if tr.shape[1] != te.shape[1]:
    raise ValueError(
      f"train_labels and test_labels must have the same number of codes, got {tr.shape} and {te.shape}"
    )
  pos_tr = tr.sum(axis=0)
  pos_te = te.sum(axis=0)
  out: list[str | None] = []
  for k in range(tr.shape[1]):
    r = []
    if pos_tr[k] == 0:
      r.append("no positives in train")
    if pos_te[k] < min_test_positives:
      r.append(
        "no positives in test"
        if pos_te[k] == 0
        else f"{int(pos_te[k])} positives in test (< min_test_positives={min_test_positives})"
      )
    if pos_te[k] == te.shape[0]:
      r.append("no negatives in test")
    out.append("; ".join(r) if r else None)
  return out


# --------------------------------------------------------------------------- #
# AUROC
# --------------------------------------------------------------------------- #
def _average_ranks_sorted(s_sorted: np.ndarray) -> np.ndarray:
  """1-based average ranks for column-wise ascending-sorted ``s_sorted`` (N, K)."""
  n = s_sorted.shape[0]
  idx = np.arange(n)[:, None]
  new_group = np.ones_like(s_sorted, dtype=bool)
  new_group[1:] = s_sorted[1:] != s_sorted[:-1]
  end_group = np.ones_like(s_sorted, dtype=bool)
  end_group[:-1] = new_group[1:]
  first = np.maximum.accumulate(np.where(new_group, idx, 0), axis=0)
  last = np.minimum.accumulate(np.where(end_group, idx, n - 1)[::-1], axis=0)[::-1]
  return (first + last) / 2.0 + 1.0


def auroc_per_code(y_true: Any, y_score: Any) -> np.ndarray:
  """(K,) AUROC per column (Mann-Whitney U with average ranks); NaN where undefined."""
  y, s = _check_pair(y_true, y_score)
  n, k = y.shape
  out = np.full(k, np.nan)
  if n == 0:
    return out
  order = np.argsort(s, axis=0, kind="stable")
  s_sorted = np.take_along_axis(s, order, axis=0)
  y_sorted = np.take_along_axis(y, order, axis=0)
  ranks = _average_ranks_sorted(s_sorted)
  n_pos = y.sum(axis=0).astype(np.float64)
  n_neg = n - n_pos
  rank_sum = (ranks * y_sorted).sum(axis=0)
  ok = (n_pos > 0) & (n_neg > 0)
  out[ok] = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
  return out


def macro_auroc(y_true: Any, y_score: Any, mask: Any | None = None) -> float:
  """Mean AUROC over ``mask`` (default: all codes with a defined AUROC); NaN if empty."""
  a = auroc_per_code(y_true, y_score)
  m = np.isfinite(a) if mask is None else (_check_mask(mask, a.shape[0]) & np.isfinite(a))
  return float(a[m].mean()) if m.any() else float("nan")


# --------------------------------------------------------------------------- #
# Thresholds, F1, G-mean
# --------------------------------------------------------------------------- #
def choose_thresholds(y_true_val: Any, y_prob_val: Any, metric: str = "f1") -> np.ndarray:
  """Per-class threshold maximising ``metric`` ("f1" or "gmean") on the validation fold.

  Candidates are the unique scores of the class; prediction is ``score >= t``.
  Among equally good candidates the largest threshold is chosen. A class with no
  positives in validation (and, for G-mean, also one with no negatives) gets
  ``DEFAULT_THRESHOLD`` = 0.5.
  """
  if metric not in ("f1", "gmean"):
    raise ValueError(f"metric must be 'f1' or 'gmean', got {metric!r}")
  y, s = _check_pair(y_true_val, y_prob_val, "y_true_val", "y_prob_val")
  n, k = y.shape
  thr = np.full(k, DEFAULT_THRESHOLD)
  if n == 0:
    return thr
  order = np.argsort(-s, axis=0, kind="stable")  # descending
  s_sorted = np.take_along_axis(s, order, axis=0)
  y_sorted = np.take_along_axis(y, order, axis=0)
  tp = np.cumsum(y_sorted, axis=0)
  fp = np.cumsum(~y_sorted, axis=0)
  n_pos = tp[-1]
  n_neg = fp[-1]
  for j in range(k):
    if n_pos[j] == 0 or (metric == "gmean" and n_neg[j] == 0):
      continue
    col = s_sorted[:, j]
    # last position of each run of equal scores = "predict all with score >= col[i]"
    last = np.flatnonzero(np.append(col[1:] != col[:-1], True))
    tpj, fpj = tp[last, j].astype(np.float64), fp[last, j].astype(np.float64)
    if metric == "f1":
      val = 2.0 * tpj / (tpj + fpj + n_pos[j])
    else:
      val = np.sqrt((tpj / n_pos[j]) * ((n_neg[j] - fpj) / n_neg[j]))
    # candidates are in descending threshold order -> argmax = largest best threshold
    thr[j] = col[last[int(np.argmax(val))]]
  return thr


def _confusion(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray):
  pred = s >= thresholds[None, :]
  tp = (pred & y).sum(axis=0).astype(np.float64)
  fp = (pred & ~y).sum(axis=0).astype(np.float64)
  fn = (~pred & y).sum(axis=0).astype(np.float64)
  tn = (~pred & ~y).sum(axis=0).astype(np.float64)
  return tp, fp, fn, tn


def f1_per_code(
  y_true: Any, y_prob: Any, thresholds: Any, zero_division: float = 0.0
) -> np.ndarray:
  """(K,) F1 with prediction ``score >= threshold``; ``zero_division`` where TP+FP+FN = 0
  (sklearn's convention, default 0.0)."""
  y, s = _check_pair(y_true, y_prob, "y_true", "y_prob")
  t = _check_thresholds(thresholds, y.shape[1])
  tp, fp, fn, _ = _confusion(y, s, t)
  den = 2 * tp + fp + fn
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), zero_division)


def gmean_per_code(y_true: Any, y_prob: Any, thresholds: Any) -> np.ndarray:
  """(K,) G-mean = sqrt(TPR * TNR) with ``score >= threshold``; NaN where a column
  has no positive or no negative."""
  y, s = _check_pair(y_true, y_prob, "y_true", "y_prob")
  t = _check_thresholds(thresholds, y.shape[1])
  tp, fp, fn, tn = _confusion(y, s, t)
  p, q = tp + fn, tn + fp
  ok = (p > 0) & (q > 0)
  out = np.full(y.shape[1], np.nan)
  out[ok] = np.sqrt((tp[ok] / p[ok]) * (tn[ok] / q[ok]))
  return out


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #
def bootstrap_indices(
  y_true: Any,
  mask: Any,
  n_boot: int = 1000,
  seed: int | np.random.Generator = 0,
  max_redraw_rounds: int = 10_000,
) -> np.ndarray:
  """(n_boot, N) int64 resample indices (with replacement). A resample in which a
  masked code has no positive or no negative is redrawn (Strodthoff et al. 2021).
  Raises RuntimeError if valid resamples are too improbable to be drawn."""
  y = _as_labels(y_true, "y_true")
  n, k = y.shape
  m = _check_mask(mask, k)
  if n_boot < 1:
    raise ValueError(f"n_boot must be >= 1, got {n_boot}")
  if n == 0:
    raise ValueError(f"y_true must have at least one row, got shape {y.shape}")
  ym = y[:, m].astype(np.int64)
  if ym.shape[1] and (ym.sum(0).min() == 0 or (1 - ym).sum(0).min() == 0):
    raise ValueError("mask selects a code with no positive or no negative in y_true")
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  out = np.empty((n_boot, n), dtype=np.int64)
  todo = np.arange(n_boot)
  for _ in range(max_redraw_rounds):
    if todo.size == 0:
      return out
    draw = rng.integers(0, n, size=(todo.size, n))
    if ym.shape[1]:
      pos = np.concatenate(
        [_resample_counts(draw[c : c + 256], n) @ ym for c in range(0, draw.shape[0], 256)]
      )  # (b, K_eval) positives per resample and code
      good = (pos.min(axis=1) > 0) & (pos.max(axis=1) < n)
    else:
      good = np.ones(todo.size, dtype=bool)
    out[todo[good]] = draw[good]
    todo = todo[~good]
  raise RuntimeError(
    f"could not draw {n_boot} valid bootstrap resamples in {max_redraw_rounds} rounds; "
    "some evaluable code has too few positives or negatives"
  )


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
  b = idx.shape[0]
  flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
  return np.bincount(flat, minlength=b * n).reshape(b, n)


def _auroc_weighted_one(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
  """AUROC of one code for each row of integer weights ``w`` (B, N) (= AUROC on the
  resample with those multiplicities), exactly via integer Mann-Whitney counts."""
  order = np.argsort(s, kind="stable")
  ss, ys = s[order], y[order]
  n = ss.shape[0]
  new_group = np.ones(n, dtype=bool)
  new_group[1:] = ss[1:] != ss[:-1]
  end_group = np.append(new_group[1:], True)
  idx = np.arange(n)
  first = np.maximum.accumulate(np.where(new_group, idx, 0))
  last = np.minimum.accumulate(np.where(end_group, idx, n - 1)[::-1])[::-1]
  ws = w[:, order]
  wneg = np.where(ys[None, :], 0, ws)
  cs = np.cumsum(wneg, axis=1)  # negatives with rank <= i
  pos = np.flatnonzero(ys)
  lo, hi = first[pos], last[pos]
  below = np.where(lo > 0, cs[:, np.maximum(lo - 1, 0)], 0)  # negatives strictly lower
  within = cs[:, hi] - below  # negatives tied
  num2 = (ws[:, pos] * (2 * below + within)).sum(axis=1)  # 2 * U
  n_pos = ws[:, pos].sum(axis=1)
  n_neg = cs[:, -1]
  with np.errstate(divide="ignore", invalid="ignore"):
    return num2 / (2.0 * n_pos * n_neg)


def bootstrap_macro_auroc_samples(
  y_true: Any,
  y_score: Any,
  mask: Any,
  n_boot: int = 1000,
  seed: int | np.random.Generator = 0,
  chunk: int = 250,
) -> np.ndarray:
  """(n_boot,) macro AUROC over ``mask`` on each (redrawn) bootstrap resample."""
  y, s = _check_pair(y_true, y_score)
  m = _check_mask(mask, y.shape[1])
  if not m.any():
    raise ValueError("mask selects no code; nothing to bootstrap")
  idx = bootstrap_indices(y, m, n_boot=n_boot, seed=seed)
  n = y.shape[0]
  cols = np.flatnonzero(m)
  out = np.empty(n_boot)
  for c0 in range(0, n_boot, chunk):
    w = _resample_counts(idx[c0 : c0 + chunk], n)
    acc = np.zeros(w.shape[0])
    for j in cols:
      acc += _auroc_weighted_one(y[:, j], s[:, j], w)
    out[c0 : c0 + chunk] = acc / cols.size
  return out


def bootstrap_macro_auroc(
  y_true: Any,
  y_score: Any,
  mask: Any,
  n_boot: int = 1000,
  alpha: float = 0.1,
  seed: int | np.random.Generator = 0,
) -> tuple[float, float, float]:
  """(lo, hi, point): percentile ``1 - alpha`` interval of the macro AUROC over
  ``mask`` (default 90 %: 5th and 95th percentiles) and the full-sample point estimate."""
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  samples = bootstrap_macro_auroc_samples(y_true, y_score, mask, n_boot=n_boot, seed=seed)
  lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
  point = macro_auroc(y_true, y_score, mask)
  return float(lo), float(hi), float(point)


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #
def _f(x: float) -> float | None:
  x = float(x)
  return None if not math.isfinite(x) else x


def _mean_or_none(v: np.ndarray) -> float | None:
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else None


def _weighted_or_none(v: np.ndarray, w: np.ndarray) -> float | None:
  ok = np.isfinite(v) & (w > 0)
  return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else None


def summarize(
  y_true_test: Any,
  y_score_test: Any,
  y_true_val: Any,
  y_score_val: Any,
  train_labels: Any,
  codes: Sequence[str],
  min_test_positives: int = 1,
  n_boot: int = 1000,
  seed: int = 0,
) -> dict[str, Any]:
  """JSON-serialisable TSTR metrics (docs/design.md §5).

  Keys: ``macro_auroc``, ``buckets`` {common, moderate, rare: mean AUROC over the
  evaluable codes of the bucket or None}, ``bucket_counts`` (evaluable codes per
  bucket), ``per_code`` {code: AUROC} (evaluable codes), ``n_evaluable``,
  ``n_codes``, ``excluded_codes`` [{code, reason}], ``macro_f1``, ``macro_gmean``
  (thresholds chosen on validation), ``weighted_f1``, ``weighted_gmean``
  (weighted by test positives, as in paper 003), ``per_code_f1``,
  ``per_code_gmean``, ``thresholds_f1``, ``thresholds_gmean``,
  ``macro_auroc_ci90`` [lo, hi] (None when ``n_boot == 0``), ``n_boot``,
  ``min_test_positives``, ``n_test``, ``n_val``.
  """
  yt, st = _check_pair(y_true_test, y_score_test, "y_true_test", "y_score_test")
  yv, sv = _check_pair(y_true_val, y_score_val, "y_true_val", "y_score_val")
  tr = _as_labels(train_labels, "train_labels")
  k = yt.shape[1]
  codes = list(codes)
  if len(codes) != k:
    raise ValueError(
      f"codes has {len(codes)} entries but y_true_test has {k} columns (shape {yt.shape})"
    )
  if len(set(codes)) != k:
    raise ValueError("codes contains duplicates")
  if yv.shape[1] != k or tr.shape[1] != k:
    raise ValueError(
      f"column counts differ: y_true_test {yt.shape}, y_true_val {yv.shape}, train_labels {tr.shape}"
    )

  buckets = prevalence_buckets(tr)
  ev = evaluable_codes(tr, yt, min_test_positives)
  reasons = exclusion_reasons(tr, yt, min_test_positives)
  auc = auroc_per_code(yt, st)

  thr_f1 = choose_thresholds(yv, sv, "f1")
  thr_gm = choose_thresholds(yv, sv, "gmean")
  f1 = f1_per_code(yt, st, thr_f1)
  gm = gmean_per_code(yt, st, thr_gm)
  support = yt.sum(axis=0).astype(np.float64)

  ev_idx = np.flatnonzero(ev)
  out: dict[str, Any] = {
    "macro_auroc": _mean_or_none(auc[ev]),
    "buckets": {},
    "bucket_counts": {},
    "per_code": {codes[j]: float(auc[j]) for j in ev_idx},
    "n_evaluable": int(ev.sum()),
    "n_codes": int(k),
    "excluded_codes": [{"code": codes[j], "reason": reasons[j]} for j in range(k) if not ev[j]],
    "macro_f1": _mean_or_none(f1[ev]),
    "macro_gmean": _mean_or_none(gm[ev]),
    "weighted_f1": _weighted_or_none(f1[ev], support[ev]),
    "weighted_gmean": _weighted_or_none(gm[ev], support[ev]),
    "per_code_f1": {codes[j]: _f(f1[j]) for j in ev_idx},
    "per_code_gmean": {codes[j]: _f(gm[j]) for j in ev_idx},
    "thresholds_f1": {codes[j]: float(thr_f1[j]) for j in ev_idx},
    "thresholds_gmean": {codes[j]: float(thr_gm[j]) for j in ev_idx},
    "code_bucket": {codes[j]: str(buckets["bucket"][j]) for j in range(k)},
    "train_prevalence": {codes[j]: float(buckets["prevalence"][j]) for j in range(k)},
    "macro_auroc_ci90": None,
    "n_boot": int(n_boot),
    "min_test_positives": int(min_test_positives),
    "n_test": int(yt.shape[0]),
    "n_val": int(yv.shape[0]),
  }
  for name in table.BUCKETS:
    bm = buckets["masks"][name] & ev
    out["buckets"][name] = _mean_or_none(auc[bm])
    out["bucket_counts"][name] = int(bm.sum())
  if n_boot and ev.any():
    lo, hi, _ = bootstrap_macro_auroc(yt, st, ev, n_boot=n_boot, alpha=0.1, seed=seed)
    out["macro_auroc_ci90"] = [lo, hi]
  return out
