"""Tests for ecgjax.metrics against scikit-learn as the independent reference."""

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from ecgjax import metrics as M
from ecgjax.data import table as T


def _random_problem(n=300, k=12, seed=0, signal=1.0, round_to=None):
  rng = np.random.default_rng(seed)
  prev = rng.uniform(0.03, 0.5, size=k)
  y = rng.random((n, k)) < prev
  s = signal * y + rng.normal(size=(n, k))
  s = 1.0 / (1.0 + np.exp(-s))
  if round_to is not None:
    s = np.round(s, round_to)
  return y, s


# --------------------------------------------------------------------------- AUROC
@pytest.mark.parametrize("round_to", [None, 1, 2])
def test_auroc_matches_sklearn(round_to):
  y, s = _random_problem(n=400, k=15, seed=1, round_to=round_to)
  if round_to == 1:  # many ties
    assert len(np.unique(s)) <= 11
  got = M.auroc_per_code(y, s)
  ref = np.array([roc_auc_score(y[:, j], s[:, j]) for j in range(y.shape[1])])
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_auroc_integer_scores_heavy_ties():
  rng = np.random.default_rng(5)
  y = rng.random((200, 6)) < 0.3
  s = rng.integers(0, 3, size=(200, 6)) + y  # only 4 distinct values
  got = M.auroc_per_code(y, s)
  ref = np.array([roc_auc_score(y[:, j], s[:, j]) for j in range(6)])
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_auroc_hand_cases():
  y = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
  perfect = np.where(y, 0.9, 0.1) + np.arange(6) * 1e-3
  inverted = -perfect
  ties = np.full(6, 0.3)
  # one positive tied with one negative, rest separated: (2*3 + 0.5 + 2) / 9
  partial = np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.8])
  s = np.stack([perfect, inverted, ties, partial], axis=1)
  yy = np.repeat(y[:, None], 4, axis=1)
  got = M.auroc_per_code(yy, s)
  assert got[0] == 1.0 and got[1] == 0.0 and got[2] == 0.5
  assert got[3] == pytest.approx((3 + 3 + 2.5) / 9, abs=1e-15)
  assert got[3] == pytest.approx(roc_auc_score(y, partial), abs=1e-15)


def test_auroc_nan_where_undefined():
  y = np.zeros((10, 3), dtype=bool)
  y[:5, 0] = True
  y[:, 2] = True
  s = np.random.default_rng(0).random((10, 3))
  got = M.auroc_per_code(y, s)
  assert np.isfinite(got[0]) and np.isnan(got[1]) and np.isnan(got[2])


# --------------------------------------------------------------------------- validation
def test_errors_name_arguments():
  y, s = _random_problem(n=50, k=4)
  with pytest.raises(ValueError, match=r"y_true and y_score.*\(50, 4\).*\(50, 3\)"):
    M.auroc_per_code(y, s[:, :3])
  s_nan = s.copy()
  s_nan[3, 2] = np.nan
  with pytest.raises(ValueError, match=r"y_score.*NaN.*row 3, column 2"):
    M.auroc_per_code(y, s_nan)
  y_bad = y.astype(int)
  y_bad[0, 0] = 2
  with pytest.raises(ValueError, match=r"y_true must be binary"):
    M.auroc_per_code(y_bad, s)
  with pytest.raises(ValueError, match=r"y_true.*2-D"):
    M.auroc_per_code(y[:, 0], s[:, 0])
  with pytest.raises(ValueError, match=r"y_true_val and y_prob_val"):
    M.choose_thresholds(y, s[:-1])
  with pytest.raises(ValueError, match=r"thresholds must have shape \(4,\)"):
    M.f1_per_code(y, s, np.zeros(3))
  with pytest.raises(ValueError, match=r"metric"):
    M.choose_thresholds(y, s, metric="acc")
  with pytest.raises(ValueError, match=r"train_labels and test_labels"):
    M.evaluable_codes(y, y[:, :3])
  # 0/1 floats are fine
  np.testing.assert_array_equal(M.auroc_per_code(y.astype(np.float32), s), M.auroc_per_code(y, s))


