"""1-D U-Net noise predictor in the VAE's (4, 128) latent space (docs/design.md §3).

eps = UNet(x_t, t, cond, drop). The timestep and the 76-dim condition are
embedded, summed, and injected into every residual block as a FiLM scale and
shift. `drop` (classifier-free guidance) swaps the condition embedding for a
learned null embedding per sample, so training with condition dropout and
guided sampling use the same module.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ecgjax.models.embeddings import ConditionEmbedding
from ecgjax.models.layers import (
  Downsample1D,
  ResBlock1D,
  SelfAttention1D,
  Upsample1D,
  group_norm,
  sinusoidal_embedding,
)

# Paper size with the `linear` condition embedding: 5,354,356 parameters
# (paper: 5.36M). Latent length 128 -> 64 -> 32, attention at 32; the
# embedding width is what brings the count to the paper's.
UNET_PAPER = dict(
  channels=(64, 128, 192),
  num_res_blocks=2,
  attention_levels=(2,),
  num_heads=4,
  latent_channels=4,
  kernel_size=3,
  cond_embedding="linear",
  emb_dim=240,
)
# Tiny widths for CPU tests and the `mini` preset.
UNET_MINI = dict(
  channels=(16, 32),
  num_res_blocks=1,
  attention_levels=(1,),
  num_heads=2,
  latent_channels=4,
  kernel_size=3,
  cond_embedding="linear",
  emb_dim=64,
)


class UNet(nn.Module):
  """Latent denoiser. Leads-first (B, C, L) at the boundary, (B, L, C) inside.

  Levels i = 0..len(channels)-1 run at length 128 / 2**i; `attention_levels`
  names the levels with self-attention (the middle block always has it).
  """

  channels: Sequence[int] = UNET_PAPER["channels"]
  num_res_blocks: int = UNET_PAPER["num_res_blocks"]
  attention_levels: Sequence[int] = UNET_PAPER["attention_levels"]
  num_heads: int = UNET_PAPER["num_heads"]
  latent_channels: int = UNET_PAPER["latent_channels"]
  kernel_size: int = UNET_PAPER["kernel_size"]
  cond_embedding: str = UNET_PAPER["cond_embedding"]
  emb_dim: int | None = UNET_PAPER["emb_dim"]  # None: 4 * channels[0]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, t, cond, drop=None):
    """x (B, 4, L) noisy latent, t (B,) int or float timesteps, cond (B, 76),
    drop (B,) bool: True uses the null condition. Returns eps (B, 4, L)."""
    b, c, length = x.shape
    if c != self.latent_channels:
      raise ValueError(f"UNet expects x of shape (B, {self.latent_channels}, L), got {x.shape}")
    levels = len(self.channels)
    if length % 2 ** (levels - 1):
      raise ValueError(
        f"latent length {length} is not divisible by {2 ** (levels - 1)} ({levels} U-Net levels)"
      )
    k, dt = self.kernel_size, self.dtype
    ch0 = self.channels[0]
    emb_dim = self.emb_dim or 4 * ch0

    t = jnp.broadcast_to(jnp.asarray(t), (b,))
    temb = sinusoidal_embedding(t, ch0).astype(dt)
    temb = nn.Dense(emb_dim, dtype=dt, name="time_dense0")(temb)
    temb = nn.Dense(emb_dim, dtype=dt, name="time_dense1")(nn.silu(temb))
    cemb = ConditionEmbedding(emb_dim, self.cond_embedding, dt, name="cond_embed")(
      cond.astype(dt), drop
    )
    emb = temb + cemb

    h = nn.Conv(ch0, (k,), padding="SAME", dtype=dt, name="conv_in")(
      jnp.swapaxes(x, 1, 2).astype(dt)
    )
    skips = [h]
    for i, ch in enumerate(self.channels):
      for j in range(self.num_res_blocks):
        h = ResBlock1D(ch, k, zero_init_last=True, dtype=dt, name=f"down{i}_res{j}")(h, emb)
        if i in self.attention_levels:
          h = SelfAttention1D(self.num_heads, dt, name=f"down{i}_attn{j}")(h)
        skips.append(h)
      if i < levels - 1:
        h = Downsample1D(ch, k, dt, name=f"down{i}_sample")(h)
        skips.append(h)

    ch = self.channels[-1]
    h = ResBlock1D(ch, k, zero_init_last=True, dtype=dt, name="mid_res0")(h, emb)
    h = SelfAttention1D(self.num_heads, dt, name="mid_attn")(h)
    h = ResBlock1D(ch, k, zero_init_last=True, dtype=dt, name="mid_res1")(h, emb)

    for i in reversed(range(levels)):
      ch = self.channels[i]
      # One more block than on the way down: it consumes the skip taken
      # before the downsampling (or after conv_in at level 0).
      for j in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = ResBlock1D(ch, k, zero_init_last=True, dtype=dt, name=f"up{i}_res{j}")(h, emb)
        if i in self.attention_levels:
          h = SelfAttention1D(self.num_heads, dt, name=f"up{i}_attn{j}")(h)
      if i > 0:
        h = Upsample1D(ch, k, dt, name=f"up{i}_sample")(h)
    assert not skips

    h = nn.silu(group_norm(ch0, "norm_out", dt)(h))
    # Zero init: the untrained model predicts eps = 0, a stable start.
    h = nn.Conv(
      self.latent_channels,
      (k,),
      padding="SAME",
      kernel_init=nn.initializers.zeros,
      dtype=dt,
      name="conv_out",
    )(h)
    return jnp.swapaxes(h, 1, 2).astype(jnp.float32)
