"""Euclidean distances between the rows of two feature arrays, in bounded-memory blocks.

Every distance-based fidelity and privacy measure (`distances.prdc`,
`distances.mmd2`, `privacy.nn_distances`) reads distances through
`squared_distance_blocks`, so none of them ever holds an (n, m) matrix.

**Definition.** For rows a_i of `a` (n, d) and b_j of `b` (m, d),
d2[i, j] = ||a_i - b_j||^2 computed in float64 as
||a_i - c||^2 + ||b_j - c||^2 - 2 (a_i - c) . (b_j - c), clipped at 0, with
c the mean row of `b` (centring first keeps the norms small, so the expansion
loses little to cancellation). With `same=True` (`a` is `b`) the diagonal
entries d2[i, i] are exactly 0.

**Memory.** One block is chunk x chunk float64 plus the two chunk x d float64
row slices it is computed from; `chunk=None` picks
chunk = clip(2^22 // d, 64, 2048) rows (about 32 MiB per slice at any d: 2048
rows for 128-dim embeddings, 349 rows for flattened (12, 1000) signals).
Inputs may be memory-mapped: only the rows of one block are read at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = [
  "as_features",
  "check_pair",
  "default_chunk",
  "squared_distance_blocks",
  "kth_neighbour_distances",
]


def as_features(x, name: str) -> np.ndarray:
  """`x` as a 2-D (n, d) numeric array (not copied), or ValueError naming `name`."""
  arr = np.asarray(x)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D (n, d) feature array, got shape {arr.shape}")
  if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
  if len(arr) == 0:
    raise ValueError(f"{name} has no rows")
  return arr


def check_pair(a, b, names=("a", "b")) -> tuple[np.ndarray, np.ndarray]:
  a, b = as_features(a, names[0]), as_features(b, names[1])
  if a.shape[1] != b.shape[1]:
    raise ValueError(
      f"{names[0]} and {names[1]} must have the same number of features, "
      f"got {a.shape[1]} and {b.shape[1]}"
    )
  return a, b


def default_chunk(d: int) -> int:
  """Rows per block for d features: clip(2^22 // d, 64, 2048)."""
  return int(np.clip(2**22 // max(d, 1), 64, 2048))


def _rows(x, start, stop, center) -> np.ndarray:
  block = np.asarray(x[start:stop], np.float64) - center
  if not np.isfinite(block).all():
    raise ValueError(f"non-finite feature values in rows {start}..{stop - 1}")
  return block


def squared_distance_blocks(
  a, b, *, chunk: int | None = None, same: bool = False
) -> Iterator[tuple[int, int, np.ndarray]]:
  """Yields (i0, j0, d2) with d2[i, j] = ||a[i0 + i] - b[j0 + j]||^2 (float64), block by
  block: rows of `a` in the outer loop, rows of `b` in the inner one, so every pair
  (i, j) appears exactly once. `same=True` says `a` and `b` are the same rows (their
  diagonal is set to exactly 0)."""
  a, b = check_pair(a, b)
  if same and len(a) != len(b):
    raise ValueError(f"same=True needs a and b of equal length, got {len(a)} and {len(b)}")
  chunk = default_chunk(a.shape[1]) if chunk is None else int(chunk)
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  center = np.zeros(b.shape[1])
  for j0 in range(0, len(b), chunk):
    center += np.asarray(b[j0 : j0 + chunk], np.float64).sum(0)
  center /= len(b)
  for i0 in range(0, len(a), chunk):
    ai = _rows(a, i0, i0 + chunk, center)
    an = np.einsum("ij,ij->i", ai, ai)
    for j0 in range(0, len(b), chunk):
      bj = ai if same and j0 == i0 else _rows(b, j0, j0 + chunk, center)
      bn = an if bj is ai else np.einsum("ij,ij->i", bj, bj)
      d2 = an[:, None] + bn[None, :] - 2.0 * (ai @ bj.T)
      np.maximum(d2, 0.0, out=d2)
      if same and j0 == i0:
        np.fill_diagonal(d2, 0.0)
      yield i0, j0, d2


def kth_neighbour_distances(x, k: int, *, chunk: int | None = None) -> np.ndarray:
  """Per row of `x`, the (k + 1)-th smallest of its distances to all rows of `x`, its own
  distance 0 included: the distance to its k-th nearest other row (a duplicate row counts
  as a neighbour at distance 0). This is the radius of the `prdc` package
  (`compute_nearest_neighbour_distances`). Needs len(x) > k."""
  x = as_features(x, "x")
  k = int(k)
  if k < 1 or len(x) <= k:
    raise ValueError(f"k must be in 1..{len(x) - 1} for {len(x)} rows, got {k}")
  best = np.full((len(x), k + 1), np.inf)
  for i0, _, d2 in squared_distance_blocks(x, x, chunk=chunk, same=True):
    rows = slice(i0, i0 + len(d2))
    both = np.concatenate([best[rows], d2], axis=1)
    best[rows] = np.partition(both, k, axis=1)[:, : k + 1]
  return np.sqrt(best.max(axis=1))
