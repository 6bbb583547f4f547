"""rare_boost and rare_oversample_3x: the convex rebalancing problem of ecgjax.policies.classes.

F(w) = sum_k (q_k - t_k)^2 / (2 rho_k) + KL(w || uniform) has one minimiser;
these tests check that the solver finds it (against scipy on a table whose
symmetry reduces F to one variable), that it meets reachable targets, and that
on infeasible tables it is independent of class order and iteration count.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from ecgjax import policies as P
from ecgjax.data.table import COMMON_MIN, RARE_MAX
from ecgjax.policies import classes

# Mean absolute drift (points) of the classes a policy does not raise, on the
# embedded slice, under the raking these policies used before (fixed sweeps of IPF).
EARLIER_DRIFT = {"rare_boost": 15.6, "rare_oversample_3x": 3.7}

solve = jax.jit(classes.rebalance_weights, static_argnames="iterations")


@pytest.fixture(scope="session")
def table(ptbxl):
  return P.make_table(ptbxl)


def _targets(name, prevalence):
  return classes.TARGETS[name](jnp.asarray(prevalence, jnp.float32))


@pytest.mark.parametrize("name", ["rare_boost", "rare_oversample_3x"])
def test_reachable_targets_are_met(name):
  """Independent labels on 4000 rows: every margin (raised and kept) is reachable."""
  rng = np.random.default_rng(0)
  p = np.array([0.5, 0.2, 0.08, 0.04, 0.03, 0.015, 0.01, 0.005])
  labels = jnp.asarray(rng.random((4000, p.size)) < p, jnp.float32)
  targets, raised = _targets(name, labels.mean(0))
  w = solve(labels, targets, raised)
  q = np.asarray(w @ labels)
  rel = np.abs(q - np.asarray(targets)) / np.asarray(targets)
  print(
    f"\n{name}: feasible table, max relative miss {rel.max():.4f} (tolerance {classes.FEASIBLE_RTOL})"
  )
  assert rel.max() <= classes.FEASIBLE_RTOL
  assert abs(float(w.sum()) - 1) < 1e-5 and float(w.min()) >= 0


def _singleton_table():
  """100 rows: 25 rare classes on one row each (1 %), NORM on the other 75.

  rare_boost asks 25 x 5 % = 125 % of the mass for the rare rows: infeasible.
  By symmetry the optimum gives each rare row weight a and each NORM row
  (1 - 25 a) / 75, so F reduces to one variable.
  """
  labels = np.zeros((100, 26), np.float32)
  labels[np.arange(25), np.arange(25)] = 1
  labels[25:, 25] = 1
  return labels


def _singleton_optimum():
  r_raised, r_kept, n = classes.RAISED_SLACK, classes.KEPT_SLACK, 100

  def f(a):
    b = (1 - 25 * a) / 75
    kl = 25 * a * np.log(n * a) + 75 * b * np.log(n * b)
    rare = 25 * (a - COMMON_MIN) ** 2 / (2 * r_raised * COMMON_MIN)
    norm = (75 * b - 0.75) ** 2 / (2 * r_kept * 0.75)
    return rare + norm + kl

  res = optimize.minimize_scalar(
    f, bounds=(1e-9, 1 / 25 - 1e-9), method="bounded", options={"xatol": 1e-12}
  )
  return res.x


def test_solver_finds_the_optimum_of_a_symmetric_infeasible_table():
  labels = _singleton_table()
  targets, raised = _targets("rare_boost", labels.mean(0))
  w = np.asarray(solve(labels, targets, raised))
  a = _singleton_optimum()
  np.testing.assert_allclose(w[:25], a, rtol=1e-4)
  np.testing.assert_allclose(w[25:], (1 - 25 * a) / 75, rtol=1e-4)


def _check_infeasible(labels, name, p_before=None):
  labels = np.asarray(labels, np.float32)
  p = labels.mean(0)
  targets, raised = _targets(name, p)
  raised = np.asarray(raised)
  w = np.asarray(solve(labels, targets, raised))
  # Beyond convergence the iteration count does not matter.
  w_long = np.asarray(solve(labels, targets, raised, iterations=2 * classes.SOLVER_ITERATIONS))
  np.testing.assert_allclose(w_long, w, rtol=1e-4, atol=1e-7)
  # Nor does the order of the classes.
  for seed in range(3):
    perm = np.random.default_rng(seed).permutation(labels.shape[1])
    t_perm, r_perm = _targets(name, p[perm])
    np.testing.assert_allclose(
      np.asarray(solve(labels[:, perm], t_perm, r_perm)), w, rtol=1e-4, atol=1e-7
    )
  q = w @ labels
  # Every raised class at least as high as under real_matched (its train prevalence).
  assert (q[raised] >= p[raised] - 1e-6).all()
  kept = (p > 0) & ~raised
  return w, q, p, raised, kept


def test_hand_made_infeasible_table():
  labels = _singleton_table()
  targets, _ = _targets("rare_boost", labels.mean(0))
  w, q, p, raised, kept = _check_infeasible(labels, "rare_boost")
  assert (q[raised] < np.asarray(targets)[raised]).all()  # infeasible: not met
  ess = float(classes.effective_sample_size(w))
  print(
    f"\nhand-made: rare classes {p[0]:.3f} -> {q[0]:.4f}, NORM {p[25]:.3f} -> {q[25]:.4f}, ESS {ess:.1f}/100"
  )
  assert 1 < ess <= 100


@pytest.mark.parametrize("name", ["rare_boost", "rare_oversample_3x"])
def test_embedded_slice(table, ptbxl, name):
  """No weighting meets all targets here; the answer is F's, whatever the order or iterations."""
  w, q, p, raised, kept = _check_infeasible(table.labels, name)
  drift = 100 * np.mean(np.abs(q[kept] - p[kept]))
  report = classes.rebalance_report(table, name, list(ptbxl.codes))
  ess = report["effective_sample_size"]
  norm = list(ptbxl.codes).index("NORM")
  print(
    f"\n{name}: {raised.sum()} raised classes, mean {100 * p[raised].mean():.2f} % -> "
    f"{100 * q[raised].mean():.2f} % (max shortfall {100 * report['max_raised_shortfall']:.2f} pt); "
    f"kept classes' mean absolute drift {drift:.2f} pt (earlier {EARLIER_DRIFT[name]} pt); "
    f"NORM {100 * p[norm]:.1f} % -> {100 * q[norm]:.1f} %; ESS {ess:.1f} of {table.num_rows}"
  )
  assert drift < EARLIER_DRIFT[name]
  assert report["kept_mean_abs_drift"] == pytest.approx(drift / 100, rel=1e-4)
  assert report["achieved_prevalence"]["NORM"] == pytest.approx(q[norm], abs=1e-6)
  assert sorted(report["raised"]) == sorted(np.asarray(ptbxl.codes)[raised])
  assert 1 < ess <= table.num_rows
  assert report["effective_sample_size_fraction"] == pytest.approx(ess / table.num_rows)
  # The weights are F's minimum: no small move along the simplex lowers F.
  targets, r = _targets(name, p)
  f0 = float(classes.objective(jnp.asarray(w), table.labels, targets, r))
  assert report["objective"] == pytest.approx(f0, rel=1e-5)
  rng = np.random.default_rng(0)
  for _ in range(5):
    v = rng.normal(size=w.shape) * w
    v -= w * v.sum() / w.sum()  # stays on the simplex to first order
    for eps in (1e-2, -1e-2):
      moved = jnp.asarray(np.maximum(w + eps * v, 0) / np.maximum(w + eps * v, 0).sum())
      assert float(classes.objective(moved, table.labels, targets, r)) >= f0 - 1e-6


