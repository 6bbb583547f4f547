"""Distribution distances between a real and a synthetic cohort's feature vectors.

Inputs are (n, d) arrays, one row per record: typically a classifier's
penultimate-layer embeddings (judge embeddings), but any fixed-length features
work. Everything is computed in float64; distances go through
`pairwise.squared_distance_blocks` (bounded memory, no (n, m) matrix).

* `frechet_distance(a, b)`: the Frechet (FID-style) distance between the
  Gaussians fitted to the two samples,
  FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}),
  with mu the sample mean and S the sample covariance (denominator n - 1, as
  `numpy.cov`). The trace of the matrix square root is computed in its
  symmetric eigenvalue form, tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i) with
  lambda_i the eigenvalues of S_a^{1/2} S_b S_a^{1/2} (a symmetric PSD matrix
  with the same eigenvalues as S_a S_b); S_a^{1/2} comes from `eigh` with
  negative round-off eigenvalues clipped to 0, and so do the lambda_i. The
  result is clipped at 0. `frechet_distance_from_moments` takes the moments
  directly (population values, e.g. for a closed-form check).
* `mmd2(a, b, bandwidth=None)`: the unbiased estimate of the squared maximum
  mean discrepancy with the Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 /
  (2 sigma^2)):
  MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (n (n - 1))
  - 2 sum_{i, j} k(a_i, b_j) / (m n).
  Its expectation is 0 when both samples come from one distribution (so it
  can be slightly negative). Bandwidth: `bandwidth=None` uses the median
  heuristic, sigma = the median Euclidean distance over all pairs of rows
  i < j (indices) of the pooled sample [a; b] (numpy's median: the mean of the
  two middle values for an even count); when the pooled sample has more than
  `median_points` (2000) rows, over the pairs of a uniformly drawn subset of
  `median_points` rows (numpy `default_rng(seed).choice` without replacement).
  The bandwidth used is returned.
* `prdc(real, fake, k=5)`: precision, recall, density and coverage of Naeem
  et al. 2020 ("Reliable fidelity and diversity metrics for generative
  models"), exactly as the reference `prdc` package computes them. With
  r_k(x) the distance from a row to its k-th nearest neighbour in its own set
  (`pairwise.kth_neighbour_distances`) and B(x, r) the open ball:
  precision = share of fake rows inside at least one B(real_i, r_k(real_i));
  recall = share of real rows inside at least one B(fake_j, r_k(fake_j));
  density = (1 / (k M)) sum_j #{i : fake_j in B(real_i, r_k(real_i))} over the M fake rows;
  coverage = share of real rows i whose nearest fake row lies in B(real_i, r_k(real_i)).
* `detection_auroc(real, fake, seed=0, folds=5)`: how well a classifier tells
  synthetic (label 1) from real (label 0) rows on data it did not see:
  stratified K-fold (`StratifiedKFold(folds, shuffle=True, random_state=seed)`);
  per fold a pipeline of `StandardScaler` (fitted on the fold's training rows
  only) and `LogisticRegression(C=1.0, max_iter=1000)` (L2, lbfgs); every row is
  scored by the model of the fold that held it out (its decision function).
  `auroc` is the AUROC of the pooled out-of-fold scores; `fold_aurocs` the
  AUROC within each held-out fold. 0.5: indistinguishable (best); 1: separable.
"""

from __future__ import annotations

import warnings

import numpy as np

from ecgjax.fidelity.pairwise import (
  as_features,
  check_pair,
  kth_neighbour_distances,
  squared_distance_blocks,
)

__all__ = [
  "frechet_distance",
  "frechet_distance_from_moments",
  "median_heuristic",
  "mmd2",
  "prdc",
  "detection_auroc",
]

MEDIAN_POINTS = 2000


# --------------------------------------------------------------------------- #
# Frechet distance
# --------------------------------------------------------------------------- #
def _sym(m: np.ndarray) -> np.ndarray:
  return (m + m.T) / 2


