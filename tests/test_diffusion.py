"""Schedule, loss, CFG and DDIM sampler tests (CPU, a few seconds in all).

The sampler's numerical check uses data x0 ~ N(mu, Sigma), for which the
optimal eps-predictor is known in closed form, so the sampler can be checked
against exact moments instead of against a trained network.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.diffusion import ddim
from ecgjax.diffusion.loss import diffusion_loss
from ecgjax.diffusion.schedule import cosine_schedule, linear_schedule, q_sample

SCHED = linear_schedule()
AC64 = np.cumprod(1.0 - np.asarray(SCHED.betas, np.float64))


# --------------------------------------------------------------------------
# Toy denoisers
# --------------------------------------------------------------------------

# Inputs come from numpy, and raw uint32 pairs serve as keys: every eager jax
# op costs a compilation, which dominates the run time of tests this small.
RNG = np.random.default_rng(0)


def toy_params(d, c=76):
  return {
    "w": np.float32(0.3) * RNG.standard_normal((d, d), np.float32),
    "wc": np.float32(0.3) * RNG.standard_normal((c, d), np.float32),
  }


def raw_keys(n, seed):
  return np.random.default_rng(seed).integers(0, 2**32, (n, 2), dtype=np.uint32)


def toy_denoise(params, x, t, cond, drop):
  """Depends on x, t, cond and drop; per-sample, so batch order is irrelevant."""
  b = x.shape[0]
  h = x.reshape(b, -1)
  cond_term = jnp.where(drop[:, None], 0.0, cond @ params["wc"])
  out = jnp.tanh(h @ params["w"] + cond_term + t[:, None] / 1000.0)
  return out.reshape(x.shape)


def toy_denoise_np(params, x, t, cond, drop):
  """A float64 numpy twin of `toy_denoise`, for hand computations."""
  w, wc = (np.asarray(params[k], np.float64) for k in ("w", "wc"))
  h = np.asarray(x, np.float64).reshape(len(x), -1) @ w
  h += np.where(np.asarray(drop)[:, None], 0.0, np.asarray(cond, np.float64) @ wc)
  return np.tanh(h + np.asarray(t)[:, None] / 1000.0).reshape(np.shape(x))


# --------------------------------------------------------------------------
# Schedule and timesteps
# --------------------------------------------------------------------------


def test_schedules():
  np.testing.assert_allclose(np.asarray(SCHED.betas)[[0, -1]], [1e-4, 2e-2], rtol=1e-6)
  assert SCHED.num_timesteps == 1000
  for s in (SCHED, cosine_schedule(1000)):
    ac = np.asarray(s.alphas_cumprod)
    assert np.all(np.diff(ac) < 0) and ac[0] > 0.999 and ac[-1] < 1e-4
    np.testing.assert_allclose(
      np.square(s.sqrt_alphas_cumprod) + np.square(s.sqrt_one_minus_alphas_cumprod), 1.0, atol=1e-6
    )
  with pytest.raises(ValueError, match="beta_start"):
    linear_schedule(10, 0.1, 0.01)


def test_q_sample_matches_formula():
  x0, noise = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
  t = np.array([0, 500, 999])
  got = q_sample(
    SCHED, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32)
  )
  a = AC64[t][:, None, None]
  np.testing.assert_allclose(got, np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-5, atol=1e-6)


def test_ddim_timesteps():
  ts, t_prevs = ddim.ddim_timesteps(1000, 100)
  assert len(ts) == 100 and ts[0] == 999 and ts[-1] == 0
  assert np.all(np.diff(ts) < 0) and np.array_equal(t_prevs, np.r_[ts[1:], -1])
  assert ddim.ddim_timesteps(1000, 1)[0].tolist() == [999]
  for bad in (0, 1001):
    with pytest.raises(ValueError, match="num_steps"):
      ddim.ddim_timesteps(1000, bad)


# --------------------------------------------------------------------------
# DDIM step
# --------------------------------------------------------------------------

_step = jax.jit(ddim.ddim_step)


def test_ddim_step_matches_hand_computation():
  rng = np.random.default_rng(1)
  x, eps, noise = rng.normal(size=(3, 2, 6))
  t, tp, eta = 700, 650, 0.5
  a, ap = AC64[t], AC64[tp]
  x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
  sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)  # DDIM eq. 16
  want = np.sqrt(ap) * x0 + np.sqrt(1 - ap - sigma**2) * eps + sigma * noise
  f32 = lambda v: np.asarray(v, np.float32)
  got = _step(SCHED, f32(eps), t, tp, f32(x), eta, f32(noise))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Per-sample (B,) timesteps give the same as scalars.
  got_b = _step(SCHED, f32(eps), np.array([t, t]), np.array([tp, tp]), f32(x), eta, f32(noise))
  np.testing.assert_allclose(got_b, got, rtol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_final_step_returns_x0_prediction(eta):
  x, eps, noise = np.random.default_rng(2).normal(size=(3, 4, 3)).astype(np.float32)
  got = _step(SCHED, eps, 0, -1, x, eta, noise)
  want = (x - np.sqrt(1 - AC64[0]) * eps) / np.sqrt(AC64[0])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # sigma = 0: no noise


# --------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------


def _cfg_inputs(b=5, d=6):
  return (
    toy_params(d),
    RNG.standard_normal((b, d), np.float32),
    np.arange(b, dtype=np.int32) * 100,
    RNG.standard_normal((b, 76), np.float32),
  )


def test_cfg_matches_two_separate_passes():
  params, x, t, cond = _cfg_inputs()
  b = x.shape[0]
  eps_u = toy_denoise_np(params, x, t, cond, np.ones(b, bool))
  eps_c = toy_denoise_np(params, x, t, cond, np.zeros(b, bool))
  assert np.abs(eps_c - eps_u).max() > 0.1  # the toy really uses cond
  cfg = jax.jit(functools.partial(ddim.cfg_eps, toy_denoise))
  np.testing.assert_allclose(cfg(params, x, t, cond, 0.0), eps_u, atol=1e-5)
  np.testing.assert_allclose(cfg(params, x, t, cond, 1.0), eps_c, atol=1e-5)
  np.testing.assert_allclose(cfg(params, x, t, cond, 3.0), eps_u + 3.0 * (eps_c - eps_u), atol=3e-5)


def test_cfg_is_one_forward_pass_with_traced_scale():
  params, x, t, cond = _cfg_inputs()
  calls = []

  def recording_denoise(p, xx, tt, cc, drop):
    calls.append((xx.shape, drop.shape))
    return toy_denoise(p, xx, tt, cc, drop)

  cfg = jax.jit(functools.partial(ddim.cfg_eps, recording_denoise))
  cfg(params, x, t, cond, 1.0)
  cfg(params, x, t, cond, 3.0)  # a new scale must not retrace
  assert len(calls) == 1
  shape, drop_shape = calls[0]
  assert shape == (2 * x.shape[0],) + x.shape[1:] and drop_shape == (2 * x.shape[0],)


# --------------------------------------------------------------------------
# Sampler: determinism and per-sample keys
# --------------------------------------------------------------------------

SHAPE = (2, 3)  # any trailing shape; the denoiser sees (B, 2, 3)
PARAMS6 = toy_params(6)
COND8 = RNG.standard_normal((8, 76), np.float32)


@jax.jit
def _sample_keys(params, cond, keys, eta, w):
  return ddim.ddim_sample_with_keys(
    toy_denoise, params, cond, keys, SCHED, shape=SHAPE, num_steps=8, eta=eta, cfg_scale=w
  )


@jax.jit
def _sample(params, cond, key, eta, w):
  return ddim.ddim_sample(
    toy_denoise, params, cond, key, SCHED, shape=SHAPE, num_steps=8, eta=eta, cfg_scale=w
  )


def _rowwise_maxdiff(a, b):
  return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).max(axis=1)


def test_eta0_is_deterministic_and_keyed_per_sample():
  keys = raw_keys(8, seed=0)
  a = np.asarray(_sample_keys(PARAMS6, COND8, keys, 0.0, 3.0))
  assert a.shape == (8,) + SHAPE and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, _sample_keys(PARAMS6, COND8, keys, 0.0, 3.0))
  other = raw_keys(8, seed=1)
  assert np.all(
    _rowwise_maxdiff(a, _sample_keys(PARAMS6, COND8, other, 0.0, 3.0)) > 1e-3
  )  # every sample changes with its key
  # Same condition, different keys -> different samples.
  d = np.asarray(_sample_keys(PARAMS6, np.repeat(COND8[:1], 8, 0), keys, 0.0, 3.0))
  assert np.all(_rowwise_maxdiff(d[1:], np.repeat(d[:1], 7, 0)) > 1e-3)
  # eta = 1 is just as reproducible, and its step noise matters.
  s1 = np.asarray(_sample_keys(PARAMS6, COND8, keys, 1.0, 3.0))
  np.testing.assert_array_equal(s1, _sample_keys(PARAMS6, COND8, keys, 1.0, 3.0))
  assert np.all(_rowwise_maxdiff(s1, a) > 1e-3)
  # Permuting (key, cond) pairs permutes the samples.
  perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])
  for eta, ref in ((0.0, a), (1.0, s1)):
    np.testing.assert_allclose(
      _sample_keys(PARAMS6, COND8[perm], keys[perm], eta, 3.0), ref[perm], rtol=1e-5, atol=1e-6
    )


@functools.partial(jax.jit, static_argnums=1)
def _keys_and_noise(key, n):
  keys = ddim.sample_keys_for(key, n)
  return jax.random.key_data(keys), ddim.initial_noise(keys, SHAPE)


def test_sample_does_not_depend_on_batch():
  key = jax.random.key(7)
  (keys4, noise4), (keys8, noise8) = _keys_and_noise(key, 4), _keys_and_noise(key, 8)
  np.testing.assert_array_equal(keys4, keys8[:4])
  np.testing.assert_array_equal(noise4, noise8[:4])  # x_T is bit-identical
  for eta in (0.0, 1.0):
    x4 = _sample(PARAMS6, COND8[:4], key, eta, 3.0)
    x8 = _sample(PARAMS6, COND8, key, eta, 3.0)
    # Not bit-exact by contract: XLA may tile a matmul differently per batch.
    np.testing.assert_allclose(x4, x8[:4], rtol=1e-5, atol=1e-6)
  # ddim_sample is ddim_sample_with_keys on those keys.
  np.testing.assert_allclose(
    x8, _sample_keys(PARAMS6, COND8, keys8, 1.0, 3.0), rtol=1e-5, atol=1e-6
  )


def test_sampler_scalars_are_traced():
  traces = []

  def counting_denoise(p, x, t, c, drop):
    traces.append(x.shape)
    return toy_denoise(p, x, t, c, drop)

  fn = jax.jit(
    lambda p, c, k, eta, w: ddim.ddim_sample_with_keys(
      counting_denoise, p, c, k, SCHED, shape=SHAPE, num_steps=3, eta=eta, cfg_scale=w
    )
  )
  keys = raw_keys(2, seed=3)
  outs = [fn(PARAMS6, COND8[:2], keys, e, w) for e, w in [(0.0, 1.0), (1.0, 3.0), (0.5, 0.0)]]
  # One trace of the scan body over the doubled batch, no recompiles.
  assert traces == [(4,) + SHAPE]
  assert np.abs(outs[0] - outs[1]).max() > 1e-3


# --------------------------------------------------------------------------
# Sampler: closed-form Gaussian
# --------------------------------------------------------------------------
# x0 ~ N(mu, Sigma). For x_t = sqrt(a) x0 + sqrt(1-a) eps the optimal predictor
# is E[eps | x_t] = sqrt(1-a) C^{-1} (x_t - sqrt(a) mu), C = a Sigma + (1-a) I,
# which is linear in x_t, so DDIM is a chain of affine maps plus Gaussian noise
# and the exact law of its output is N(m_ddim, S_ddim), computed below in
# float64 numpy from the same equations written as matrices.
#
# Tolerances, N = 20,000 samples, per entry at 5 Monte-Carlo standard errors
# (sd of a sample mean sqrt(S_ii / N); of a sample covariance
# sqrt((S_ii S_jj + S_ij^2) / N)), so a false failure has probability < 1e-5:
#  1. sampler vs (m_ddim, S_ddim): Monte-Carlo error only.
#  2. sampler vs (mu, Sigma): Monte-Carlo error + the discretisation error of
#     100 DDIM steps, bounded by DISC below: the mean is off by at most
#     sqrt(a_{T-1}) |mu| ~ 0.01 (x_T ~ N(0, I) ignores the tiny residual
#     signal; forgotten when eta = 1) and first-order DDIM shrinks variances
#     by up to ~4 % (eta = 0) and ~10 % (eta = 1) at 100 steps; both shrink
#     ~10x at 1000 steps, which the test also checks.

N_GAUSS = 20_000
MU = np.array([1.0, -0.5, 0.25, 2.0])
_L = np.array([[1.0, 0, 0, 0], [0.5, 0.8, 0, 0], [-0.3, 0.4, 0.9, 0], [0.2, -0.1, 0.3, 0.6]])
SIGMA = _L @ _L.T  # non-diagonal, eigenvalues 0.18 .. 1.5
# eta -> (absolute mean bound, covariance bound relative to sqrt(S_ii S_jj))
DISC = {0.0: (0.015, 0.05), 1.0: (0.001, 0.10)}


def gaussian_params(mu, sigma):
  lam, u = np.linalg.eigh(sigma)
  return {k: np.asarray(v, np.float32) for k, v in dict(mu=mu, u=u, lam=lam).items()}


def gaussian_denoise(params, x, t, cond, drop):
  """The exact E[eps | x_t]; ignores cond and drop (so CFG is a no-op)."""
  del cond, drop
  sa = SCHED.sqrt_alphas_cumprod[t][:, None]
  s1 = SCHED.sqrt_one_minus_alphas_cumprod[t][:, None]
  z = (x - sa * params["mu"]) @ params["u"]
  return s1 * ((z / (sa**2 * params["lam"] + s1**2)) @ params["u"].T)


def exact_ddim_moments(mu, sigma, num_steps, eta):
  d, eye = len(mu), np.eye(len(mu))
  m, s = np.zeros(d), np.eye(d)  # x_T ~ N(0, I)
  for t, tp in zip(*ddim.ddim_timesteps(len(AC64), num_steps)):
    a, ap = AC64[t], (1.0 if tp < 0 else AC64[tp])
    c_inv = np.linalg.inv(a * sigma + (1 - a) * eye)
    e_mat, e_vec = np.sqrt(1 - a) * c_inv, -np.sqrt((1 - a) * a) * c_inv @ mu
    sig = eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    dc = np.sqrt(1 - ap - sig**2)
    mat = np.sqrt(ap / a) * (eye - np.sqrt(1 - a) * e_mat) + dc * e_mat
    vec = (dc - np.sqrt(ap / a * (1 - a))) * e_vec
    m, s = mat @ m + vec, mat @ s @ mat.T + sig**2 * eye
  return m, s


def moment_excess(x, mean, cov, mean_tol=0.0, cov_rel_tol=0.0, z=5.0):
  """max over entries of |error| / tolerance; <= 1 passes."""
  x = np.asarray(x, np.float64)
  n, dv = len(x), np.diag(cov)
  mean_tol = z * np.sqrt(dv / n) + mean_tol
  cov_tol = z * np.sqrt((np.outer(dv, dv) + cov**2) / n) + cov_rel_tol * np.sqrt(np.outer(dv, dv))
  return max(
    np.max(np.abs(x.mean(0) - mean) / mean_tol), np.max(np.abs(np.cov(x.T) - cov) / cov_tol)
  )


@jax.jit
def _gaussian_sampler(params, eta):
  return ddim.ddim_sample(
    gaussian_denoise,
    params,
    jnp.zeros((N_GAUSS, 1)),
    jax.random.key(11),
    SCHED,
    shape=(4,),
    num_steps=100,
    eta=eta,
    cfg_scale=3.0,
  )


@functools.cache
def gaussian_samples(eta, mean_shift=0.0, cov_scale=1.0):
  params = gaussian_params(MU + mean_shift, SIGMA * cov_scale)
  return np.asarray(_gaussian_sampler(params, eta), np.float64)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gaussian_reference_discretisation(eta):
  m, s = exact_ddim_moments(MU, SIGMA, 100, eta)
  mean_bound, cov_rel = DISC[eta]
  scale = np.sqrt(np.outer(np.diag(SIGMA), np.diag(SIGMA)))
  cov_err = np.max(np.abs(s - SIGMA) / scale)
  assert np.max(np.abs(m - MU)) < mean_bound and cov_err < cov_rel
  m_fine, s_fine = exact_ddim_moments(MU, SIGMA, 1000, eta)
  assert np.max(np.abs(s_fine - SIGMA) / scale) < cov_err / 5  # first order


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gaussian_sampler_matches_exact_ddim_law(eta):
  x = gaussian_samples(eta)
  assert moment_excess(x, *exact_ddim_moments(MU, SIGMA, 100, eta)) <= 1.0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gaussian_sampler_recovers_data_distribution(eta):
  assert moment_excess(gaussian_samples(eta), MU, SIGMA, *DISC[eta]) <= 1.0


def test_gaussian_checks_catch_a_wrong_predictor():
  # A 5 % covariance error is invisible next to the discretisation bound, but
  # the exact-law check sees it; grosser errors fail against the data itself.
  exact = exact_ddim_moments(MU, SIGMA, 100, 0.0)
  assert moment_excess(gaussian_samples(0.0, cov_scale=1.05), *exact) > 1.0
  assert moment_excess(gaussian_samples(0.0, cov_scale=1.25), MU, SIGMA, *DISC[0.0]) > 1.0
  assert moment_excess(gaussian_samples(0.0, mean_shift=0.1), MU, SIGMA, *DISC[0.0]) > 1.0


# --------------------------------------------------------------------------
# Training loss
# --------------------------------------------------------------------------


@jax.jit
def _documented_draws(key, x0):
  """The loss's draws, re-derived from its documented key convention."""
  k_t, k_noise, k_drop = jax.random.split(key, 3)
  b = x0.shape[0]
  return (
    jax.random.randint(k_t, (b,), 0, 1000, dtype=jnp.int32),
    jax.random.normal(k_noise, x0.shape),
    jax.random.bernoulli(k_drop, 0.5, (b,)),
  )


