"""Class-rebalancing policies (paper section 4, "Class rebalancing").

They deliberately distort the class distribution; the paper finds this is
the first of its three failure mechanisms.

Raking. `rare_boost` and `rare_oversample_3x` draw rows by per-row weights w
raked with iterative proportional fitting (IPF) on the binary margins
"label k present": raking class k scales rows with k by t_k / q_k and rows
without it by (1 - t_k) / (1 - q_k), where q_k = sum_i w_i L_ik is the current
expected prevalence. One sweep rakes every active class in order of decreasing
prevalence (the rarest last). Classes with no train row are excluded: no
weighting can give them mass.

Convergence. When the targets are jointly reachable by some weighting of T,
IPF converges to the weights closest to uniform in KL divergence that meet them
(Csiszar 1975), geometrically when the solution is interior. When they are not
(the usual case on a small table: 40 classes below 5 % on the embedded slice,
each needing 5 % of the mass, need rows carrying several rare labels; the
best achievable minimum there is 4.76 % by linear programming), IPF cycles and
has no limit. So `rake_weights` rakes twice, each for a fixed `sweeps` under
`lax.fori_loop`:
  1. all active margins (raised classes to their target, the others to p_k);
  2. the raised margins only.
It returns (1) when it met every margin within `tol`, else (2): the raised
targets are the policy's point, and the other classes then keep their
prevalence as closely as the KL-nearest weighting allows. (2) itself meets its
targets whenever they are reachable (rare_oversample_3x on the embedded slice,
to float precision); where they are not (rare_boost there) it ends in a
stable cycle, there with 34 of the 40 raised classes within a point of 5 %
and all between 3.9 % and 14 %.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.data.table import COMMON_MIN, RARE_MAX
from ecgjax.policies import base
from ecgjax.policies.table import PolicyTable

RAKING_SWEEPS = 200
RAKING_TOL = 1e-4
_TINY = 1e-30


def class_cycle(key, table: PolicyTable, n: int) -> jnp.ndarray:
  """(n,) the class uniform_class targets per sample: the non-empty classes in turn.

  The cycle starts at a random class, so when n is not a multiple of the
  number of classes, which classes get the one extra sample varies by key.
  """
  nonempty = table.prevalence > 0
  num_classes = jnp.sum(nonempty)
  order = jnp.argsort(~nonempty, stable=True)  # non-empty class ids first, ascending
  start = jax.random.randint(key, (), 0, num_classes)
  return order[(start + jnp.arange(n)) % num_classes].astype(jnp.int32)


def uniform_class(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Cycle over the non-empty classes; for class k a uniform row among rows with k."""
  del unused
  n = base.check_n(n, "uniform_class")
  k_cycle, k_row = jax.random.split(key)
  classes = class_cycle(k_cycle, table, n)
  rows = base.uniform_in_segment(k_row, table.class_ptr, table.class_idx, classes)
  return base.from_rows(table, rows)


def _ipf(labels_t: jnp.ndarray, targets, rake, order, sweeps: int) -> jnp.ndarray:
  """Cyclic IPF from uniform weights. labels_t: (K, N); rake: (K,) bool margins."""
  num_labels, num_rows = labels_t.shape

  def rake_class(j, w):
    k = order[j]
    col = labels_t[k]
    q = jnp.dot(w, col)
    t = targets[k]
    scale = jnp.where(col > 0, t / jnp.maximum(q, _TINY), (1 - t) / jnp.maximum(1 - q, _TINY))
    # q in {0, 1}: the class is in no row or in every row, and cannot be raked.
    ok = rake[k] & (q > 0) & (q < 1)
    return jnp.where(ok, w * scale, w)

  def sweep(_, w):
    w = lax.fori_loop(0, num_labels, rake_class, w)
    return w / jnp.sum(w)

  return lax.fori_loop(0, sweeps, sweep, jnp.full((num_rows,), 1.0 / num_rows, jnp.float32))


def rake_weights(
  labels: jnp.ndarray,
  targets: jnp.ndarray,
  raised: jnp.ndarray,
  sweeps: int = RAKING_SWEEPS,
  tol: float = RAKING_TOL,
):
  """Per-row weights (N,) summing to 1 whose expected prevalences approach `targets`.

  labels: (N, K) 0/1; targets: (K,); raised: (K,) bool, the classes moved off
  their prevalence. See the module docstring for the two-pass rule.
  Returns (weights, joint): joint is True when all margins were met within tol.
  """
  labels = labels.astype(jnp.float32)
  prevalence = jnp.mean(labels, axis=0)
  active = prevalence > 0
  raised = raised & active
  order = jnp.argsort(-prevalence, stable=True)
  labels_t = labels.T
  w_joint = _ipf(labels_t, targets, active, order, sweeps)
  err = jnp.where(active, jnp.abs(w_joint @ labels - targets), 0.0)
  joint = jnp.max(err) <= tol
  w = lax.cond(joint, lambda: w_joint, lambda: _ipf(labels_t, targets, raised, order, sweeps))
  return w, joint


def rare_boost_targets(prevalence: jnp.ndarray):
  """Every non-empty class below 5 % raised to 5 %; the others keep p_k."""
  raised = (prevalence > 0) & (prevalence < COMMON_MIN)
  return jnp.where(raised, COMMON_MIN, prevalence), raised


def rare_oversample_3x_targets(prevalence: jnp.ndarray):
  """Every non-empty rare class (< 2 %) raised to 3 p_k; the others keep p_k."""
  raised = (prevalence > 0) & (prevalence < RARE_MAX)
  return jnp.where(raised, 3 * prevalence, prevalence), raised


def rare_boost_weights(table: PolicyTable):
  return rake_weights(table.labels, *rare_boost_targets(table.prevalence))


def rare_oversample_3x_weights(table: PolicyTable):
  return rake_weights(table.labels, *rare_oversample_3x_targets(table.prevalence))


def rare_boost(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """n rows by weights raked so every class below 5 % reaches 5 % expected prevalence."""
  del unused
  n = base.check_n(n, "rare_boost")
  w, _ = rare_boost_weights(table)
  return base.from_rows(table, base.weighted_rows(key, w, n))


def rare_oversample_3x(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """As rare_boost, with target 3 p_k for every rare class (< 2 %)."""
  del unused
  n = base.check_n(n, "rare_oversample_3x")
  w, _ = rare_oversample_3x_weights(table)
  return base.from_rows(table, base.weighted_rows(key, w, n))