def _moments(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  if len(x) < 2:
    raise ValueError(f"{name} needs at least 2 rows for a covariance, got {len(x)}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} has non-finite values")
  return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance_from_moments(mu_a, cov_a, mu_b, cov_b) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) for given means (d,) and
  covariances (d, d), in float64 (the module docstring states how the square root is taken)."""
  mu_a, mu_b = (
    np.atleast_1d(np.asarray(mu_a, np.float64)),
    np.atleast_1d(np.asarray(mu_b, np.float64)),
  )
  cov_a, cov_b = (
    np.atleast_2d(np.asarray(cov_a, np.float64)),
    np.atleast_2d(np.asarray(cov_b, np.float64)),
  )
  d = mu_a.shape[0]
  if mu_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
    raise ValueError(
      f"moments do not match: mu_a {mu_a.shape}, cov_a {cov_a.shape}, "
      f"mu_b {mu_b.shape}, cov_b {cov_b.shape}"
    )
  w, v = np.linalg.eigh(_sym(cov_a))
  root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  lam = np.linalg.eigvalsh(_sym(root_a @ _sym(cov_b) @ root_a))
  tr_root = np.sqrt(np.clip(lam, 0.0, None)).sum()
  diff = mu_a - mu_b
  fd = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_root
  return float(max(fd, 0.0))


def frechet_distance(a, b) -> float:
  """The Frechet distance between Gaussians fitted to rows of `a` (m, d) and `b` (n, d)."""
  a, b = check_pair(a, b)
  return frechet_distance_from_moments(*_moments(a, "a"), *_moments(b, "b"))


# --------------------------------------------------------------------------- #
# MMD
# --------------------------------------------------------------------------- #
def median_heuristic(x, *, max_points: int = MEDIAN_POINTS, seed: int = 0, chunk=None) -> float:
  """Median Euclidean distance over pairs i < j of rows of `x` (of a random subset of
  `max_points` rows when there are more)."""
  x = as_features(x, "x")
  if len(x) < 2:
    raise ValueError("the median heuristic needs at least 2 rows")
  if len(x) > max_points:
    x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
  parts = []
  for i0, j0, d2 in squared_distance_blocks(x, x, chunk=chunk, same=True):
    if j0 + len(d2[0]) <= i0:
      continue  # entirely below the diagonal
    rows = np.arange(i0, i0 + len(d2))[:, None]
    cols = np.arange(j0, j0 + d2.shape[1])[None, :]
    parts.append(d2[cols > rows])
  return float(np.sqrt(np.median(np.concatenate(parts))))


def _kernel_sum(a, b, gamma: float, chunk, same: bool) -> float:
  total = 0.0
  for _, _, d2 in squared_distance_blocks(a, b, chunk=chunk, same=same):
    total += np.exp(-gamma * d2).sum()
  return total


def mmd2(
  a,
  b,
  bandwidth: float | None = None,
  *,
  chunk: int | None = None,
  median_points: int = MEDIAN_POINTS,
  seed: int = 0,
) -> dict:
  """Unbiased MMD^2 with a Gaussian RBF kernel (module docstring). Returns
  {"mmd2", "bandwidth", "k_aa", "k_bb", "k_ab", "n_a", "n_b"} where the k_* are the three
  mean kernel values (off-diagonal means for k_aa and k_bb)."""
  a, b = check_pair(a, b)
  m, n = len(a), len(b)
  if m < 2 or n < 2:
    raise ValueError(f"mmd2 needs at least 2 rows on each side, got {m} and {n}")
  if bandwidth is None:
    pooled = np.concatenate([np.asarray(a), np.asarray(b)])
    bandwidth = median_heuristic(pooled, max_points=median_points, seed=seed, chunk=chunk)
  bandwidth = float(bandwidth)
  if not bandwidth > 0 or not np.isfinite(bandwidth):
    raise ValueError(f"mmd2: the bandwidth must be a positive number, got {bandwidth}")
  gamma = 1.0 / (2.0 * bandwidth**2)
  # Diagonal terms are exp(0) = 1 exactly (the blocks' diagonal is exactly 0).
  k_aa = (_kernel_sum(a, a, gamma, chunk, True) - m) / (m * (m - 1))
  k_bb = (_kernel_sum(b, b, gamma, chunk, True) - n) / (n * (n - 1))
  k_ab = _kernel_sum(a, b, gamma, chunk, False) / (m * n)
  return {
    "mmd2": float(k_aa + k_bb - 2.0 * k_ab),
    "bandwidth": bandwidth,
    "k_aa": float(k_aa),
    "k_bb": float(k_bb),
    "k_ab": float(k_ab),
    "n_a": m,
    "n_b": n,
  }


# --------------------------------------------------------------------------- #
# Precision, recall, density, coverage
# --------------------------------------------------------------------------- #
def prdc(real, fake, k: int = 5, *, chunk: int | None = None) -> dict:
  """Precision, recall, density and coverage (Naeem et al. 2020) with k nearest
  neighbours, as the `prdc` package's `compute_prdc(real, fake, nearest_k=k)`."""
  real, fake = check_pair(real, fake, ("real", "fake"))
  r_real = kth_neighbour_distances(real, k, chunk=chunk)
  r_fake = kth_neighbour_distances(fake, k, chunk=chunk)
  in_real_ball = np.zeros(len(fake), bool)  # precision
  real_balls_hit = np.zeros(len(fake))  # density
  in_fake_ball = np.zeros(len(real), bool)  # recall
  covered = np.zeros(len(real), bool)  # coverage
  for i0, j0, d2 in squared_distance_blocks(real, fake, chunk=chunk):
    d = np.sqrt(d2)
    ri, cj = slice(i0, i0 + d.shape[0]), slice(j0, j0 + d.shape[1])
    inside = d < r_real[ri, None]
    in_real_ball[cj] |= inside.any(0)
    real_balls_hit[cj] += inside.sum(0)
    in_fake_ball[ri] |= (d < r_fake[None, cj]).any(1)
    covered[ri] |= inside.any(1)
  return {
    "precision": float(in_real_ball.mean()),
    "recall": float(in_fake_ball.mean()),
    "density": float(real_balls_hit.sum() / (k * len(fake))),
    "coverage": float(covered.mean()),
    "k": int(k),
  }


