"""Judge-driven policies (paper section 4, "Filtering and relabelling").

The harness runs them in three steps:
  1. pool = real_matched(pool_key, table, policy.pool_factor * n)
  2. generate an ECG per pool tuple; the judge (an XResNet1d-50 trained on the
     real train folds) scores them: judge_probs, judge_logits (m, 71)
  3. draw = policy(key, table, n, pool=pool, judge_probs=..., judge_logits=...,
     thresholds=...), and keep generated sample draw.pool_index[i] for row i.
Every policy accepts all the judge outputs and ignores those it does not use.
The selection is a function of the pool and the judge outputs; the draw varies
by key through the pool.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ecgjax.policies import base
from ecgjax.policies.table import PolicyTable, anchor_of, group_of


def judge_policy(pool_factor: int):
  """Marks a judge-driven policy and states its pool size, pool_factor x n, once.

  The selection rule fixes the factor (keeping half of each group needs a 2n
  pool), so it lives with the function; the registry reads `fn.pool_factor`.
  """

  def mark(fn):
    fn.pool_factor = pool_factor
    return fn

  return mark


def check_pool(policy, n: int, pool: base.Draw, **judge) -> int:
  """Shapes are static, so a wrong pool size fails at trace time, naming it."""
  name, factor = policy.__name__, policy.pool_factor
  n = base.check_n(n, name)
  if pool is None:
    raise ValueError(
      f"{name}: needs pool= (draw it with real_matched, {factor} x n rows) and the judge outputs"
    )
  m = factor * n
  if pool.cond.shape[0] != m:
    raise ValueError(f"{name}: pool has {pool.cond.shape[0]} rows, expected {factor} x n = {m}")
  for key, value in judge.items():
    if value is None:
      raise ValueError(f"{name}: needs {key}=")
    if key == "thresholds":
      expected = (pool.labels.shape[1],)
    else:
      expected = pool.labels.shape
    if tuple(value.shape) != expected:
      raise ValueError(f"{name}: {key} has shape {tuple(value.shape)}, expected {expected}")
  return m


def select(pool: base.Draw, index: jnp.ndarray, labels=None) -> base.Draw:
  """The kept pool samples, in index order, remembering their pool position."""
  index = index.astype(jnp.int32)
  return base.Draw(
    cond=pool.cond[index],
    labels=pool.labels[index] if labels is None else labels,
    rows=pool.rows[index],
    pool_index=index,
  )


def confidence(labels: jnp.ndarray, probs: jnp.ndarray) -> jnp.ndarray:
  """(m,) mean judge probability over the intended present labels; 1 - max where none."""
  present = labels > 0.5
  count = jnp.sum(present, axis=1)
  mean_present = jnp.sum(jnp.where(present, probs, 0.0), axis=1) / jnp.maximum(count, 1)
  return jnp.where(count > 0, mean_present, 1.0 - jnp.max(probs, axis=1))


def pool_groups(table: PolicyTable, pool: base.Draw) -> jnp.ndarray:
  """(m,) anchor group of each pool sample's intended labels (none -> K)."""
  return group_of(anchor_of(pool.labels, table.prevalence), table.num_labels)


def half_quota(key, group: jnp.ndarray, num_groups: int) -> jnp.ndarray:
  """(G,) how many to keep per group: half, by largest remainder so the total is m // 2.

  Every odd group has remainder 1/2, so the tie is broken at random: a random
  half of the odd groups (rounded to meet the total) keep the extra sample.
  """
  size = jnp.bincount(group, length=num_groups)
  floor = size // 2
  odd = (size % 2) == 1
  extra = group.shape[0] // 2 - jnp.sum(floor)  # = number of odd groups // 2
  priority = jnp.where(odd, jax.random.uniform(key, (num_groups,)), -1.0)
  rank = jnp.argsort(jnp.argsort(-priority))  # 0 for the highest priority
  return floor + (odd & (rank < extra)).astype(size.dtype)


def rank_in_group(group: jnp.ndarray, score: jnp.ndarray) -> jnp.ndarray:
  """(m,) 0-based rank of each sample's score within its group, highest first."""
  order = jnp.lexsort((-score, group))  # by group, then score descending
  sorted_group = group[order]
  first = jnp.searchsorted(sorted_group, sorted_group, side="left")
  rank = jnp.zeros_like(group).at[order].set(jnp.arange(group.shape[0]) - first)
  return rank


@judge_policy(pool_factor=2)
def qfilter_matched(
  key, table: PolicyTable, n: int, *, pool: base.Draw = None, judge_probs=None, **unused
) -> base.Draw:
  """Keep the global top n of the 2n pool by judge confidence in the intended labels."""
  del key, table, unused
  check_pool(qfilter_matched, n, pool, judge_probs=judge_probs)
  _, index = jax.lax.top_k(confidence(pool.labels, judge_probs), n)
  return select(pool, index)


@judge_policy(pool_factor=2)
def qstrat_matched(
  key, table: PolicyTable, n: int, *, pool: base.Draw = None, judge_probs=None, **unused
) -> base.Draw:
  """Keep the top half by confidence within each anchor-class group of the pool.

  The pool's anchor distribution survives (each group keeps floor or ceil of
  half its size), which removes qfilter's prevalence drift toward the classes
  the judge is confident on.
  """
  del unused
  check_pool(qstrat_matched, n, pool, judge_probs=judge_probs)
  num_groups = table.num_labels + 1
  group = pool_groups(table, pool)
  quota = half_quota(key, group, num_groups)
  keep = rank_in_group(group, confidence(pool.labels, judge_probs)) < quota[group]
  (index,) = jnp.nonzero(keep, size=n, fill_value=0)
  return select(pool, index)


@judge_policy(pool_factor=1)
def iter_relabel(
  key,
  table: PolicyTable,
  n: int,
  *,
  pool: base.Draw = None,
  judge_probs=None,
  thresholds=None,
  **unused,
) -> base.Draw:
  """Keep all n generated samples; intended labels := judge_probs >= thresholds.

  Only the labels the classifier is trained on change; `cond` stays the tuple
  the ECG was generated from, so the Draw still says how it was made.
  Thresholds are the judge's per-class thresholds chosen on fold 9.
  """
  del key, table, unused
  check_pool(iter_relabel, n, pool, judge_probs=judge_probs, thresholds=thresholds)
  labels = (judge_probs >= thresholds[None, :]).astype(jnp.float32)
  return select(pool, jnp.arange(n), labels=labels)
