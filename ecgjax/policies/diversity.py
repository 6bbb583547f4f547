"""`diversity_oversample` (paper section 4, "Diversity and prototype").

Greedy farthest-point selection, run for every anchor-class group at once: a
running (m,) vector holds each point's squared distance to the nearest point
already selected in its own group; each iteration of one `lax.fori_loop`, every
group that still has quota left selects its unselected point with the largest
such distance, and the vector is updated with the distances to the new picks.
An iteration costs O(m x 71), and the loop runs max(quota) times, independent
of the number of groups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.policies import base, judge
from ecgjax.policies.table import PolicyTable


def _pick_farthest(score, eligible, group, num_groups):
  """(G,) per group, the eligible point of highest score (lowest index on ties); m if none."""
  m = score.shape[0]
  s = jnp.where(eligible, score, -jnp.inf)
  best = jax.ops.segment_max(s, group, num_groups)
  is_best = eligible & (s == best[group])
  return jax.ops.segment_min(jnp.where(is_best, jnp.arange(m), m), group, num_groups)


def farthest_point_select(x: jnp.ndarray, group: jnp.ndarray, quota: jnp.ndarray) -> jnp.ndarray:
  """(m,) bool: quota[g] points of each group g by greedy farthest-point selection.

  x: (m, d) features; group: (m,) int in [0, G); quota: (G,) with quota <= size.
  Each group starts from its point farthest from the group centroid, so the
  selection is a deterministic function of its inputs.
  """
  m = x.shape[0]
  num_groups = quota.shape[0]
  x = jnp.asarray(x, jnp.float32)  # host arrays (the harness passes numpy logits) too
  size = jnp.bincount(group, length=num_groups)
  centroid = jax.ops.segment_sum(x, group, num_groups) / jnp.maximum(size, 1)[:, None]
  from_centroid = jnp.sum((x - centroid[group]) ** 2, axis=1)

  def select_round(selected, count, score):
    """Each open group selects its eligible point of highest score; (m,) distances to it."""
    open_group = count < quota
    pick = _pick_farthest(score, ~selected & open_group[group], group, num_groups)
    took = open_group & (pick < m)
    pick = jnp.where(took, pick, m)  # m: out of range, dropped by the scatter
    selected = selected.at[pick].set(True, mode="drop")
    dist = jnp.sum((x - x[jnp.minimum(pick, m - 1)][group]) ** 2, axis=1)
    return selected, count + took.astype(count.dtype), jnp.where(took[group], dist, jnp.inf)

  def farthest_round(_, state):
    selected, count, min_dist = state
    selected, count, dist = select_round(selected, count, min_dist)
    return selected, count, jnp.minimum(min_dist, dist)

  # Round 0 picks by distance to the centroid, later rounds by the running minimum.
  state = select_round(jnp.zeros((m,), bool), jnp.zeros_like(quota), from_centroid)
  selected, _, _ = lax.fori_loop(1, jnp.max(quota), farthest_round, state)
  return selected


@judge.judge_policy(pool_factor=2)
def diversity_oversample(
  key, table: PolicyTable, n: int, *, pool: base.Draw = None, judge_logits=None, **unused
) -> base.Draw:
  """From the 2n pool, half of each anchor-class group by farthest-point selection.

  Distances are Euclidean in the judge's 71-dim logit space; each group keeps
  floor or ceil of half its size (largest remainder, as qstrat_matched), so
  exactly n are kept and the pool's anchor distribution survives.
  """
  del unused
  judge.check_pool(diversity_oversample, n, pool, judge_logits=judge_logits)
  group = judge.pool_groups(table, pool)
  quota = judge.half_quota(key, group, table.num_labels + 1)
  keep = farthest_point_select(judge_logits, group, quota)
  (index,) = jnp.nonzero(keep, size=n, fill_value=0)
  return judge.select(pool, index)