def test_diffusion_loss_matches_hand_computation():
  b = 6
  x0 = RNG.standard_normal((b, 2, 3), np.float32)
  cond = RNG.standard_normal((b, 76), np.float32)
  key = jax.random.key(5)
  loss, aux = jax.jit(functools.partial(diffusion_loss, toy_denoise))(
    PARAMS6, x0, cond, key, SCHED, 0.5
  )
  t, noise, drop = (np.asarray(v) for v in _documented_draws(key, x0))
  np.testing.assert_array_equal(aux["t"], t)
  np.testing.assert_array_equal(aux["drop"], drop)
  assert 0 < drop.sum() < b  # both branches exercised
  a = AC64[t][:, None, None]
  x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
  eps = toy_denoise_np(PARAMS6, x_t, t, cond, drop)
  want_mse = np.mean(((eps - noise) ** 2).reshape(b, -1), axis=1)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(aux["mse"], want_mse, rtol=1e-4)
  np.testing.assert_allclose(float(loss), want_mse.mean(), rtol=1e-4)


def test_diffusion_loss_drop_fraction_and_grad():
  b = 20_000
  x0 = np.zeros((b, 1), np.float32)
  cond = np.zeros((b, 76), np.float32)
  zero_eps = lambda p, x, t, c, drop: p * x
  fn = jax.jit(lambda p, k, pu: diffusion_loss(zero_eps, p, x0, cond, k, SCHED, pu))
  _, aux = fn(1.0, jax.random.key(0), 0.1)
  # sd of the fraction is sqrt(0.1 * 0.9 / 20000) = 0.0021; 0.01 is ~5 sd.
  assert abs(float(aux["drop_frac"]) - 0.1) < 0.01
  t = np.asarray(aux["t"])
  assert t.min() == 0 and t.max() == 999 and abs(t.mean() - 499.5) < 10
  assert float(fn(1.0, jax.random.key(0), 0.0)[1]["drop_frac"]) == 0.0
  assert float(fn(1.0, jax.random.key(0), 1.0)[1]["drop_frac"]) == 1.0
  # x0 = 0: x_t = sqrt(1-a) eps, eps_hat = p x_t; loss and grad are finite.
  loss, grad = jax.value_and_grad(lambda p: fn(p, jax.random.key(1), 0.1)[0])(0.5)
  assert np.isfinite(float(loss)) and np.isfinite(float(grad)) and float(grad) < 0