@pytest.mark.parametrize("name", ["rare_boost", "rare_oversample_3x"])
def test_draw_follows_the_weights(table, name):
  n = 40_000
  draw = jax.jit(P.POLICIES[name], static_argnums=2)(jax.random.PRNGKey(0), table, n)
  targets, raised = _targets(name, table.prevalence)
  q = np.asarray(solve(table.labels, targets, raised) @ table.labels)
  got = np.asarray(draw.labels).mean(0)
  se = np.sqrt(q * (1 - q) / n)
  assert (np.abs(got - q) <= 5 * se + 1e-6).all()
  assert (np.asarray(draw.rows) >= 0).all() and (np.asarray(draw.pool_index) == -1).all()


def test_unknown_policy_report_names_it(table):
  with pytest.raises(ValueError, match="'uniform_class' is not a rebalancing policy"):
    classes.rebalance_report(table, "uniform_class")


def test_classes_absent_from_the_table_stay_absent():
  labels = np.zeros((100, 4), np.float32)
  labels[:, 0] = 1  # in every row: no weighting moves it
  labels[:1, 1] = 1  # 1 %: raised by both policies
  labels[:60, 2] = 1  # column 3 is in no row
  for name in ("rare_boost", "rare_oversample_3x"):
    targets, raised = _targets(name, labels.mean(0))
    w = np.asarray(solve(labels, targets, raised))
    q = w @ labels
    assert np.isfinite(w).all() and q[3] == 0 and q[0] == pytest.approx(1)
    assert q[1] > 0.01 and RARE_MAX > 0.01


def test_weights_are_solved_once_per_table(table, monkeypatch):
  """make_table stores F's weights; draws and reports read them and never solve again."""
  for name in ("rare_boost", "rare_oversample_3x"):
    targets, raised = _targets(name, table.prevalence)
    np.testing.assert_array_equal(
      np.asarray(table.row_weights[name]), np.asarray(solve(table.labels, targets, raised))
    )

  def no_solve(*args, **kwargs):
    raise AssertionError("solved again")

  monkeypatch.setattr(classes, "rebalance_weights", no_solve)
  monkeypatch.setattr(classes, "solve_weights", no_solve)
  for name in ("rare_boost", "rare_oversample_3x"):
    draw = P.POLICIES[name](jax.random.PRNGKey(0), table, 64)  # eager, as the harness calls it
    assert draw.rows.shape == (64,)
    assert classes.rebalance_report(table, name)["num_rows"] == table.num_rows
