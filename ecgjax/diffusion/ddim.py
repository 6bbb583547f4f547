"""DDIM sampling with classifier-free guidance (Song et al. 2021; Ho & Salimans 2022).

The pieces, from the inside out:

- `ddim_step`: one pure update x_t -> x_{t_prev} (DDIM eq. 12, with the
  sigma of eq. 16; eta = 0 is the deterministic DDIM sampler, eta = 1 the
  DDPM-like ancestral one).
- `cfg_eps`: guided noise prediction eps_u + w (eps_c - eps_u) from ONE forward
  pass over a doubled batch, with ``w`` traced so changing it does not
  recompile.
- `ddim_sample_with_keys`: the whole reverse process as one ``lax.scan`` over
  an evenly spaced subsequence of the T training timesteps. Every sample's
  randomness comes from its own key, so a sample does not depend on the batch
  (or the device shard) it was generated in.
- `make_sharded_sampler`: the same function under ``jax.jit`` with the batch
  sharded over a ``('data',)`` mesh and the parameters replicated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax.diffusion.loss import DenoiseFn
from ecgjax.diffusion.schedule import Schedule, broadcast_to_batch


def ddim_timesteps(num_timesteps: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """The (t, t_prev) pairs of a ``num_steps`` DDIM run, as int32 numpy arrays.

  The subsequence tau of DDIM sec. 4.2 is evenly spaced over [0, T-1] and
  includes both ends ("trailing" spacing): starting at T-1 makes x_T ~ N(0, I)
  the closest available match to q(x_{T-1}), and the last pair is (0, -1),
  a final step to clean data with alphas_cumprod = 1.
  """
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
  ts = np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int32)
  t_prevs = np.concatenate([ts[1:], np.array([-1], np.int32)])
  return ts, t_prevs


def ddim_step(
  schedule: Schedule,
  eps: jax.Array,
  t: jax.Array,
  t_prev: jax.Array,
  x: jax.Array,
  eta: jax.Array,
  noise: jax.Array,
) -> jax.Array:
  """One generalised DDIM update from x_t to x_{t_prev} (DDIM eq. 12).

      x0_pred = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
      sigma   = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
      x_prev  = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma noise

  with ``a = alphas_cumprod``. ``t_prev = -1`` is the final step to data,
  where a_prev = 1 and therefore sigma = 0 and x_prev = x0_pred. x0_pred is not
  clipped: latents have no fixed range.

  Args:
    schedule: the noise schedule.
    eps: predicted noise, shape of ``x``.
    t, t_prev: int timesteps, scalars or ``(B,)``; ``t_prev`` in ``[-1, t)``.
    x: current sample x_t, ``(B, ...)``.
    eta: stochasticity (may be traced); 0 is deterministic DDIM.
    noise: standard normal, shape of ``x``; ignored (multiplied by 0) when
      eta = 0.
  """
  t = jnp.asarray(t)
  t_prev = jnp.asarray(t_prev)
  final = t_prev < 0
  t_prev_idx = jnp.maximum(t_prev, 0)
  # sqrt(1 - a) is read from the float64-derived table rather than computed as
  # 1 - a in float32, which would lose ~3 digits at small t (a ~ 0.9999).
  sa_t = broadcast_to_batch(schedule.sqrt_alphas_cumprod[t], x)
  s1m_t = broadcast_to_batch(schedule.sqrt_one_minus_alphas_cumprod[t], x)
  sa_prev = broadcast_to_batch(jnp.where(final, 1.0, schedule.sqrt_alphas_cumprod[t_prev_idx]), x)
  s1m_prev = broadcast_to_batch(
    jnp.where(final, 0.0, schedule.sqrt_one_minus_alphas_cumprod[t_prev_idx]), x
  )

  x32 = x.astype(jnp.float32)
  eps = eps.astype(jnp.float32)
  x0_pred = (x32 - s1m_t * eps) / sa_t
  # 1 - a_t / a_prev = ((1 - a_t) - (1 - a_prev)) / a_prev, eq. 16.
  var_ratio = jnp.maximum(jnp.square(s1m_t) - jnp.square(s1m_prev), 0.0)
  sigma = jnp.asarray(eta, jnp.float32) * (s1m_prev / s1m_t) * jnp.sqrt(var_ratio) / sa_prev
  dir_coef = jnp.sqrt(jnp.maximum(jnp.square(s1m_prev) - jnp.square(sigma), 0.0))
  x_prev = sa_prev * x0_pred + dir_coef * eps + sigma * noise.astype(jnp.float32)
  return x_prev.astype(x.dtype)


def cfg_eps(
  denoise_fn: DenoiseFn,
  params: Any,
  x: jax.Array,
  t: jax.Array,
  cond: jax.Array,
  cfg_scale: jax.Array,
) -> jax.Array:
  """Classifier-free guided noise prediction, eps_u + w (eps_c - eps_u).

  One forward pass over a doubled batch of 2B: each sample appears once with
  its condition dropped (drop = True, the learned null condition) and once
  with it kept. The two copies are interleaved, [x_0, x_0, x_1, x_1, ...],
  rather than stacked [x; x], so that when the batch is sharded over devices
  each device's unconditional/conditional pair stays on that device and the
  doubling costs no cross-device traffic; for a per-sample denoiser the order
  inside the batch does not change the result.

  Args:
    denoise_fn: ``eps = denoise_fn(params, x, t, cond, drop)``.
    params: the denoiser's parameters.
    x: ``(B, ...)`` noisy samples.
    t: int timesteps, scalar or ``(B,)``.
    cond: ``(B, C)`` conditioning vectors.
    cfg_scale: guidance weight w (traced): 0 is unconditional, 1 conditional.
  """
  batch = x.shape[0]
  t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (batch,))
  double = lambda a: jnp.repeat(a, 2, axis=0)  # row i -> rows 2i, 2i + 1
  drop = jnp.tile(jnp.array([True, False]), batch)
  eps = denoise_fn(params, double(x), double(t), double(cond), drop)
  eps = eps.reshape((batch, 2) + eps.shape[1:]).astype(jnp.float32)
  eps_u, eps_c = eps[:, 0], eps[:, 1]
  w = jnp.asarray(cfg_scale, jnp.float32)
  return eps_u + w * (eps_c - eps_u)


def _split_sample_keys(sample_keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-sample (init_key, step_key): x_T from the first, step noise from the
  second by ``fold_in(step_key, step)``. Splitting first keeps the two streams
  apart (fold_in on the key x_T was drawn from could reuse its counter bits)."""
  pairs = jax.vmap(jax.random.split)(sample_keys)
  return pairs[:, 0], pairs[:, 1]


