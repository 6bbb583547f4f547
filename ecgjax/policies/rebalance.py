"""The rebalancing solver and its targets (the objective F and its dual are stated in
ecgjax/policies/classes.py's docstring): a leaf of the policies package, imported by the
condition table (which solves the weights once per table) and by the rebalancing policies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ecgjax.data.table import COMMON_MIN, RARE_MAX

RAISED_SLACK = 0.01  # r_k of a raised class: rho_k = r_k t_k
KEPT_SLACK = 0.1  # r_k of every other present class
SOLVER_ITERATIONS = 40
FEASIBLE_RTOL = 0.05  # relative miss of a reachable target (tested)
_STEP_SIZES = 2.0 ** -np.arange(10)
_TINY = 1e-12


def _rho(targets, raised, present):
  slack = jnp.where(raised, RAISED_SLACK, KEPT_SLACK)
  # An absent class (no row carries it) has q = t = 0 whatever w is; rho = 1 keeps nu_k = 0.
  return jnp.where(present, slack * jnp.maximum(targets, _TINY), 1.0)


def rebalance_weights(
  labels: jnp.ndarray,
  targets: jnp.ndarray,
  raised: jnp.ndarray,
  iterations: int = SOLVER_ITERATIONS,
) -> jnp.ndarray:
  """Row weights (N,) on the simplex minimising F (module docstring).

  labels: (N, K) 0/1; targets: (K,) t_k; raised: (K,) bool, the classes moved
  off their prevalence. Jit-able; `iterations` is static.
  """
  labels = labels.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  present = jnp.mean(labels, axis=0) > 0
  rho = _rho(targets, raised & present, present)
  steps = jnp.asarray(_STEP_SIZES, jnp.float32)

  def dual(nu):
    return -nu @ targets - 0.5 * jnp.sum(rho * nu**2) - jax.nn.logsumexp(-labels @ nu)

  def newton(_, nu):
    w = jax.nn.softmax(-labels @ nu)
    q = w @ labels
    centred = labels - q
    hessian = (centred * w[:, None]).T @ centred + jnp.diag(rho)
    direction = jnp.linalg.solve(hessian, q - targets - rho * nu)
    candidates = nu[None, :] + steps[:, None] * direction[None, :]
    return candidates[jnp.argmax(jax.vmap(dual)(candidates))]

  nu = lax.fori_loop(0, iterations, newton, jnp.zeros(labels.shape[1], jnp.float32))
  return jax.nn.softmax(-labels @ nu)


# One compiled solver per table shape, shared by make_table and the tests.
solve_weights = jax.jit(rebalance_weights, static_argnames="iterations")


def objective(w, labels, targets, raised) -> jnp.ndarray:
  """F(w) of the module docstring."""
  labels = labels.astype(jnp.float32)
  present = jnp.mean(labels, axis=0) > 0
  rho = _rho(targets, raised & present, present)
  q = w @ labels
  kl = jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.maximum(w, _TINY) * w.shape[0]), 0.0))
  return jnp.sum(jnp.where(present, (q - targets) ** 2 / (2 * rho), 0.0)) + kl


def effective_sample_size(w) -> jnp.ndarray:
  """1 / sum_i w_i^2 for weights summing to 1: N when uniform, 1 on a single row."""
  return 1.0 / jnp.sum(jnp.square(w))


def rare_boost_targets(prevalence: jnp.ndarray):
  """Every non-empty class below 5 % raised to 5 %; the others keep p_k."""
  raised = (prevalence > 0) & (prevalence < COMMON_MIN)
  return jnp.where(raised, COMMON_MIN, prevalence), raised


def rare_oversample_3x_targets(prevalence: jnp.ndarray):
  """Every non-empty rare class (< 2 %) raised to 3 p_k; the others keep p_k."""
  raised = (prevalence > 0) & (prevalence < RARE_MAX)
  return jnp.where(raised, 3 * prevalence, prevalence), raised


TARGETS = {"rare_boost": rare_boost_targets, "rare_oversample_3x": rare_oversample_3x_targets}
