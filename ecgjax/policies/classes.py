"""Class-rebalancing policies (paper section 4, "Class rebalancing"; docs/design.md §4).

They deliberately distort the class distribution; the paper finds this is
the first of its three failure mechanisms.

Rebalancing as one convex problem. `rare_boost` and `rare_oversample_3x` draw
rows of the train table T (N rows, label matrix L in {0, 1}^(N x K)) with
probabilities w on the simplex, the unique minimiser of

  F(w) = sum_k (q_k(w) - t_k)^2 / (2 rho_k) + KL(w || uniform),   q(w) = L^T w,

over the classes present in T (p_k > 0; an absent class has no row to weight).
t_k is the raised target of a raised class (rare_boost: 5 % for every class
below 5 %; rare_oversample_3x: 3 p_k for every class below 2 %) and the class's
own train prevalence p_k for every other class. rho_k = r_k t_k makes each
term a relative (chi-square-like) error, (q_k - t_k)^2 / (2 r t_k), so a
1-point miss weighs more for a rare class than for NORM:
  r = RAISED_SLACK (0.01) for raised classes and KEPT_SLACK (0.1) for the
  others: the raised targets are the policy's point, and the other classes are
  held near their prevalence ten times more loosely.
The KL term keeps the weights spread (it is what makes F strictly convex, so
the answer is unique and cannot depend on the order of the classes).

Solver. F's minimiser is w(nu) = softmax(-L nu) for the maximiser nu of the
concave dual D(nu) = -nu.t - sum_k rho_k nu_k^2 / 2 - log mean_i exp(-(L nu)_i),
whose optimality condition is q_k - t_k = rho_k nu_k. The dual has K variables
(71), so `rebalance_weights` runs SOLVER_ITERATIONS (40) Newton steps on it
under `lax.fori_loop`, each with Hessian Cov_w(L) + diag(rho) and the best of
ten step sizes 1, 1/2, ..., 1/512 by D (a damped Newton method that ascends
D at every step). On the embedded slice and on random full-size tables
(17,000 x 71) the weights are within 5e-5 (relative to the largest) of their
limit after 10 steps and equal to 160 steps' in float32 after 30. The weights
depend on T alone, so `make_table` solves them once per table
(`table.row_weights`); a draw only samples rows from them, and the report
reads them.

What it gives. Where every target, raised and kept, is reachable, F's optimum
meets them up to the relative slack: |q_k - t_k| / t_k = r_k |nu_k|, and
lifting a class c-fold takes nu_k near log c, so a tenfold lift misses by
about 2.5 % of its target; FEASIBLE_RTOL (5 %) is the stated tolerance. Where they are not (the
embedded slice: no weighting lifts all 40 classes below 5 % to 5 %, and none
triples the rare classes while keeping all others), it is the compromise F
defines. `rebalance_report` returns the achieved prevalences, the objective
and the effective sample size ESS = 1 / sum_i w_i^2 (N for uniform weights;
the number of equally weighted rows carrying the same information), which the
TSTR harness stores in the run's metrics.json.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.policies import base
from ecgjax.policies.rebalance import (  # noqa: F401  (the solver's names, re-exported)
  FEASIBLE_RTOL,
  KEPT_SLACK,
  RAISED_SLACK,
  SOLVER_ITERATIONS,
  TARGETS,
  effective_sample_size,
  objective,
  rare_boost_targets,
  rare_oversample_3x_targets,
  rebalance_weights,
  solve_weights,
)
from ecgjax.policies.table import PolicyTable


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


def rare_boost_weights(table: PolicyTable) -> jnp.ndarray:
  """F's weights for rare_boost, solved once by make_table (`table.row_weights`)."""
  return table.row_weights["rare_boost"]


def rare_oversample_3x_weights(table: PolicyTable) -> jnp.ndarray:
  """F's weights for rare_oversample_3x, solved once by make_table."""
  return table.row_weights["rare_oversample_3x"]


def rebalance_report(table: PolicyTable, policy_name: str, codes=None) -> dict:
  """What a rebalancing policy's weights achieve on `table`, JSON-able (metrics.json).

  codes: the K label names prevalences are keyed by (default: "0", "1", ...).
  """
  if policy_name not in TARGETS:
    raise ValueError(f"{policy_name!r} is not a rebalancing policy; known: {', '.join(TARGETS)}")
  targets, raised = TARGETS[policy_name](table.prevalence)
  w = table.row_weights[policy_name]
  q, p, t = (np.asarray(a, np.float64) for a in (w @ table.labels, table.prevalence, targets))
  raised = np.asarray(raised)
  kept = (p > 0) & ~raised
  codes = [str(c) for c in (codes if codes is not None else range(table.num_labels))]
  ess = float(effective_sample_size(w))
  return {
    "objective": float(objective(w, table.labels, targets, raised)),
    "effective_sample_size": ess,
    "effective_sample_size_fraction": ess / table.num_rows,
    "num_rows": int(table.num_rows),
    "raised": [c for c, r in zip(codes, raised) if r],
    "achieved_prevalence": {c: float(v) for c, v in zip(codes, q)},
    "target_prevalence": {c: float(v) for c, v in zip(codes, t)},
    "train_prevalence": {c: float(v) for c, v in zip(codes, p)},
    "max_raised_shortfall": float(np.max(t[raised] - q[raised], initial=0.0)),
    "min_raised_gain": float(np.min(q[raised] - p[raised], initial=0.0)),
    "kept_mean_abs_drift": float(np.mean(np.abs(q[kept] - p[kept]))) if kept.any() else 0.0,
  }


def rare_boost(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """n rows by the weights of F with every class below 5 % targeted at 5 %."""
  del unused
  n = base.check_n(n, "rare_boost")
  w = rare_boost_weights(table)
  return base.from_rows(table, base.weighted_rows(key, w, n))


def rare_oversample_3x(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """As rare_boost, with target 3 p_k for every rare class (< 2 %)."""
  del unused
  n = base.check_n(n, "rare_oversample_3x")
  w = rare_oversample_3x_weights(table)
  return base.from_rows(table, base.weighted_rows(key, w, n))