def initial_noise(sample_keys: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """x_T ~ N(0, I), one draw per sample key: ``(B,) + shape``."""
  init_keys, _ = _split_sample_keys(sample_keys)
  return jax.vmap(lambda k: jax.random.normal(k, tuple(shape), dtype))(init_keys)


def ddim_sample_with_keys(
  denoise_fn: DenoiseFn,
  params: Any,
  cond: jax.Array,
  sample_keys: jax.Array,
  schedule: Schedule,
  *,
  shape: Sequence[int],
  num_steps: int = 100,
  eta: float | jax.Array = 0.0,
  cfg_scale: float | jax.Array = 3.0,
) -> jax.Array:
  """Runs the DDIM reverse process from explicit per-sample keys.

  Sample i depends only on ``sample_keys[i]``, ``cond[i]``, the parameters and
  the scalars, never on the batch it shares, so cohorts can be generated in
  any batch size or shard layout (and resumed) with the same samples.

  Jit-able as a whole with ``shape`` and ``num_steps`` static; ``eta`` and
  ``cfg_scale`` may be traced.

  Args:
    denoise_fn: ``eps = denoise_fn(params, x, t, cond, drop)``.
    params: the denoiser's parameters.
    cond: ``(B, C)`` conditioning vectors.
    sample_keys: ``(B, 2)`` raw uint32 keys or ``(B,)`` typed keys.
    schedule: the noise schedule the denoiser was trained with.
    shape: the shape of ONE sample, e.g. ``(4, 128)``; the batch size is B.
    num_steps: number of DDIM steps (the length of tau, DDIM sec. 4.2).
    eta: 0 for deterministic DDIM, 1 for DDPM-like ancestral sampling.
    cfg_scale: classifier-free guidance weight w.

  Returns:
    ``(B,) + shape`` float32 samples x_0.
  """
  batch = cond.shape[0]
  if sample_keys.shape[0] != batch:
    raise ValueError(f"got {sample_keys.shape[0]} sample keys for a batch of {batch} conditions")
  shape = tuple(shape)
  ts, t_prevs = ddim_timesteps(schedule.num_timesteps, num_steps)
  steps = np.arange(num_steps, dtype=np.int32)
  eta = jnp.asarray(eta, jnp.float32)
  x_T = initial_noise(sample_keys, shape)
  _, step_keys = _split_sample_keys(sample_keys)

  def step_noise(step):
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape, jnp.float32))(
      step_keys
    )

  def body(x, inputs):
    step, t, t_prev = inputs
    eps = cfg_eps(denoise_fn, params, x, t, cond, cfg_scale)
    # Noise only matters when eta > 0; skip drawing it otherwise.
    noise = lax.cond(eta > 0, step_noise, lambda _: jnp.zeros_like(x), step)
    return ddim_step(schedule, eps, t, t_prev, x, eta, noise), None

  x0, _ = lax.scan(body, x_T, (jnp.asarray(steps), jnp.asarray(ts), jnp.asarray(t_prevs)))
  return x0


