"""Fidelity measures (ecgjax.fidelity.leads, .distances) against known answers."""

import numpy as np
import pytest
from scipy import linalg
from scipy.spatial.distance import cdist, pdist

from ecgjax.data.signals import limb_residuals
from ecgjax.fidelity import distances, leads


# --------------------------------------------------------------------------- #
# Limb-lead identities
# --------------------------------------------------------------------------- #
def _consistent(n=8, t=200, seed=0):
  """Random I, II and precordials; III, aVR, aVL, aVF derived from I and II (float64)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 12, t))
  i, ii = x[:, 0], x[:, 1]
  x[:, 2], x[:, 3], x[:, 4], x[:, 5] = ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2
  return x


def test_residuals_vanish_when_the_identities_hold():
  summary = leads.residual_summary(_consistent())
  assert set(summary) == set(leads.IDENTITIES)
  for s in summary.values():
    assert s["n"] == 8 and 0 <= s["median"] < 1e-14 and 0 <= s["mean"] < 1e-14


def test_residuals_grow_with_an_injected_violation_of_known_size():
  base = _consistent()
  medians = []
  for c in (0.0, 0.01, 0.1, 0.5, 1.0):
    x = base.copy()
    x[:, 2] += c  # III off by c everywhere: |I + III - II| = c at every sample
    summary = leads.residual_summary(x)
    expected = c / np.abs(x[:, :6]).mean(axis=(1, 2))  # the measure's scale: mean |limb lead|
    np.testing.assert_allclose(limb_residuals(x)["einthoven"], expected, rtol=1e-12, atol=1e-15)
    assert summary["einthoven"]["median"] == pytest.approx(np.median(expected), abs=1e-15)
    assert summary["einthoven"]["mean"] == pytest.approx(np.mean(expected), abs=1e-15)
    assert max(summary[k]["median"] for k in ("avr", "avl", "avf")) < 1e-14  # III is in none
    medians.append(summary["einthoven"]["median"])
  assert np.all(np.diff(medians) > 0), medians


def test_residual_table_has_one_row_per_identity_and_both_cohorts():
  real, synth = _consistent(seed=1), np.random.default_rng(2).normal(size=(5, 12, 100))
  table = leads.residual_table({"real": real, "synthetic": synth})
  assert list(table.index) == list(leads.IDENTITIES)
  assert list(table.columns) == ["real_median", "real_mean", "synthetic_median", "synthetic_mean"]
  assert (table["real_median"] < 1e-14).all() and (table["synthetic_median"] > 0.3).all()
  assert table.loc["avl", "synthetic_mean"] == pytest.approx(limb_residuals(synth)["avl"].mean())


# --------------------------------------------------------------------------- #
# Frechet distance
# --------------------------------------------------------------------------- #
def _spd(d, rng):
  m = rng.normal(size=(d, d))
  return m @ m.T / d + 0.1 * np.eye(d)


def test_frechet_from_moments_matches_closed_forms():
  rng = np.random.default_rng(0)
  mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
  shift = np.sum((mu_a - mu_b) ** 2)
  # Diagonal covariances: sum of (sigma_a - sigma_b)^2.
  sa, sb = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
  fd = distances.frechet_distance_from_moments(mu_a, np.diag(sa**2), mu_b, np.diag(sb**2))
  assert fd == pytest.approx(shift + np.sum((sa - sb) ** 2), rel=1e-12)
  # Commuting covariances (shared eigenvectors): sum of (sqrt(lambda_a) - sqrt(lambda_b))^2.
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  la, lb = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  ca, cb = q @ np.diag(la) @ q.T, q @ np.diag(lb) @ q.T
  fd = distances.frechet_distance_from_moments(mu_a, ca, mu_b, cb)
  assert fd == pytest.approx(shift + np.sum((np.sqrt(la) - np.sqrt(lb)) ** 2), rel=1e-10)
  # General covariances: the textbook formula with scipy's matrix square root.
  ca, cb = _spd(6, rng), _spd(6, rng)
  ref = np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
  assert distances.frechet_distance_from_moments(np.zeros(6), ca, np.zeros(6), cb) == pytest.approx(
    ref, rel=1e-8
  )
  # A rank-deficient covariance (eigenvalues 0) is fine.
  low = np.outer([1.0, 2, 0, 0, 0, 0], [1.0, 2, 0, 0, 0, 0])
  fd = distances.frechet_distance_from_moments(np.zeros(6), low, np.zeros(6), low)
  assert abs(fd) < 1e-9


def test_frechet_of_a_sample_with_itself_is_zero_and_a_mean_shift_adds_exactly():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
  b = rng.normal(size=(300, 6)) * 2.0 + 0.5
  assert distances.frechet_distance(a, a) < 1e-9
  base = distances.frechet_distance(a, b)
  gap = a.mean(0) - b.mean(0)
  values = []
  for delta in (0.0, 0.25, 0.5, 1.0, 2.0):
    shift = np.full(6, delta)
    fd = distances.frechet_distance(a, b + shift)  # covariances unchanged, mean moves by delta
    assert fd == pytest.approx(base - gap @ gap + (gap - shift) @ (gap - shift), rel=1e-9)
    values.append(fd)
  assert np.all(np.diff(values) > 0)


def test_frechet_of_gaussian_samples_near_the_population_value():
  # N(0, diag(s_a^2)) vs N(m, diag(s_b^2)): FD = ||m||^2 + sum (s_a - s_b)^2 = 1.0 + 0.37 = 1.37.
  # With 20,000 rows a side the estimate's spread is about 0.015 (seeds 0..19).
  rng = np.random.default_rng(2)
  sa, sb, m = (
    np.array([1.0, 1.0, 2.0, 0.5]),
    np.array([1.5, 0.8, 2.0, 0.3]),
    np.array([1.0, 0, 0, 0]),
  )
  a = rng.normal(size=(20000, 4)) * sa
  b = rng.normal(size=(20000, 4)) * sb + m
  truth = m @ m + np.sum((sa - sb) ** 2)
  assert distances.frechet_distance(a, b) == pytest.approx(truth, abs=0.06)


# --------------------------------------------------------------------------- #
# MMD
# --------------------------------------------------------------------------- #
def _dense_mmd2(a, b, sigma):
  k = lambda x, y: np.exp(-cdist(x, y, "sqeuclidean") / (2 * sigma**2))
  m, n = len(a), len(b)
  kaa, kbb = k(a, a), k(b, b)
  return (
    (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    - 2 * k(a, b).mean()
  )


def test_mmd2_equals_the_dense_formula_whatever_the_chunk():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(53, 4)), rng.normal(size=(41, 4)) + 0.3
  pooled = np.concatenate([a, b])
  out = distances.mmd2(a, b, chunk=7)
  assert out["bandwidth"] == pytest.approx(np.median(pdist(pooled)), rel=1e-12)
  assert out["mmd2"] == pytest.approx(_dense_mmd2(a, b, out["bandwidth"]), rel=1e-10)
  assert distances.mmd2(a, b)["mmd2"] == pytest.approx(out["mmd2"], rel=1e-10)
  fixed = distances.mmd2(a, b, bandwidth=0.7, chunk=10)
  assert fixed["bandwidth"] == 0.7 and fixed["mmd2"] == pytest.approx(
    _dense_mmd2(a, b, 0.7), rel=1e-10
  )
  # A pooled sample above median_points: the heuristic on a seeded subset of that size.
  sub = distances.mmd2(a, b, median_points=30, seed=5)["bandwidth"]
  idx = np.sort(np.random.default_rng(5).choice(len(pooled), 30, replace=False))
  assert sub == pytest.approx(np.median(pdist(pooled[idx])), rel=1e-12)


def test_mmd2_is_near_zero_for_one_distribution_and_matches_the_gaussian_closed_form():
  # X ~ N(0, I_d), Y ~ N(delta e_1, I_d), kernel bandwidth sigma:
  # MMD^2 = 2 c (1 - exp(-delta^2 / (2 (sigma^2 + 2)))), c = (sigma^2 / (sigma^2 + 2))^(d / 2).
  rng = np.random.default_rng(4)
  d, n, sigma = 3, 1000, 2.0
  c = (sigma**2 / (sigma**2 + 2)) ** (d / 2)
  values = []
  for delta in (0.0, 0.5, 1.0, 2.0):
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) + delta * np.eye(d)[0]
    got = distances.mmd2(a, b, bandwidth=sigma)["mmd2"]
    truth = 2 * c * (1 - np.exp(-(delta**2) / (2 * (sigma**2 + 2))))
    # The estimate's spread over seeds at n = 1000: 0.0006 under the null, 0.012 at delta = 2.
    assert got == pytest.approx(truth, abs=0.004 + 0.15 * truth), (delta, got, truth)
    values.append(got)
  assert abs(values[0]) < 0.005
  assert np.all(np.diff(values) > 0)
  # With the median heuristic too (null spread 0.001 at n = 400): ~0, and clearly more shifted.
  a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
  assert abs(distances.mmd2(a, b)["mmd2"]) < 0.005
  assert distances.mmd2(a, b + 1.0)["mmd2"] > 0.1


# --------------------------------------------------------------------------- #
# Precision, recall, density, coverage
# --------------------------------------------------------------------------- #
def test_prdc_matches_the_reference_package(capsys):
  prdc_pkg = pytest.importorskip("prdc", reason="the reference prdc package is not installed")
  rng = np.random.default_rng(5)
  real = rng.normal(size=(180, 8)).astype(np.float32)
  fake = (rng.normal(size=(150, 8)) * 1.2 + 0.4).astype(np.float32)
  for k in (1, 3, 5, 10):
    ref = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    got = distances.prdc(real, fake, k=k, chunk=32)
    for name in ("precision", "recall", "density", "coverage"):
      assert got[name] == pytest.approx(float(ref[name]), abs=1e-12), (k, name)
  capsys.readouterr()  # the package prints its sample sizes


def test_prdc_of_a_set_against_itself_and_against_a_far_set():
  x = np.random.default_rng(6).normal(size=(100, 4))
  same = distances.prdc(x, x, k=5)
  assert same["precision"] == same["recall"] == same["coverage"] == 1.0
  far = distances.prdc(x, x + 100.0, k=5)
  assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0


# --------------------------------------------------------------------------- #
# Detection AUROC
# --------------------------------------------------------------------------- #
def test_detection_auroc_near_half_for_one_distribution_and_one_for_separable_sets():
  rng = np.random.default_rng(7)
  real, fake = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
  # The AUROC of 600 pooled scores has a null spread of about 0.024.
  same = distances.detection_auroc(real, fake, seed=0)
  assert abs(same["auroc"] - 0.5) < 0.1, same["auroc"]
  assert len(same["fold_aurocs"]) == 5 and same["n_real"] == same["n_fake"] == 300
  apart = distances.detection_auroc(real, fake + 3.0, seed=0)
  assert apart["auroc"] > 0.99 and min(apart["fold_aurocs"]) > 0.97


def test_detection_scores_are_held_out():
  # 60 + 60 rows of pure noise in 400 dimensions: any fit separates its own training rows
  # perfectly, so an in-sample AUROC would be 1; scored out of fold it stays near 0.5.
  rng = np.random.default_rng(8)
  real, fake = rng.normal(size=(60, 400)), rng.normal(size=(60, 400))
  out = distances.detection_auroc(real, fake, seed=1, folds=4)
  assert abs(out["auroc"] - 0.5) < 0.2, out["auroc"]
  assert len(out["fold_aurocs"]) == 4 and len(out["scores"]) == 120
  # Same seed, same folds, same answer.
  assert distances.detection_auroc(real, fake, seed=1, folds=4)["auroc"] == out["auroc"]


def test_bad_inputs_are_errors():
  with pytest.raises(ValueError, match="same number of features"):
    distances.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="2-D"):
    distances.mmd2(np.zeros(5), np.zeros(5))
  with pytest.raises(ValueError, match="k must be"):
    distances.prdc(np.zeros((5, 2)), np.zeros((5, 2)), k=5)
  with pytest.raises(ValueError, match="bandwidth"):
    distances.mmd2(np.zeros((5, 2)), np.zeros((5, 2)))  # every distance 0
