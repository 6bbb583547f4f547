"""Privacy measures of a synthetic cohort: nearest-neighbour memorisation and a
distance-based membership-inference attack.

Inputs are (n, d) feature arrays: judge embeddings, or signals in signal space
(`signal_features`: each lead z-scored with the *training* set's per-lead mean
and std, `ecgjax.data.signals.lead_stats` / `standardise`, then flattened to
12 * T values, float32). Distances are Euclidean, computed in float64 blocks
(`pairwise.squared_distance_blocks`), so memory stays flat whatever n.

* `nn_distances(queries, reference, exclude_self=False)`: per query row, the
  distance to its nearest reference row and that row's index (the first
  index among exact ties). `exclude_self=True` is for queries that *are* the
  reference (same rows, same order): row i is not compared with itself (by
  index; a duplicate elsewhere in the reference still counts, at distance 0).
* `memorisation(synth, train, holdout, quantile=0.05)`: d_s = each synthetic
  row's distance to its nearest training row, d_h = each holdout row's
  distance to its nearest training row (the holdout: real records the
  generator never saw, from the training records' distribution). With
  tau = the `quantile` of d_h (`numpy.quantile`, linear interpolation):
  `fraction_closer` = mean(d_s < tau): about `quantile` when synthetic rows are
  no closer to the training records than new real records are; near 1 when
  they are copies. `median_ratio` = median(d_s) / median(d_h): about 1 without
  memorisation, near 0 for copies. The distributions are returned for plots.
* `membership_inference(members, nonmembers, synth)`: an attacker who holds
  candidate records and the synthetic cohort guesses which candidates trained
  the generator. Distance attack: score(x) = -min_j ||x - synth_j||; density
  attack: score(x) = #{j : ||x - synth_j|| <= r}, with r the median of the
  candidates' (members and non-members pooled) nearest-synthetic distances.
  Each attack's AUROC of members (positive) against non-members
  (`sklearn.metrics.roc_auc_score`, ties counted half): 0.5 means no leak.
"""

from __future__ import annotations

import numpy as np

from ecgjax.data.signals import lead_stats, standardise
from ecgjax.fidelity.pairwise import as_features, check_pair, squared_distance_blocks

__all__ = [
  "signal_features",
  "signal_space",
  "nn_distances",
  "count_within",
  "memorisation",
  "membership_inference",
]


# --------------------------------------------------------------------------- #
# Signal space
# --------------------------------------------------------------------------- #
def signal_features(signals, mean, std, *, chunk: int = 1024) -> np.ndarray:
  """(N, 12, T) signals -> (N, 12 * T) float32: `standardise(x, mean, std)` per lead
  (mean, std (12,) from `lead_stats` of the training set), flattened lead-major."""
  x = np.asarray(signals)
  if x.ndim != 3:
    raise ValueError(f"signals must be (N, 12, T), got shape {x.shape}")
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  out = np.empty((len(x), x.shape[1] * x.shape[2]), np.float32)
  for s in range(0, len(x), chunk):
    block = np.asarray(x[s : s + chunk], np.float32)
    out[s : s + chunk] = standardise(block, mean, std).reshape(len(block), -1)
  return out


def signal_space(train, *others) -> tuple[np.ndarray, ...]:
  """`signal_features` of `train` and of each further cohort, all with the lead statistics
  of `train` (`lead_stats(train)`)."""
  mean, std = lead_stats(train)
  return tuple(signal_features(x, mean, std) for x in (train, *others))