def sample_keys_for(key: jax.Array, n: int, start: int = 0) -> jax.Array:
  """Keys for samples ``start .. start + n - 1`` of the stream named by key."""
  idx = jnp.arange(start, start + n, dtype=jnp.uint32)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)


def ddim_sample(
  denoise_fn: DenoiseFn,
  params: Any,
  cond: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  *,
  shape: Sequence[int],
  num_steps: int = 100,
  eta: float | jax.Array = 0.0,
  cfg_scale: float | jax.Array = 3.0,
) -> jax.Array:
  """`ddim_sample_with_keys` with ``sample_keys[i] = fold_in(key, i)``.

  Folding in the sample index makes sample i the same whatever B is (the
  first 4 samples of a batch of 8 equal a batch of 4 drawn from the same key)
  by construction, not by a property of ``jax.random.split`` that depends on
  the ``jax_threefry_partitionable`` setting.
  """
  sample_keys = sample_keys_for(key, cond.shape[0])
  return ddim_sample_with_keys(
    denoise_fn,
    params,
    cond,
    sample_keys,
    schedule,
    shape=shape,
    num_steps=num_steps,
    eta=eta,
    cfg_scale=cfg_scale,
  )


def make_sharded_sampler(
  denoise_fn: DenoiseFn, schedule: Schedule, mesh: Mesh, *, shape: Sequence[int], num_steps: int
):
  """A jitted ``(params, cond, sample_keys, cfg_scale, eta) -> x0``.

  Data parallel over the mesh axis ``'data'``: ``cond``, ``sample_keys`` and
  the output are sharded ``P('data')`` along the batch, ``params`` and the two
  scalars are replicated ``P()``. The batch size must be a multiple of the
  mesh's ``'data'`` size (jit raises an ``IndivisibleError`` naming the shape
  otherwise). With `cfg_eps`'s interleaved doubling the compiled sampler has
  no cross-device collectives at all. Because every sample owns its keys, the
  result equals the unsharded `ddim_sample_with_keys` for the same keys.
  """
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())

  def sample(params, cond, sample_keys, cfg_scale, eta):
    return ddim_sample_with_keys(
      denoise_fn,
      params,
      cond,
      sample_keys,
      schedule,
      shape=shape,
      num_steps=num_steps,
      eta=eta,
      cfg_scale=cfg_scale,
    )

  return jax.jit(
    sample, in_shardings=(replicated, data, data, replicated, replicated), out_shardings=data
  )
