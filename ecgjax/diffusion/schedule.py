"""Noise schedules for the latent diffusion model and the forward process.

The forward (noising) process of DDPM (Ho et al. 2020) in the notation of DDIM
(Song et al. 2021, eq. 4), where ``alpha_t`` there is the *cumulative* product
called ``alphas_cumprod`` here:

    x_t = sqrt(alphas_cumprod[t]) * x_0 + sqrt(1 - alphas_cumprod[t]) * eps.

Timesteps are 0-based, ``t`` in ``[0, T)``; ``alphas_cumprod[0] = 1 - betas[0]``
is the least noisy level, and the sampler's final step goes to a virtual
``t = -1`` with ``alphas_cumprod = 1`` (clean data).

Schedules are computed in float64 with numpy and stored as float32 jnp arrays,
so that the cumulative product of 1000 factors does not lose precision.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """A discrete noise schedule of length ``T``; a pytree of float32 arrays.

  A NamedTuple, so it can be passed through ``jax.jit``/``lax.scan`` as an
  argument or closed over as a constant.
  """

  betas: jax.Array  # (T,) per-step noise variances beta_t
  alphas_cumprod: jax.Array  # (T,) prod_{s<=t} (1 - beta_s); "alpha_t" in DDIM
  sqrt_alphas_cumprod: jax.Array  # (T,)
  sqrt_one_minus_alphas_cumprod: jax.Array  # (T,)

  @property
  def num_timesteps(self) -> int:
    """T, static even under tracing (it is a shape)."""
    return self.betas.shape[0]


def schedule_from_betas(betas) -> Schedule:
  """Builds a `Schedule` from a 1-D array of betas in (0, 1)."""
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
  if not np.all((betas > 0) & (betas < 1)):
    raise ValueError("every beta must lie in (0, 1)")
  alphas_cumprod = np.cumprod(1.0 - betas)
  f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
  return Schedule(
    betas=f32(betas),
    alphas_cumprod=f32(alphas_cumprod),
    sqrt_alphas_cumprod=f32(np.sqrt(alphas_cumprod)),
    sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - alphas_cumprod)),
  )


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Schedule:
  """The DDPM linear schedule (Ho et al. 2020, sec. 4): betas evenly spaced."""
  if T < 1:
    raise ValueError(f"T must be >= 1, got {T}")
  if not 0 < beta_start <= beta_end < 1:
    raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
  return schedule_from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
  """The cosine schedule of Nichol & Dhariwal 2021 (eq. 17).

  alphas_cumprod follows cos^2(((t/T + s) / (1 + s)) * pi/2); betas are
  clipped at ``max_beta`` so the last steps stay finite.
  """
  if T < 1:
    raise ValueError(f"T must be >= 1, got {T}")
  f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
  betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(T)]
  return schedule_from_betas(np.asarray(betas, dtype=np.float64))


def broadcast_to_batch(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-sample ``(B,)`` (or scalar) value to broadcast against x."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """Draws x_t ~ q(x_t | x_0) by reparameterisation (DDIM eq. 4).

  Args:
    schedule: the noise schedule.
    x0: clean data, ``(B, ...)``.
    t: integer timesteps in ``[0, T)``, shape ``(B,)`` or scalar.
    noise: standard normal noise with the shape of ``x0``.
  """
  a = broadcast_to_batch(schedule.sqrt_alphas_cumprod[t], x0)
  s = broadcast_to_batch(schedule.sqrt_one_minus_alphas_cumprod[t], x0)
  return (a * x0 + s * noise).astype(x0.dtype)
