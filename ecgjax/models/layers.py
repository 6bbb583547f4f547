"""Small 1-D building blocks shared by the generator's VAE and U-Net.

Everything here is channels-last, (B, L, C): that is the layout XLA's
convolutions want on CPU, GPU and TPU, so transposes happen once at a model's
boundary and never inside it.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any


def count_params(tree) -> int:
  """Total number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))


def num_groups(channels: int, max_groups: int = 32) -> int:
  """Largest group count <= max_groups that divides `channels`.

  Lets tiny test widths (8, 12, ...) share code with the paper's 32 groups.
  """
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1


@jax.custom_jvp
def computed_once(x):
  """Identity that XLA's CPU fusion computes once instead of inlining into every consumer.

  A divide counts as expensive there, so its producer is not duplicated into
  each element of a larger consumer; x / (x * 0 + 1) == x exactly for finite x
  (XLA does not fold x * 0 for floats). The derivative is the identity.
  """
  return x / (x * 0 + 1)


computed_once.defjvp(lambda primals, tangents: (computed_once(primals[0]), tangents[0]))


class GroupNorm1D(nn.Module):
  """GroupNorm over (B, L, C), optionally followed by a FiLM scale-shift and SiLU.

  The same function and parameters (`scale`, `bias`; epsilon 1e-6) as
  `flax.linen.GroupNorm`, computed in an order XLA's CPU backend runs fast:
  per-channel sums over the length first (a reduction vectorised across C),
  then the few channels of each group; mean, 1/std, the affine parameters and
  the FiLM modulation are folded into one per-(sample, channel) scale and
  shift, so the full-size work is one multiply-add (and SiLU) per element.
  flax's module reduces over (L, C/G) at once and broadcasts the group
  statistics back per element, which made GroupNorm + SiLU half of the
  U-Net's forward time (the per-channel terms are computed once: `computed_once`).
  Statistics are float32 whatever the compute dtype;
  variance is E[x^2] - E[x]^2, as flax's default.
  """

  num_groups: int
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, film_scale=None, film_shift=None, silu: bool = False):
    c = x.shape[-1]
    g = self.num_groups
    gamma = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    beta = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    xf = x.astype(jnp.float32)
    b = x.shape[0]
    sums = jnp.stack([jnp.mean(xf, axis=1), jnp.mean(jnp.square(xf), axis=1)])  # (2, B, C)
    mean, msq = jnp.mean(sums.reshape(2, b, g, c // g), axis=-1)  # (B, G) each
    var = jnp.maximum(msq - jnp.square(mean), 0.0)
    rstd = jnp.repeat(lax.rsqrt(var + self.epsilon), c // g, axis=-1)  # (B, C)
    mul = gamma * rstd
    add = beta - jnp.repeat(mean, c // g, axis=-1) * mul
    if film_scale is not None:
      film = 1.0 + film_scale.astype(jnp.float32)
      mul, add = mul * film, add * film + film_shift.astype(jnp.float32)
    # Without computed_once, XLA fuses the (B, C) arithmetic above, group repeats
    # included, into the per-element loop below and redoes it for every element.
    mul, add = computed_once(jnp.stack([mul, add]))
    y = xf * mul[:, None, :] + add[:, None, :]
    return (nn.silu(y) if silu else y).astype(self.dtype)


def group_norm(channels: int, name: str | None = None, dtype: Dtype = jnp.float32) -> GroupNorm1D:
  return GroupNorm1D(num_groups=num_groups(channels), epsilon=1e-6, dtype=dtype, name=name)


class ResBlock1D(nn.Module):
  """GroupNorm-SiLU-Conv twice with a residual path.

  When `emb` is given (time + condition embedding of the denoiser) it modulates
  the second normalisation as a FiLM scale and shift (ADM's scale-shift norm),
  so the condition acts on every block.
  """

  features: int
  kernel_size: int = 3
  zero_init_last: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb=None):
    k = (self.kernel_size,)
    h = group_norm(x.shape[-1], "norm1", self.dtype)(x, silu=True)
    h = nn.Conv(self.features, k, padding="SAME", dtype=self.dtype, name="conv1")(h)
    scale = shift = None
    if emb is not None:
      ss = nn.Dense(2 * self.features, dtype=self.dtype, name="emb_proj")(nn.silu(emb))
      scale, shift = jnp.split(ss, 2, axis=-1)
    h = group_norm(self.features, "norm2", self.dtype)(h, scale, shift, silu=True)
    last_init = nn.initializers.zeros if self.zero_init_last else nn.linear.default_kernel_init
    h = nn.Conv(
      self.features, k, padding="SAME", kernel_init=last_init, dtype=self.dtype, name="conv2"
    )(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1,), dtype=self.dtype, name="skip")(x)
    return x + h


class Downsample1D(nn.Module):
  """Stride-2 convolution: halves the length (learned, unlike pooling)."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Conv(
      self.features,
      (self.kernel_size,),
      strides=(2,),
      padding="SAME",
      dtype=self.dtype,
      name="conv",
    )(x)


class Upsample1D(nn.Module):
  """Nearest-neighbour x2 then a convolution (no transposed-conv artefacts)."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(x, 2, axis=1)
    return nn.Conv(
      self.features, (self.kernel_size,), padding="SAME", dtype=self.dtype, name="conv"
    )(x)


class SelfAttention1D(nn.Module):
  """Pre-norm multi-head self-attention over the length axis, residual.

  Used only at the lowest resolution, where global context (rhythm over the
  whole 10 s record) is cheap to get.
  """

  num_heads: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = group_norm(c, "norm", self.dtype)(x)
    # The softmax in float32 under a bf16 compute dtype (no change in float32).
    h = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      qkv_features=c,
      out_features=c,
      dtype=self.dtype,
      force_fp32_for_softmax=True,
      name="attn",
    )(h, h)
    return x + h


def sinusoidal_embedding(t, dim: int, max_period: float = 10_000.0):
  """Transformer-style embedding of a (possibly fractional) timestep, (B, dim).

  Integer and float timesteps go through the same float path, so a sampler may
  pass either.
  """
  t = jnp.asarray(t).astype(jnp.float32).reshape(-1)
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb
