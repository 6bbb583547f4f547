"""The condition table of docs/design.md §2: labels, demographics, folds, buckets.

Pure numpy functions over per-record columns, so each rule (the age-300 marker,
sex-wise imputation, train-fold z-normalisation, prevalence buckets, evaluable
codes) can be tested on a hand-made table without any WFDB file.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

import numpy as np

from ecgjax.errors import DataError  # noqa: F401  (raised here, re-exported)

TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)
VAL_FOLD = 9
TEST_FOLD = 10

DEMO_AXES = ("age", "sex", "height", "weight", "bmi")
AGE_OVER_89_MARKER = 300.0  # PTB-XL writes 300 for patients older than 89.
AGE_OVER_89_VALUE = 90.0

COMMON_MIN = 0.05  # common: p >= 5 %
RARE_MAX = 0.02  # rare: p < 2 %; moderate in between
BUCKETS = ("common", "moderate", "rare")


def parse_scp_codes(text: str, ecg_id: int) -> dict[str, float]:
  """Parses one `scp_codes` field, a Python dict literal {code: likelihood}."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
    raise DataError(
      f"ecg_id {ecg_id}: malformed scp_codes field {text!r} ({e.__class__.__name__})"
    ) from None
  if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
    raise DataError(
      f"ecg_id {ecg_id}: malformed scp_codes field {text!r} (expected a dict of code -> likelihood)"
    )
  return value


def label_matrix(
  scp_codes: Sequence[Mapping[str, float]], codes: Sequence[str], ecg_ids: Sequence[int]
) -> np.ndarray:
  """(N, K) bool: code k present when it is a key of the record's scp_codes.

  Any likelihood counts (also 0.0), the PTB-XL benchmark convention.
  """
  index = {c: k for k, c in enumerate(codes)}
  labels = np.zeros((len(scp_codes), len(codes)), dtype=bool)
  for i, (record_codes, ecg_id) in enumerate(zip(scp_codes, ecg_ids)):
    for code in record_codes:
      if code not in index:
        raise DataError(f"ecg_id {ecg_id}: unknown SCP code {code!r} (not in scp_statements.csv)")
      labels[i, index[code]] = True
  return labels


def fold_masks(fold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Boolean masks of the train (1-8), validation (9) and test (10) folds."""
  fold = np.asarray(fold)
  return np.isin(fold, TRAIN_FOLDS), fold == VAL_FOLD, fold == TEST_FOLD


def clean_age(age: np.ndarray) -> np.ndarray:
  """Maps the >89 marker (300) to 90; other values (and NaN) are kept."""
  age = np.asarray(age, dtype=np.float64).copy()
  age[age == AGE_OVER_89_MARKER] = AGE_OVER_89_VALUE
  return age


def impute_by_sex(values: np.ndarray, sex: np.ndarray, train: np.ndarray, name: str) -> np.ndarray:
  """Fills NaNs with the train-fold median of the same sex.

  If a sex has no observed train value, the train median over both sexes is
  used; if the train folds have no value at all, that is an error (there is
  nothing to impute from).
  """
  values = np.asarray(values, dtype=np.float64).copy()
  observed = train & ~np.isnan(values)
  if not observed.any():
    raise DataError(
      f"demographic axis {name!r}: no observed value in the train folds to impute from"
    )
  overall = float(np.median(values[observed]))
  for s in np.unique(sex):
    rows = sex == s
    pool = values[observed & rows]
    fill = float(np.median(pool)) if pool.size else overall
    values[rows & np.isnan(values)] = fill
  return values


def demographics(
  age: np.ndarray, sex: np.ndarray, height: np.ndarray, weight: np.ndarray, train: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The five demographic axes, raw and z-normalised on the train folds.

  Returns (demo, mean, std): demo (N, 5) float64 in DEMO_AXES order after the
  age-300 rule and imputation, with BMI = weight / (height / 100)^2 computed
  after imputation; mean and std (5,) over the train rows (population std; an
  axis that is constant on the train folds gets std 1 so its z-score is 0).
  Missing ages (a few PTB-XL rows) are imputed like height and weight.
  """
  sex = np.asarray(sex)
  if np.isnan(sex.astype(np.float64)).any():
    bad = np.flatnonzero(np.isnan(sex.astype(np.float64)))[:5]
    raise DataError(f"sex is missing for rows {bad.tolist()}")
  train = np.asarray(train, dtype=bool)
  age = impute_by_sex(clean_age(age), sex, train, "age")
  height = impute_by_sex(height, sex, train, "height")
  weight = impute_by_sex(weight, sex, train, "weight")
  bmi = weight / (height / 100.0) ** 2
  demo = np.stack([age, sex.astype(np.float64), height, weight, bmi], axis=1)
  mean = demo[train].mean(axis=0)
  std = demo[train].std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return demo, mean, std


def zscore(demo: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  return ((demo - mean) / std).astype(np.float32)


def make_cond(labels: np.ndarray, demo_z: np.ndarray) -> np.ndarray:
  """The generator's conditioning vector: concat(labels, demo_z), float32."""
  return np.concatenate([labels.astype(np.float32), demo_z.astype(np.float32)], axis=1)


def prevalence(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """Per-code prevalence over the selected rows (e.g. the train folds)."""
  selected = np.asarray(labels)[np.asarray(rows, dtype=bool)]
  if selected.shape[0] == 0:
    raise DataError("cannot compute prevalence: no rows selected")
  return selected.mean(axis=0)


def bucket_of(p: np.ndarray) -> np.ndarray:
  """'common' for p >= 5 %, 'moderate' for 2-5 %, 'rare' below 2 %."""
  p = np.asarray(p)
  common, moderate, rare = BUCKETS
  return np.where(p >= COMMON_MIN, common, np.where(p >= RARE_MAX, moderate, rare))


def evaluable_codes(
  train_labels: np.ndarray, test_labels: np.ndarray, min_test_positives: int = 1
) -> np.ndarray:
  """(K,) bool: a positive in train, >= min_test_positives positives and a negative in test."""
  if min_test_positives < 1:
    raise ValueError(f"min_test_positives must be >= 1, got {min_test_positives}")
  train_labels = np.asarray(train_labels, dtype=bool)
  test_labels = np.asarray(test_labels, dtype=bool)
  pos_test = test_labels.sum(axis=0)
  neg_test = test_labels.shape[0] - pos_test
  return (train_labels.sum(axis=0) > 0) & (pos_test >= min_test_positives) & (neg_test > 0)


def anchor_class(labels: np.ndarray, train_prevalence: np.ndarray) -> np.ndarray:
  """Each row's present label of lowest train prevalence; -1 for no label (docs/design.md §4)."""
  labels = np.asarray(labels, dtype=bool)
  p = np.where(labels, np.asarray(train_prevalence)[None, :], np.inf)
  anchor = np.argmin(p, axis=1)
  return np.where(labels.any(axis=1), anchor, -1)
