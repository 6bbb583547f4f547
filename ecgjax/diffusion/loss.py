"""The denoiser's training objective: epsilon-prediction with condition dropout.

This is the "simple" loss of Ho et al. 2020 (eq. 14), which is also the
objective DDIM assumes for its sampler (Song et al. 2021, eq. 5 with unit
weights), plus classifier-free guidance training (Ho & Salimans 2022): each
sample's condition is replaced by the learned null condition with probability
``p_uncond``, so the same network learns eps(x_t, c) and eps(x_t, null).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ecgjax.diffusion.schedule import Schedule, broadcast_to_batch, q_sample

# eps = denoise_fn(params, x, t, cond, drop); x (B, ...), t (B,) int32,
# cond (B, C), drop (B,) bool (True: use the null condition).
DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


PREDICTIONS = ("eps", "v")


def prediction_target(schedule: Schedule, x0, t, noise, prediction: str):
  """What the network regresses: the noise eps, or v = sqrt(a) eps - sqrt(1 - a) x0.

  v-prediction (Salimans & Ho 2022) keeps the implied x0 well conditioned at
  the terminal timesteps, where eps-prediction divides its error by
  sqrt(a_t) ~ 0.006 and a small network's samples blow up.
  """
  if prediction == "eps":
    return noise
  if prediction == "v":
    sa = broadcast_to_batch(schedule.sqrt_alphas_cumprod[t], x0)
    s1m = broadcast_to_batch(schedule.sqrt_one_minus_alphas_cumprod[t], x0)
    return sa * noise - s1m * x0
  raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def eps_from_prediction(schedule: Schedule, out, x_t, t, prediction: str):
  """The network's output as an eps prediction, for the DDIM sampler and CFG.

  eps = sqrt(1 - a) x_t + sqrt(a) v is affine in v with the same x_t for the
  conditional and unconditional branches, so CFG on eps equals CFG on v.
  """
  if prediction == "eps":
    return out
  if prediction == "v":
    t = jnp.broadcast_to(jnp.asarray(t), (x_t.shape[0],))
    sa = broadcast_to_batch(schedule.sqrt_alphas_cumprod[t], x_t)
    s1m = broadcast_to_batch(schedule.sqrt_one_minus_alphas_cumprod[t], x_t)
    return s1m * x_t.astype(jnp.float32) + sa * out.astype(jnp.float32)
  raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def diffusion_loss(
  denoise_fn: DenoiseFn,
  params: Any,
  x0: jax.Array,
  cond: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  p_uncond: float = 0.1,
  prediction: str = "eps",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean squared error between the denoiser's eps and the true noise.

  Pure and jit-able; differentiate with
  ``jax.value_and_grad(diffusion_loss, argnums=1, has_aux=True)``.

  Randomness, in this order (a fixed convention, so a key reproduces a batch):
  ``k_t, k_noise, k_drop = jax.random.split(key, 3)``;
  t ~ Uniform{0, ..., T-1} per sample from ``k_t``, noise ~ N(0, I) with the
  shape of x0 from ``k_noise``, drop ~ Bernoulli(p_uncond) per sample from
  ``k_drop``.

  Args:
    denoise_fn: ``eps = denoise_fn(params, x_t, t, cond, drop)``.
    params: the denoiser's parameters (any pytree).
    x0: clean latents, ``(B, ...)``.
    cond: conditioning vectors, ``(B, C)``.
    key: a PRNG key.
    schedule: the noise schedule.
    p_uncond: probability of dropping a sample's condition (may be traced).

  Returns:
    ``(loss, aux)``: the scalar float32 loss (mean over batch and elements) and
    a dict with the per-sample ``mse`` (B,), the drawn ``t`` (B,) and ``drop``
    (B,), and ``drop_frac`` (scalar).
  """
  batch = x0.shape[0]
  k_t, k_noise, k_drop = jax.random.split(key, 3)
  t = jax.random.randint(k_t, (batch,), 0, schedule.num_timesteps, dtype=jnp.int32)
  noise = jax.random.normal(k_noise, x0.shape, dtype=x0.dtype)
  drop = jax.random.bernoulli(k_drop, p_uncond, (batch,))
  x_t = q_sample(schedule, x0, t, noise)
  out = denoise_fn(params, x_t, t, cond, drop)
  target = prediction_target(schedule, x0, t, noise, prediction)
  # The loss is reduced in float32 whatever the denoiser's compute dtype.
  err = jnp.square(out.astype(jnp.float32) - target.astype(jnp.float32))
  mse = jnp.mean(err.reshape(batch, -1), axis=1)
  loss = jnp.mean(mse)
  aux = {"mse": mse, "t": t, "drop": drop, "drop_frac": jnp.mean(drop.astype(jnp.float32))}
  return loss, aux
