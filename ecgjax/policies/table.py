"""The train-fold table T that every sampling policy draws from (docs/design.md §4).

`make_table(ds)` keeps the train folds only and precomputes, in numpy, every
grouping a policy needs as a CSR pair (`*_ptr`, `*_idx`): the rows of group g
are `idx[ptr[g]:ptr[g + 1]]`. A uniform row of a group is then one gather,
`idx[ptr[g] + floor(u * count[g])]`, so every policy jits with static `n` and
costs O(n) whatever the size of T; a padded (groups, max_count) array would
instead cost 71 x (largest class) on the full dataset.

Anchor *groups* index the anchor classes 0..70 and put `none` (a row with no
label) at 71, so `group = anchor` for labelled rows and `K` for `none`.

The rebalancing policies' row weights (`row_weights`, docs/design.md §4 "Class
rebalancing") are a statistic of T alone, so they are solved here, once per
table; a draw only samples from them (at full size the solve is 40 Newton
steps on a 17,418 x 71 table: 0.2-0.5 s jitted, about 5 s in an eager call
with its compilation, which every draw and every report used to repeat).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from ecgjax.data import table as data_table
from ecgjax.policies import rebalance

NUM_CELLS = 6  # demo_strat: age tertile (3) x sex (2)


@struct.dataclass
class PolicyTable:
  """T as device arrays. N train rows, K = 71 labels, G = K + 1 anchor groups."""

  labels: jnp.ndarray  # (N, K) float32, 0/1
  demo_z: jnp.ndarray  # (N, 5) float32, the z-scores the generator was conditioned on
  demo: jnp.ndarray  # (N, 5) float32 raw: age, sex, height, weight, bmi
  demo_mean: jnp.ndarray  # (5,) train mean
  demo_std: jnp.ndarray  # (5,) train std
  prevalence: jnp.ndarray  # (K,) p_k over T
  anchor: jnp.ndarray  # (N,) int32, lowest-prevalence present label, -1 for none
  group: jnp.ndarray  # (N,) int32 anchor group, `none` -> K
  anchor_freq: jnp.ndarray  # (G,) fraction of T in each anchor group
  anchor_demo_z: jnp.ndarray  # (G, 5) mean z-demographics of each anchor group (prototype)
  age_cuts: jnp.ndarray  # (2,) age tertile cut points of T (demo_strat)
  age_range: jnp.ndarray  # (2,) min and max age of T (demo_balanced deciles)
  class_ptr: jnp.ndarray  # (K + 1,) CSR: rows with label k
  class_idx: jnp.ndarray  # (sum of labels,)
  group_ptr: jnp.ndarray  # (G + 1,) CSR: rows of anchor group g
  group_idx: jnp.ndarray  # (N,)
  cell_ptr: jnp.ndarray  # (G * 6 + 1,) CSR: rows of (anchor group, age tertile, sex)
  cell_idx: jnp.ndarray  # (N,)
  sex_ptr: jnp.ndarray  # (3,) CSR: rows of sex 0 and 1
  sex_idx: jnp.ndarray  # (N,)
  cond_hash: jnp.ndarray  # (N,) uint32, sorted hashes of each row's cond (synth_cond)
  ds_rows: jnp.ndarray  # (N,) int32: table row -> dataset row
  row_weights: dict  # rebalancing policy name -> (N,) float32 weights on the simplex

  @property
  def num_rows(self) -> int:
    return self.labels.shape[0]

  @property
  def num_labels(self) -> int:
    return self.labels.shape[1]

  @property
  def cond(self) -> jnp.ndarray:
    """(N, K + 5) the full conditioning tuple of each row."""
    return jnp.concatenate([self.labels, self.demo_z], axis=1)


def _csr(segment: np.ndarray, num_segments: int, rows: np.ndarray | None = None):
  """CSR of rows by segment id (stable: rows keep their order inside a segment)."""
  rows = np.arange(segment.size) if rows is None else rows
  order = np.argsort(segment, kind="stable")
  counts = np.bincount(segment, minlength=num_segments)
  ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
  return ptr, rows[order].astype(np.int32)


def age_tertile(age, cuts):
  """0, 1, 2 for age <= cuts[0], <= cuts[1], above (numpy or jnp)."""
  return (age > cuts[0]).astype(np.int32) + (age > cuts[1]).astype(np.int32)


def cell_of(group, age, sex, cuts):
  """demo_strat cell id: group * 6 + tertile * 2 + sex."""
  return group * NUM_CELLS + age_tertile(age, cuts) * 2 + sex


def _fmix32(h):
  """MurmurHash3's finaliser: a bijective avalanche mix of uint32 words."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def cond_hash(cond: jnp.ndarray) -> jnp.ndarray:
  """(n, D) float32 -> (n,) uint32, a function of the exact bits of each row.

  Equal tuples always hash equal, so a hash miss proves a tuple is not a real
  row; a hash hit (a true match or a ~N / 2^32 collision) only costs a redraw.
  """
  bits = jnp.asarray(cond, jnp.float32).view(jnp.uint32)
  salt = jnp.arange(bits.shape[-1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
  return _fmix32(jnp.sum(_fmix32(bits ^ salt), axis=-1, dtype=jnp.uint32))


def anchor_of(labels: jnp.ndarray, prevalence: jnp.ndarray) -> jnp.ndarray:
  """jnp twin of `data.table.anchor_class`: (n, K) -> (n,) int32, -1 for none."""
  present = labels > 0.5
  p = jnp.where(present, prevalence[None, :], jnp.inf)
  return jnp.where(present.any(axis=1), jnp.argmin(p, axis=1), -1).astype(jnp.int32)


def group_of(anchor: jnp.ndarray, num_labels: int) -> jnp.ndarray:
  """Anchor class -> anchor group (`none` -> K)."""
  return jnp.where(anchor < 0, num_labels, anchor)


def make_table(ds) -> PolicyTable:
  """Builds T from the train folds of a loaded dataset (`ecgjax.data.PTBXL`).

  Only train rows enter: every statistic a policy uses (prevalence, anchors,
  tertile cut points, marginals, prototypes) is a train-fold statistic, so no
  policy leaks validation or test records into a synthetic cohort.
  """
  train = np.asarray(ds.train_mask, dtype=bool)
  ds_rows = np.flatnonzero(train)
  if ds_rows.size == 0:
    raise ValueError("make_table: the dataset has no train-fold rows")
  labels = np.asarray(ds.labels, dtype=bool)[train]
  demo = np.asarray(ds.demo, dtype=np.float64)[train]
  demo_z = np.asarray(ds.demo_z, dtype=np.float32)[train]
  n, k = labels.shape
  g_count = k + 1
  prevalence = labels.mean(axis=0)
  anchor = data_table.anchor_class(labels, prevalence)
  group = np.where(anchor < 0, k, anchor)
  age, sex = demo[:, 0], demo[:, 1].astype(np.int64)
  if not np.isin(sex, (0, 1)).all():
    raise ValueError(f"make_table: sex must be 0 or 1, got values {np.unique(sex).tolist()}")
  cuts = np.quantile(age, [1 / 3, 2 / 3])

  group_counts = np.bincount(group, minlength=g_count)
  group_sum = np.zeros((g_count, 5))
  np.add.at(group_sum, group, demo_z.astype(np.float64))
  anchor_demo_z = group_sum / np.maximum(group_counts, 1)[:, None]

  row_of_label, label_of_row = np.nonzero(labels.T)  # label-major: CSR by class
  class_ptr, class_idx = _csr(row_of_label, k, label_of_row)
  group_ptr, group_idx = _csr(group, g_count)
  cell_ptr, cell_idx = _csr(cell_of(group, age, sex, cuts), g_count * NUM_CELLS)
  sex_ptr, sex_idx = _csr(sex, 2)
  cond = np.concatenate([labels.astype(np.float32), demo_z], axis=1)
  labels_f32, p_f32 = jnp.asarray(labels, jnp.float32), jnp.asarray(prevalence, jnp.float32)
  row_weights = {
    name: rebalance.solve_weights(labels_f32, *targets(p_f32))
    for name, targets in rebalance.TARGETS.items()
  }

  return PolicyTable(
    labels=jnp.asarray(labels, jnp.float32),
    demo_z=jnp.asarray(demo_z),
    demo=jnp.asarray(demo, jnp.float32),
    demo_mean=jnp.asarray(ds.demo_mean, jnp.float32),
    demo_std=jnp.asarray(ds.demo_std, jnp.float32),
    prevalence=jnp.asarray(prevalence, jnp.float32),
    anchor=jnp.asarray(anchor, jnp.int32),
    group=jnp.asarray(group, jnp.int32),
    anchor_freq=jnp.asarray(group_counts / n, jnp.float32),
    anchor_demo_z=jnp.asarray(anchor_demo_z, jnp.float32),
    age_cuts=jnp.asarray(cuts, jnp.float32),
    age_range=jnp.asarray([age.min(), age.max()], jnp.float32),
    class_ptr=jnp.asarray(class_ptr),
    class_idx=jnp.asarray(class_idx),
    group_ptr=jnp.asarray(group_ptr),
    group_idx=jnp.asarray(group_idx),
    cell_ptr=jnp.asarray(cell_ptr),
    cell_idx=jnp.asarray(cell_idx),
    sex_ptr=jnp.asarray(sex_ptr),
    sex_idx=jnp.asarray(sex_idx),
    cond_hash=jnp.sort(cond_hash(jnp.asarray(cond))),
    ds_rows=jnp.asarray(ds_rows, jnp.int32),
    row_weights=row_weights,
  )
