"""The train state: one pytree, so jit, sharding and orbax treat it as a whole."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  """step, params, optimiser state, and the optional EMA weights and BN statistics.

  `ema_params` and `batch_stats` are None for models that do not use them;
  None is an empty pytree, so the same step and checkpoint code serves all.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None
  batch_stats: Any = None

  @classmethod
  def create(
    cls, params, tx: optax.GradientTransformation, *, ema: bool = False, batch_stats=None
  ) -> TrainState:
    return cls(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params) if ema else None,
      batch_stats=batch_stats,
    )

  def apply_gradients(
    self, grads, tx: optax.GradientTransformation, *, ema_decay=None, batch_stats=None
  ) -> TrainState:
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if ema is not None:
      ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
    return self.replace(
      step=self.step + 1,
      params=params,
      opt_state=opt_state,
      ema_params=ema,
      batch_stats=self.batch_stats if batch_stats is None else batch_stats,
    )


def adamw(learning_rate, weight_decay: float, grad_clip: float | None = 1.0):
  """AdamW with optional global-norm clipping (diffusion and VAE training)."""
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
  parts.append(optax.adamw(learning_rate, weight_decay=weight_decay))
  return optax.chain(*parts)
