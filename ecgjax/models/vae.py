"""1-D KL-regularised VAE: (12, 1000) ECG <-> (4, 128) latent (docs/design.md §3).

The generator's first stage: trained once, then frozen; the denoiser works in
its latent space. Leads-first (B, 12, 1000) at the public boundary, matching the
dataset; channels-last inside. The record is zero-padded 1000 -> 1024 so three
stride-2 downsamplings land exactly on 128, and cropped back on decode.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models.layers import Downsample1D, ResBlock1D, SelfAttention1D, Upsample1D, group_norm

NUM_LEADS = 12
SIGNAL_LEN = 1000
PADDED_LEN = 1024
# 1000 -> 1024: 12 samples of padding on each side, so both record ends see the
# same border effect.
_PAD_LEFT = (PADDED_LEN - SIGNAL_LEN) // 2
_PAD_RIGHT = PADDED_LEN - SIGNAL_LEN - _PAD_LEFT
# Same clamp as the latent-diffusion autoencoders: keeps exp(logvar) finite
# early in training.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

# Paper size: 4,704,084 parameters (paper: 4.71M). Widths chosen to hit that
# count with one residual block per level and attention in the middle.
VAE_PAPER = dict(
  channels=(64, 160, 224, 256),
  num_res_blocks=1,
  latent_channels=4,
  kernel_size=3,
  mid_attention=True,
  num_heads=4,
)
# Tiny widths for CPU tests and the `mini` preset.
VAE_MINI = dict(
  channels=(8, 16, 16, 16),
  num_res_blocks=1,
  latent_channels=4,
  kernel_size=3,
  mid_attention=False,
  num_heads=1,
)


class Encoder1D(nn.Module):
  """(B, 1024, 12) -> (B, 128, 2 * latent_channels): mean and logvar."""

  channels: Sequence[int]
  num_res_blocks: int
  latent_channels: int
  kernel_size: int
  mid_attention: bool
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, dt = self.kernel_size, self.dtype
    h = nn.Conv(self.channels[0], (k,), padding="SAME", dtype=dt, name="conv_in")(x)
    for i, ch in enumerate(self.channels):
      for j in range(self.num_res_blocks):
        h = ResBlock1D(ch, k, dtype=dt, name=f"down{i}_res{j}")(h)
      if i < len(self.channels) - 1:
        h = Downsample1D(ch, k, dtype=dt, name=f"down{i}_sample")(h)
    ch = self.channels[-1]
    h = ResBlock1D(ch, k, dtype=dt, name="mid_res0")(h)
    if self.mid_attention:
      h = SelfAttention1D(self.num_heads, dtype=dt, name="mid_attn")(h)
    h = ResBlock1D(ch, k, dtype=dt, name="mid_res1")(h)
    h = nn.silu(group_norm(ch, "norm_out", dt)(h))
    return nn.Conv(2 * self.latent_channels, (k,), padding="SAME", dtype=dt, name="conv_out")(h)


class Decoder1D(nn.Module):
  """(B, 128, latent_channels) -> (B, 1024, 12), mirror of the encoder."""

  channels: Sequence[int]
  num_res_blocks: int
  kernel_size: int
  mid_attention: bool
  num_heads: int
  out_channels: int = NUM_LEADS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    k, dt = self.kernel_size, self.dtype
    ch = self.channels[-1]
    h = nn.Conv(ch, (k,), padding="SAME", dtype=dt, name="conv_in")(z)
    h = ResBlock1D(ch, k, dtype=dt, name="mid_res0")(h)
    if self.mid_attention:
      h = SelfAttention1D(self.num_heads, dtype=dt, name="mid_attn")(h)
    h = ResBlock1D(ch, k, dtype=dt, name="mid_res1")(h)
    for i in reversed(range(len(self.channels))):
      ch = self.channels[i]
      for j in range(self.num_res_blocks):
        h = ResBlock1D(ch, k, dtype=dt, name=f"up{i}_res{j}")(h)
      if i > 0:
        h = Upsample1D(ch, k, dtype=dt, name=f"up{i}_sample")(h)
    h = nn.silu(group_norm(ch, "norm_out", dt)(h))
    return nn.Conv(self.out_channels, (k,), padding="SAME", dtype=dt, name="conv_out")(h)


class VAE(nn.Module):
  """KL-regularised 1-D autoencoder with a (4, 128) latent.

  Pure: sampling takes an explicit key, so `apply` needs no rng collections.
  GroupNorm only, so there is no `batch_stats` state to carry.
  """

  channels: Sequence[int] = VAE_PAPER["channels"]
  num_res_blocks: int = VAE_PAPER["num_res_blocks"]
  latent_channels: int = VAE_PAPER["latent_channels"]
  kernel_size: int = VAE_PAPER["kernel_size"]
  mid_attention: bool = VAE_PAPER["mid_attention"]
  num_heads: int = VAE_PAPER["num_heads"]
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    common = dict(
      channels=tuple(self.channels),
      num_res_blocks=self.num_res_blocks,
      kernel_size=self.kernel_size,
      mid_attention=self.mid_attention,
      num_heads=self.num_heads,
      dtype=self.dtype,
    )
    self.encoder = Encoder1D(latent_channels=self.latent_channels, **common)
    self.decoder = Decoder1D(**common)

  @property
  def latent_length(self) -> int:
    return PADDED_LEN // 2 ** (len(self.channels) - 1)

  def encode(self, x):
    """(B, 12, 1000) -> mean, logvar, each (B, latent_channels, 128)."""
    if x.shape[1:] != (NUM_LEADS, SIGNAL_LEN):
      raise ValueError(f"VAE.encode expects (B, {NUM_LEADS}, {SIGNAL_LEN}), got {x.shape}")
    h = jnp.swapaxes(x, 1, 2)
    h = jnp.pad(h, ((0, 0), (_PAD_LEFT, _PAD_RIGHT), (0, 0)))
    moments = self.encoder(h).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    logvar = jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)
    return jnp.swapaxes(mean, 1, 2), jnp.swapaxes(logvar, 1, 2)

  def decode(self, z):
    """(B, latent_channels, 128) -> (B, 12, 1000)."""
    h = self.decoder(jnp.swapaxes(z, 1, 2)).astype(jnp.float32)
    h = h[:, _PAD_LEFT : _PAD_LEFT + SIGNAL_LEN]
    return jnp.swapaxes(h, 1, 2)

  def __call__(self, x, *, sample_key: jax.Array | None = None):
    """Returns (recon, mean, logvar); samples z only when given a key."""
    mean, logvar = self.encode(x)
    z = mean
    if sample_key is not None:
      z = sample_latent(sample_key, mean, logvar)
    return self.decode(z), mean, logvar


def sample_latent(key, mean, logvar):
  """Reparameterised draw z = mean + sigma * eps."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def kl_divergence(mean, logvar):
  """KL(q(z|x) || N(0, I)) per sample, summed over latent dims, (B,)."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)
