"""Privacy measures (ecgjax.fidelity.privacy) and the distance blocks under them."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from ecgjax.data.signals import lead_stats
from ecgjax.fidelity import pairwise, privacy


def test_distance_blocks_cover_every_pair_once_and_match_cdist():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(23, 5)) + 100.0, rng.normal(size=(17, 5)) + 100.0  # far from 0
  full = np.full((23, 17), np.nan)
  for i0, j0, d2 in pairwise.squared_distance_blocks(a, b, chunk=6):
    assert np.isnan(full[i0 : i0 + d2.shape[0], j0 : j0 + d2.shape[1]]).all()
    full[i0 : i0 + d2.shape[0], j0 : j0 + d2.shape[1]] = d2
  np.testing.assert_allclose(full, cdist(a, b, "sqeuclidean"), rtol=1e-9, atol=1e-9)
  for i0, j0, d2 in pairwise.squared_distance_blocks(a, a, chunk=5, same=True):
    if i0 == j0:
      assert np.all(np.diag(d2) == 0.0)
  assert pairwise.default_chunk(128) == 2048 and pairwise.default_chunk(12000) == 349


def test_nn_distances_match_brute_force():
  rng = np.random.default_rng(1)
  q, ref = rng.normal(size=(31, 6)), rng.normal(size=(44, 6))
  d, idx = privacy.nn_distances(q, ref, chunk=8)
  full = cdist(q, ref)
  np.testing.assert_array_equal(idx, full.argmin(1))
  np.testing.assert_allclose(d, full.min(1), rtol=1e-10)
  # Queries that are the reference: without exclusion every row finds itself at 0 ...
  d_self, idx_self = privacy.nn_distances(ref, ref, chunk=8)
  assert np.all(d_self < 1e-6) and np.array_equal(idx_self, np.arange(44))
  # ... with it, its nearest other row; a duplicate elsewhere still counts, at 0.
  d_ex, idx_ex = privacy.nn_distances(ref, ref, exclude_self=True, chunk=8)
  other = cdist(ref, ref)
  np.fill_diagonal(other, np.inf)
  np.testing.assert_array_equal(idx_ex, other.argmin(1))
  np.testing.assert_allclose(d_ex, other.min(1), rtol=1e-10)
  dup = np.concatenate([ref, ref[:1]])
  d_dup, idx_dup = privacy.nn_distances(dup, dup, exclude_self=True)
  assert d_dup[0] < 1e-6 and idx_dup[0] == 44 and idx_dup[44] == 0


def test_count_within_matches_brute_force():
  rng = np.random.default_rng(2)
  q, ref = rng.normal(size=(20, 3)), rng.normal(size=(50, 3))
  np.testing.assert_array_equal(
    privacy.count_within(q, ref, 1.2, chunk=7), (cdist(q, ref) <= 1.2).sum(1)
  )


def _population(n, d, rng):
  """Correlated Gaussian rows: the 'records' of a toy population."""
  return rng.normal(size=(n, d)) @ np.linalg.cholesky(0.5 * np.eye(d) + 0.5)


def test_memorisation_flags_copies_and_not_an_independent_cohort():
  rng = np.random.default_rng(3)
  d = 10
  train, holdout = _population(400, d, rng), _population(300, d, rng)
  independent = _population(300, d, rng)
  clean = privacy.memorisation(independent, train, holdout, quantile=0.05)
  # Independent draws are as far from the training rows as the holdout is: about 5 % below
  # the holdout's 5 % quantile (over seeds: mean 5.5 %, spread 2 points; ratio spread 0.03).
  assert 0.0 <= clean["fraction_closer"] <= 0.12, clean["fraction_closer"]
  assert 0.85 < clean["median_ratio"] < 1.15, clean["median_ratio"]
  assert clean["synth_to_train"].shape == (300,) and clean["holdout_to_train"].shape == (300,)
  assert clean["threshold"] == pytest.approx(np.quantile(clean["holdout_to_train"], 0.05))
  # Copies of training rows plus noise small against the typical neighbour distance.
  picked = rng.choice(400, 300, replace=False)
  copies = train[picked] + 0.02 * rng.normal(size=(300, d))
  leaked = privacy.memorisation(copies, train, holdout, quantile=0.05)
  assert leaked["fraction_closer"] == 1.0 and leaked["median_ratio"] < 0.1
  np.testing.assert_array_equal(leaked["nearest_train"], picked)
  # Half copies, half independent: half flagged, give or take the independent half's 5 %.
  mixed = np.concatenate([copies[:150], independent[:150]])
  half = privacy.memorisation(mixed, train, holdout, quantile=0.05)["fraction_closer"]
  assert 0.5 <= half <= 0.6, half


def test_membership_inference_auroc_half_without_a_leak_and_high_with_one():
  rng = np.random.default_rng(4)
  d = 10
  members, nonmembers = _population(250, d, rng), _population(250, d, rng)
  # A "generator" that never saw the members: synthetic rows drawn independently.
  fresh = _population(400, d, rng)
  out = privacy.membership_inference(members, nonmembers, fresh)
  # Over seeds, both attacks' AUROC here: mean 0.51, spread 0.035.
  assert abs(out["auroc"] - 0.5) < 0.1, out["auroc"]
  assert abs(out["auroc_density"] - 0.5) < 0.1, out["auroc_density"]
  # One that emits noisy copies of its training records (noise ~ half a neighbour distance).
  leaky = members + 0.3 * rng.normal(size=members.shape)
  out = privacy.membership_inference(members, nonmembers, leaky)
  assert out["auroc"] > 0.95 and out["auroc_density"] > 0.85, out  # over seeds: 0.98, 0.93
  assert out["radius"] == pytest.approx(
    np.median(np.concatenate([out["member_distance"], out["nonmember_distance"]]))
  )
  assert out["member_count"].shape == (250,) and out["n_synth"] == 250


def test_signal_features_use_the_train_lead_statistics():
  rng = np.random.default_rng(5)
  train = (rng.normal(size=(20, 12, 50)) * np.arange(1, 13)[:, None] + 3.0).astype(np.float32)
  other = rng.normal(size=(7, 12, 50)).astype(np.float32)
  f_train, f_other = privacy.signal_space(train, other)
  assert f_train.shape == (20, 600) and f_other.shape == (7, 600) and f_train.dtype == np.float32
  per_lead = f_train.reshape(20, 12, 50)
  np.testing.assert_allclose(per_lead.mean(axis=(0, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(per_lead.std(axis=(0, 2)), 1.0, atol=1e-4)
  mean, std = lead_stats(train)
  expected = ((other - mean[:, None]) / std[:, None]).reshape(7, -1)
  np.testing.assert_allclose(f_other, expected, rtol=1e-6)
  np.testing.assert_allclose(
    privacy.signal_features(other, mean, std, chunk=3), expected, rtol=1e-6
  )


def test_bad_inputs_are_errors():
  x = np.zeros((4, 3))
  with pytest.raises(ValueError, match="quantile"):
    privacy.memorisation(x, x, x, quantile=1.5)
  with pytest.raises(ValueError, match="exclude_self"):
    privacy.nn_distances(x, np.zeros((5, 3)), exclude_self=True)
  with pytest.raises(ValueError, match="same number of features"):
    privacy.membership_inference(x, x, np.zeros((4, 2)))
  with pytest.raises(ValueError, match="non-finite"):
    privacy.nn_distances(np.full((2, 3), np.nan), x)
