"""The condition table rules of docs/design.md §2, on the real slice and hand-made tables."""

import os

import numpy as np
import pandas as pd
import pytest

from ecgjax.data import embedded_data_dir
from ecgjax.data import table as T


def test_label_order_follows_scp_statements(ptbxl):
  codes = list(
    pd.read_csv(os.path.join(embedded_data_dir(), "scp_statements.csv"), index_col=0).index
  )
  assert list(ptbxl.codes) == codes
  # Record 1 is {'NORM', 'LVOLT', 'SR'}: the columns set are exactly those codes' positions.
  assert sorted(np.flatnonzero(ptbxl.labels[0])) == sorted(
    codes.index(c) for c in ("NORM", "LVOLT", "SR")
  )


def test_demographic_z_scores_are_standard_on_train_folds(ptbxl):
  z = ptbxl.demo_z[ptbxl.train_mask].astype(np.float64)
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
  np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-6)
  # ... and not on the other folds, where they are just shifted and scaled the same way.
  np.testing.assert_allclose(
    ptbxl.demo_z, (ptbxl.demo - ptbxl.demo_mean) / ptbxl.demo_std, rtol=1e-5, atol=1e-5
  )


def test_bmi_is_computed_after_imputation(ptbxl):
  bmi = ptbxl.demo[:, 3] / (ptbxl.demo[:, 2] / 100) ** 2
  np.testing.assert_allclose(ptbxl.demo[:, 4], bmi)


def test_age_300_becomes_90_and_missing_values_use_train_median_of_that_sex():
  #                 train rows ...........................  val  test
  fold = np.array([1, 2, 3, 4, 5, 6, 8, 8, 9, 10])
  sex = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
  age = np.array([300, 40, 50, 60, 70, np.nan, 20, 30, 300, 80], dtype=float)
  height = np.array([180, 170, np.nan, 160, 150, np.nan, 190, np.nan, np.nan, np.nan])
  weight = np.array([80, np.nan, 90, 60, np.nan, 70, 100, 50, np.nan, 55])
  train = np.isin(fold, T.TRAIN_FOLDS)
  demo, mean, std = T.demographics(age, sex, height, weight, train)
  assert demo[0, 0] == 90 and demo[8, 0] == 90  # the >89 marker, in any fold
  assert demo[5, 0] == np.median([60, 70, 30])  # missing age: train females
  # Height: males observed in train 180, 170, 190 -> 180; females 160, 150 -> 155.
  assert demo[2, 2] == 180 and demo[8, 2] == 180
  assert demo[5, 2] == 155 and demo[7, 2] == 155 and demo[9, 2] == 155
  # Weight: males 80, 90, 100 -> 90; females 60, 70, 50 -> 60 (the test row's 55 is not used).
  assert demo[1, 2 + 1] == 90 and demo[8, 3] == 90 and demo[4, 3] == 60
  np.testing.assert_allclose(demo[:, 4], demo[:, 3] / (demo[:, 2] / 100) ** 2)
  np.testing.assert_allclose(mean, demo[train].mean(0))
  np.testing.assert_allclose(std, demo[train].std(0))
  z = T.zscore(demo, mean, std)
  np.testing.assert_allclose(z[train].mean(0), 0, atol=1e-6)


def test_imputation_with_nothing_observed_is_an_error():
  with pytest.raises(T.DataError, match="height"):
    T.demographics(
      np.array([50.0, 60.0]),
      np.array([0, 1]),
      np.array([np.nan, np.nan]),
      np.array([70.0, 80.0]),
      np.array([True, True]),
    )


def test_buckets_and_evaluable_codes_on_a_hand_made_table():
  n_train = 100
  train = np.zeros((n_train, 6), dtype=bool)
  train[:10, 0] = True  # 10 %  -> common
  train[:5, 1] = True  # exactly 5 % -> common
  train[:3, 2] = True  # 3 % -> moderate
  train[:2, 3] = True  # exactly 2 % -> moderate
  train[:1, 4] = True  # 1 % -> rare
  # code 5: no train positive -> rare, never evaluable
  p = T.prevalence(train, np.ones(n_train, bool))
  np.testing.assert_allclose(p, [0.10, 0.05, 0.03, 0.02, 0.01, 0.0])
  assert T.bucket_of(p).tolist() == ["common", "common", "moderate", "moderate", "rare", "rare"]
  test = np.zeros((20, 6), dtype=bool)
  test[:3, 0] = True  # 3 positives
  test[:1, 1] = True  # 1 positive
  test[:, 2] = True  # no negative -> not evaluable
  test[:2, 4] = True  # 2 positives
  test[:5, 5] = True  # positives in test, none in train -> not evaluable
  # code 3: no test positive -> not evaluable
  assert T.evaluable_codes(train, test, 1).tolist() == [True, True, False, False, True, False]
  assert T.evaluable_codes(train, test, 2).tolist() == [True, False, False, False, True, False]
  assert T.evaluable_codes(train, test, 3).tolist() == [True, False, False, False, False, False]


def test_anchor_class_is_the_rarest_present_label():
  p = np.array([0.5, 0.1, 0.01, 0.2])
  labels = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=bool)
  assert T.anchor_class(labels, p).tolist() == [1, 2, -1, 3]


def test_real_slice_buckets_and_evaluable_counts(ptbxl):
  p = ptbxl.train_prevalence
  counts = {b: int((ptbxl.buckets == b).sum()) for b in T.BUCKETS}
  assert counts == {
    "common": int((p >= 0.05).sum()),
    "moderate": int(((p >= 0.02) & (p < 0.05)).sum()),
    "rare": int((p < 0.02).sum()),
  }
  tr, te = ptbxl.labels[ptbxl.train_mask], ptbxl.labels[ptbxl.test_mask]
  expected = (tr.sum(0) > 0) & (te.sum(0) >= 1) & (te.sum(0) < te.shape[0])
  np.testing.assert_array_equal(ptbxl.evaluable(), expected)
  assert 0 < ptbxl.evaluable().sum() < 71