# --------------------------------------------------------------------------- #
# Nearest neighbours
# --------------------------------------------------------------------------- #
def nn_distances(
  queries, reference, *, exclude_self: bool = False, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Per query row, (distance to the nearest reference row (float64), its index (int64))."""
  queries, reference = check_pair(queries, reference, ("queries", "reference"))
  if exclude_self and (len(queries) != len(reference) or len(reference) < 2):
    raise ValueError(
      "exclude_self=True needs queries that are the reference (equal length, >= 2 rows), "
      f"got {len(queries)} and {len(reference)}"
    )
  best = np.full(len(queries), np.inf)
  index = np.zeros(len(queries), np.int64)
  for i0, j0, d2 in squared_distance_blocks(queries, reference, chunk=chunk, same=exclude_self):
    if exclude_self and i0 == j0:
      np.fill_diagonal(d2, np.inf)
    j = d2.argmin(axis=1)
    v = d2[np.arange(len(d2)), j]
    rows = slice(i0, i0 + len(d2))
    better = v < best[rows]
    best[rows] = np.where(better, v, best[rows])
    index[rows] = np.where(better, j0 + j, index[rows])
  return np.sqrt(best), index


def count_within(queries, reference, radius: float, *, chunk: int | None = None) -> np.ndarray:
  """Per query row, the number of reference rows at distance <= `radius` (int64)."""
  queries, reference = check_pair(queries, reference, ("queries", "reference"))
  r2 = float(radius) ** 2
  counts = np.zeros(len(queries), np.int64)
  for i0, _, d2 in squared_distance_blocks(queries, reference, chunk=chunk):
    counts[i0 : i0 + len(d2)] += (d2 <= r2).sum(axis=1)
  return counts


# --------------------------------------------------------------------------- #
# Memorisation
# --------------------------------------------------------------------------- #
def memorisation(
  synth, train, holdout, quantile: float = 0.05, *, chunk: int | None = None
) -> dict:
  """Synthetic-to-train against holdout-to-train nearest-neighbour distances (module
  docstring). Returns {"fraction_closer", "quantile", "threshold", "median_ratio",
  "median_synth", "median_holdout", "synth_to_train" (n_synth,), "holdout_to_train"
  (n_holdout,), "nearest_train" (n_synth,) indices, "n_synth", "n_train", "n_holdout"}."""
  if not 0.0 < quantile < 1.0:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}")
  synth, train = check_pair(synth, train, ("synth", "train"))
  holdout, _ = check_pair(holdout, train, ("holdout", "train"))
  d_s, nearest = nn_distances(synth, train, chunk=chunk)
  d_h, _ = nn_distances(holdout, train, chunk=chunk)
  tau = float(np.quantile(d_h, quantile))
  med_s, med_h = float(np.median(d_s)), float(np.median(d_h))
  return {
    "fraction_closer": float(np.mean(d_s < tau)),
    "quantile": float(quantile),
    "threshold": tau,
    "median_ratio": med_s / med_h if med_h > 0 else float("nan"),
    "median_synth": med_s,
    "median_holdout": med_h,
    "synth_to_train": d_s,
    "holdout_to_train": d_h,
    "nearest_train": nearest,
    "n_synth": len(synth),
    "n_train": len(train),
    "n_holdout": len(holdout),
  }


# --------------------------------------------------------------------------- #
# Membership inference
# --------------------------------------------------------------------------- #
def membership_inference(members, nonmembers, synth, *, chunk: int | None = None) -> dict:
  """Distance and density membership-inference attacks against `synth` (module docstring).
  Returns {"auroc" (distance attack), "auroc_density", "radius", "member_distance",
  "nonmember_distance", "member_count", "nonmember_count", "n_members", "n_nonmembers",
  "n_synth"}."""
  from sklearn.metrics import roc_auc_score

  members = as_features(members, "members")
  nonmembers = as_features(nonmembers, "nonmembers")
  check_pair(members, synth, ("members", "synth"))
  check_pair(nonmembers, synth, ("nonmembers", "synth"))
  d_m, _ = nn_distances(members, synth, chunk=chunk)
  d_n, _ = nn_distances(nonmembers, synth, chunk=chunk)
  radius = float(np.median(np.concatenate([d_m, d_n])))
  c_m = count_within(members, synth, radius, chunk=chunk)
  c_n = count_within(nonmembers, synth, radius, chunk=chunk)
  y = np.concatenate([np.ones(len(d_m)), np.zeros(len(d_n))])
  return {
    "auroc": float(roc_auc_score(y, -np.concatenate([d_m, d_n]))),
    "auroc_density": float(roc_auc_score(y, np.concatenate([c_m, c_n]))),
    "radius": radius,
    "member_distance": d_m,
    "nonmember_distance": d_n,
    "member_count": c_m,
    "nonmember_count": c_n,
    "n_members": len(d_m),
    "n_nonmembers": len(d_n),
    "n_synth": len(as_features(synth, "synth")),
  }
