"""`Draw`, the output of every policy, and the sampling primitives they share."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
from flax import struct

from ecgjax.policies.table import PolicyTable


@struct.dataclass
class Draw:
  """n conditioning tuples and what the downstream classifier is trained on (docs/design.md §4).

  cond: (n, 76) float32, what the generator is conditioned on.
  labels: (n, 71) float32, the intended labels the classifier learns; equal to
    cond[:, :71] except for `iter_relabel`, which replaces them with the judge's.
  rows: (n,) int32 table row the tuple came from; -1 where the tuple is not a
    real row (demo_balanced, synth_cond, prototype). `table.ds_rows[rows]` maps
    to dataset rows, e.g. for `real_subset`'s real signals.
  pool_index: (n,) int32 index into the generated pool whose sample is kept,
    for the judge-driven policies (the harness selects those ECGs); -1 for the
    others, whose samples are generated from `cond` in order.
  """

  cond: jnp.ndarray
  labels: jnp.ndarray
  rows: jnp.ndarray
  pool_index: jnp.ndarray

  def __len__(self) -> int:
    return self.cond.shape[0]


def check_n(n, name: str) -> int:
  """n must be a static positive int (policies are jitted with static_argnums=2)."""
  try:
    n = operator.index(n)
  except TypeError:
    raise TypeError(
      f"{name}: n must be a static int, got {n!r} (jit with static_argnums=2)"
    ) from None
  if n < 1:
    raise ValueError(f"{name}: n must be >= 1, got {n}")
  return n


def from_rows(table: PolicyTable, rows: jnp.ndarray) -> Draw:
  """The full real tuple of each row reused (real_matched and its relatives)."""
  rows = rows.astype(jnp.int32)
  labels = table.labels[rows]
  return Draw(
    cond=jnp.concatenate([labels, table.demo_z[rows]], axis=1),
    labels=labels,
    rows=rows,
    pool_index=jnp.full(rows.shape, -1, jnp.int32),
  )


def synthesized(labels: jnp.ndarray, demo_z: jnp.ndarray) -> Draw:
  """A Draw of tuples that are not real rows (rows = -1)."""
  labels = labels.astype(jnp.float32)
  cond = jnp.concatenate([labels, demo_z.astype(jnp.float32)], axis=1)
  fill = jnp.full(labels.shape[:1], -1, jnp.int32)
  return Draw(cond=cond, labels=labels, rows=fill, pool_index=fill)


def segment_counts(ptr: jnp.ndarray) -> jnp.ndarray:
  return ptr[1:] - ptr[:-1]


def uniform_in_segment(key, ptr: jnp.ndarray, idx: jnp.ndarray, segment: jnp.ndarray):
  """One uniform row of each requested CSR segment (segments must be non-empty)."""
  start = ptr[segment]
  count = ptr[segment + 1] - start
  u = jax.random.uniform(key, segment.shape)
  offset = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
  return idx[start + offset]


def uniform_rows(key, table: PolicyTable, n: int) -> jnp.ndarray:
  """n rows of T uniformly with replacement."""
  return jax.random.randint(key, (n,), 0, table.num_rows, dtype=jnp.int32)


def weighted_rows(key, weights: jnp.ndarray, n: int) -> jnp.ndarray:
  """n rows drawn with replacement with probability proportional to `weights`.

  Inverse-CDF search: O(n log N), where `jax.random.categorical` would build
  an (n, N) Gumbel matrix.
  """
  cdf = jnp.cumsum(weights)
  u = jax.random.uniform(key, (n,)) * cdf[-1]
  rows = jnp.searchsorted(cdf, u, side="right")
  return jnp.minimum(rows, weights.shape[0] - 1).astype(jnp.int32)