def test_v_prediction_target_converts_back_to_the_noise():
  """eps_from_prediction inverts prediction_target: a perfect v-model is a perfect eps-model."""
  from ecgjax.diffusion.loss import eps_from_prediction, prediction_target

  sched = linear_schedule(1000)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x0 = jax.random.normal(k1, (6, 4, 128)) * 2.0 + 0.5
  noise = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 1, 250, 500, 998, 999], jnp.int32)
  x_t = q_sample(sched, x0, t, noise)
  v = prediction_target(sched, x0, t, noise, "v")
  np.testing.assert_allclose(eps_from_prediction(sched, v, x_t, t, "v"), noise, atol=2e-5)
  np.testing.assert_array_equal(prediction_target(sched, x0, t, noise, "eps"), noise)
  # At t = 999 an error of 0.1 in v moves the implied x0 by ~0.1; in eps it would be ~16.
  sa, s1m = sched.sqrt_alphas_cumprod[999], sched.sqrt_one_minus_alphas_cumprod[999]
  x0_from_v = sa * x_t[5] - s1m * (v[5] + 0.1)
  assert float(jnp.abs(x0_from_v - x0[5]).max()) < 0.11
  with pytest.raises(ValueError, match="prediction must be one of"):
    prediction_target(sched, x0, t, noise, "x0")