# --------------------------------------------------------------------------- buckets
def test_buckets_and_evaluable_hand_table():
  n = 100
  train = np.zeros((n, 7), dtype=bool)
  train[:10, 0] = True  # 10 % common
  train[:3, 1] = True  # 3 % moderate
  train[:1, 2] = True  # 1 % rare
  # code 3: 0 positives -> rare, not evaluable
  train[:5, 4] = True  # exactly 5 % -> common
  train[:2, 5] = True  # exactly 2 % -> moderate
  train[:4, 6] = True  # 4 % -> moderate
  b = M.prevalence_buckets(train)
  np.testing.assert_allclose(b["prevalence"], [0.10, 0.03, 0.01, 0.0, 0.05, 0.02, 0.04])
  assert list(b["bucket"]) == [
    "common",
    "moderate",
    "rare",
    "rare",
    "common",
    "moderate",
    "moderate",
  ]
  np.testing.assert_array_equal(b["masks"]["common"], [1, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(b["masks"]["moderate"], [0, 1, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(b["masks"]["rare"], [0, 0, 1, 1, 0, 0, 0])

  test = np.zeros((20, 7), dtype=bool)
  test[:2, 0] = True  # 2 positives
  test[:1, 1] = True  # 1 positive
  test[:, 2] = True  # all positive: no negatives -> not evaluable
  test[:3, 3] = True  # positives in test but none in train -> not evaluable
  # code 4: no test positives -> not evaluable
  test[:5, 5] = True
  test[:1, 6] = True
  np.testing.assert_array_equal(M.evaluable_codes(train, test), [1, 1, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(
    M.evaluable_codes(train, test, min_test_positives=2), [1, 0, 0, 0, 0, 1, 0]
  )
  reasons = M.exclusion_reasons(train, test)
  assert reasons[0] is None and reasons[1] is None
  assert reasons[2] == "no negatives in test"
  assert reasons[3] == "no positives in train"
  assert reasons[4] == "no positives in test"


def test_bucket_boundaries_at_odd_sizes():
  # 20/400 = 5 % and 8/400 = 2 % exactly; 19/400 and 7/400 just below
  train = np.zeros((400, 4), dtype=bool)
  for j, c in enumerate([20, 19, 8, 7]):
    train[:c, j] = True
  assert list(M.prevalence_buckets(train)["bucket"]) == ["common", "moderate", "moderate", "rare"]
  # 7/350 = 2 % exactly (float 7/350 might not round-trip)
  train = np.zeros((350, 2), dtype=bool)
  train[:7, 0] = True
  train[:6, 1] = True
  assert list(M.prevalence_buckets(train)["bucket"]) == ["moderate", "rare"]


# --------------------------------------------------------------------------- F1 / G-mean
def test_f1_at_thresholds_matches_sklearn():
  y, s = _random_problem(n=300, k=10, seed=3, round_to=2)
  y[:, 9] = False  # a column with no positives
  thr = np.random.default_rng(0).uniform(0.3, 0.7, size=10)
  thr[4] = s[17, 4]  # threshold exactly on a score: >= predicts positive
  got = M.f1_per_code(y, s, thr)
  ref = np.array([f1_score(y[:, j], s[:, j] >= thr[j], zero_division=0.0) for j in range(10)])
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_gmean_matches_confusion_matrix():
  y, s = _random_problem(n=300, k=8, seed=4)
  thr = np.linspace(0.35, 0.65, 8)
  got = M.gmean_per_code(y, s, thr)
  for j in range(8):
    tn, fp, fn, tp = confusion_matrix(y[:, j], s[:, j] >= thr[j], labels=[False, True]).ravel()
    assert got[j] == pytest.approx(np.sqrt(tp / (tp + fn) * tn / (tn + fp)), abs=1e-12)


def _brute_force_best(y, s, metric):
  best, best_t = -1.0, None
  for t in np.unique(s):
    pred = s >= t
    if metric == "f1":
      v = f1_score(y, pred, zero_division=0.0)
    else:
      tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()
      v = np.sqrt(tp / (tp + fn) * tn / (tn + fp))
    if v > best + 1e-12:
      best, best_t = v, t
  return best, best_t


@pytest.mark.parametrize("metric", ["f1", "gmean"])
@pytest.mark.parametrize("round_to", [None, 1])
def test_chosen_threshold_is_optimal(metric, round_to):
  y, s = _random_problem(n=150, k=6, seed=7, signal=1.5, round_to=round_to)
  y[:, 5] = False  # no positives in val -> default 0.5
  thr = M.choose_thresholds(y, s, metric=metric)
  assert thr[5] == 0.5
  score_fn = M.f1_per_code if metric == "f1" else M.gmean_per_code
  achieved = score_fn(y, s, thr)
  for j in range(5):
    assert thr[j] in set(np.unique(s[:, j]))  # candidates are the unique scores
    best, _ = _brute_force_best(y[:, j], s[:, j], metric)
    assert achieved[j] == pytest.approx(best, abs=1e-12)
    # no candidate is strictly better
    for t in np.unique(s[:, j]):
      v = score_fn(y[:, j : j + 1], s[:, j : j + 1], np.array([t]))[0]
      assert v <= achieved[j] + 1e-12


def test_gmean_threshold_default_without_negatives():
  y = np.ones((10, 1), dtype=bool)
  s = np.linspace(0, 1, 10)[:, None]
  assert M.choose_thresholds(y, s, "gmean")[0] == 0.5
  assert M.choose_thresholds(y, s, "f1")[0] == 0.0  # predict all positive


# --------------------------------------------------------------------------- summary
def test_summarize_excludes_and_hand_mean():
  rng = np.random.default_rng(11)
  k = 6
  codes = [f"C{j}" for j in range(k)]
  train = rng.random((500, k)) < np.array([0.3, 0.1, 0.03, 0.01, 0.2, 0.0])
  y_test, s_test = _random_problem(n=200, k=k, seed=12)
  y_test[:, 1] = False  # no positives in test
  y_test[:3, 5] = True  # positives in test, none in train
  y_val, s_val = _random_problem(n=150, k=k, seed=13)
  out = M.summarize(y_test, s_test, y_val, s_val, train, codes, n_boot=50)
  json.dumps(out)  # JSON-serialisable
  ev = [0, 2, 3, 4]
  assert out["n_evaluable"] == 4
  assert sorted(out["per_code"]) == [codes[j] for j in ev]
  excluded = {e["code"]: e["reason"] for e in out["excluded_codes"]}
  assert excluded == {"C1": "no positives in test", "C5": "no positives in train"}
  ref = [roc_auc_score(y_test[:, j], s_test[:, j]) for j in ev]
  assert out["macro_auroc"] == pytest.approx(np.mean(ref), abs=1e-12)
  for j, r in zip(ev, ref):
    assert out["per_code"][codes[j]] == pytest.approx(r, abs=1e-12)
  # buckets from train prevalence, restricted to evaluable codes
  b = M.prevalence_buckets(train)["bucket"]
  for name in T.BUCKETS:
    sel = [r for j, r in zip(ev, ref) if b[j] == name]
    assert out["bucket_counts"][name] == len(sel)
    if sel:
      assert out["buckets"][name] == pytest.approx(np.mean(sel), abs=1e-12)
    else:
      assert out["buckets"][name] is None
  # F1 / G-mean: thresholds from val, scored on test, mean over evaluable codes
  t_f1 = M.choose_thresholds(y_val, s_val, "f1")
  t_gm = M.choose_thresholds(y_val, s_val, "gmean")
  f1_ref = [f1_score(y_test[:, j], s_test[:, j] >= t_f1[j]) for j in ev]
  assert out["macro_f1"] == pytest.approx(np.mean(f1_ref), abs=1e-12)
  assert out["weighted_f1"] == pytest.approx(
    f1_score(y_test[:, ev], s_test[:, ev] >= t_f1[ev], average="weighted"), abs=1e-12
  )
  gm_ref = []
  for j in ev:
    tn, fp, fn, tp = confusion_matrix(y_test[:, j], s_test[:, j] >= t_gm[j]).ravel()
    gm_ref.append(np.sqrt(tp / (tp + fn) * tn / (tn + fp)))
  assert out["macro_gmean"] == pytest.approx(np.mean(gm_ref), abs=1e-12)
  lo, hi = out["macro_auroc_ci90"]
  assert lo < out["macro_auroc"] < hi


def test_summarize_empty_bucket_is_none_and_no_bootstrap():
  y, s = _random_problem(n=200, k=3, seed=2)
  train = np.zeros((100, 3), dtype=bool)
  train[:50] = True  # all common
  out = M.summarize(y, s, y, s, train, ["a", "b", "c"], n_boot=0)
  assert out["buckets"]["moderate"] is None and out["buckets"]["rare"] is None
  assert out["bucket_counts"] == {"common": 3, "moderate": 0, "rare": 0}
  assert out["macro_auroc_ci90"] is None
  with pytest.raises(ValueError, match="codes has 2 entries"):
    M.summarize(y, s, y, s, train, ["a", "b"], n_boot=0)


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_weighted_auroc_equals_sklearn_on_resamples():
  y, s = _random_problem(n=120, k=5, seed=21, round_to=1)
  mask = np.ones(5, dtype=bool)
  idx = M.bootstrap_indices(y, mask, n_boot=20, seed=3)
  samples = M.bootstrap_macro_auroc_samples(y, s, mask, n_boot=20, seed=3)
  for b in range(20):
    ref = np.mean([roc_auc_score(y[idx[b], j], s[idx[b], j]) for j in range(5)])
    assert samples[b] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_interval_properties():
  y, s = _random_problem(n=400, k=10, seed=8, signal=1.5)
  mask = M.evaluable_codes(y, y)
  lo, hi, point = M.bootstrap_macro_auroc(y, s, mask, n_boot=300, seed=0)
  assert 0.6 < point < 1.0
  assert lo < point < hi
  assert hi - lo < 0.1
  assert point == pytest.approx(np.nanmean(M.auroc_per_code(y, s)[mask]), abs=1e-12)
  assert M.bootstrap_macro_auroc(y, s, mask, n_boot=300, seed=0) == (lo, hi, point)
  assert M.bootstrap_macro_auroc(y, s, mask, n_boot=300, seed=1) != (lo, hi, point)
  # 90 % interval is the 5th-95th percentile of the resampled macros
  samples = M.bootstrap_macro_auroc_samples(y, s, mask, n_boot=300, seed=0)
  np.testing.assert_allclose([lo, hi], np.quantile(samples, [0.05, 0.95]), atol=0)


def test_bootstrap_redraws_resamples_without_positives():
  rng = np.random.default_rng(0)
  n = 200
  y = np.zeros((n, 3), dtype=bool)
  y[rng.choice(n, 2, replace=False), 0] = True  # P(no positive in a resample) ~ 13 %
  y[rng.choice(n, 1, replace=False), 1] = True  # P(no positive) ~ 37 %
  y[:, 2] = rng.random(n) < 0.5
  s = y + rng.normal(size=y.shape)
  mask = np.ones(3, dtype=bool)
  idx = M.bootstrap_indices(y, mask, n_boot=400, seed=0)
  assert idx.shape == (400, n)
  pos = y[idx].sum(axis=1)  # (B, K)
  assert (pos > 0).all() and (pos < n).all()
  # an unconstrained draw would have lacked positives many times
  raw = np.random.default_rng(0).integers(0, n, size=(400, n))
  assert (y[raw, 1].sum(axis=1) == 0).sum() > 50
  samples = M.bootstrap_macro_auroc_samples(y, s, mask, n_boot=400, seed=0)
  assert np.isfinite(samples).all()
  # codes outside the mask are not constrained
  idx2 = M.bootstrap_indices(y, np.array([False, False, True]), n_boot=400, seed=0)
  assert (y[idx2, 1].sum(axis=1) == 0).any()
  with pytest.raises(ValueError, match="no positive or no negative"):
    M.bootstrap_indices(np.zeros((10, 1), bool), np.ones(1, bool), n_boot=2)