# --------------------------------------------------------------------------- #
# Classifier two-sample test
# --------------------------------------------------------------------------- #
def detection_auroc(real, fake, seed: int = 0, folds: int = 5, *, C: float = 1.0) -> dict:
  """Held-out AUROC of a logistic regression telling fake (1) from real (0) rows (module
  docstring). Returns {"auroc", "fold_aurocs", "folds", "seed", "n_real", "n_fake",
  "converged", "scores" (out-of-fold decision values, real rows first), "labels"}."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  real, fake = check_pair(real, fake, ("real", "fake"))
  if min(len(real), len(fake)) < folds:
    raise ValueError(f"detection_auroc: {folds} folds need at least {folds} rows of each kind")
  x = np.concatenate([np.asarray(real, np.float64), np.asarray(fake, np.float64)])
  if not np.isfinite(x).all():
    raise ValueError("detection_auroc: non-finite feature values")
  y = np.concatenate([np.zeros(len(real), int), np.ones(len(fake), int)])
  scores = np.empty(len(x))
  fold_aurocs = []
  converged = True
  splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
  for train, test in splits:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", ConvergenceWarning)
      model.fit(x[train], y[train])
    converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    scores[test] = model.decision_function(x[test])
    fold_aurocs.append(float(roc_auc_score(y[test], scores[test])))
  return {
    "auroc": float(roc_auc_score(y, scores)),
    "fold_aurocs": fold_aurocs,
    "folds": int(folds),
    "seed": int(seed),
    "n_real": len(real),
    "n_fake": len(fake),
    "converged": bool(converged),
    "scores": scores,
    "labels": y,
  }
