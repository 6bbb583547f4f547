"""Condition embeddings for the latent denoiser (docs/design.md §3).

The generator's condition is the 76-dim vector concat(71 multi-hot SCP labels,
5 z-scored demographics). Two ways to embed it are offered:

- `linear`: one MLP over the whole vector.
- `nle` (SSSD-ECG-nle, Skorik et al., section IV-C): every label k has two
  learned embeddings, one for "absent" and one for "present"; the 71 selected
  embeddings are folded into one by a learned 1x1 convolution over the label
  axis. An absent label then contributes something too, which is the paper's
  point: the model learns what a *normal* finding looks like.

Both carry a separate learned null embedding used where the condition is
dropped for classifier-free guidance. SSSD-ECG-nle has no such entry (it is not
trained with condition dropout); it is added here because the generator is.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

NUM_LABELS = 71
NUM_DEMOGRAPHICS = 5
COND_DIM = NUM_LABELS + NUM_DEMOGRAPHICS
COND_EMBEDDINGS = ("linear", "nle")


def check_cond(cond) -> np.ndarray:
  """`cond` as a finite (n, 76) float32 host array, or a ConfigError saying what is wrong."""
  from ecgjax.errors import ConfigError

  cond = np.asarray(cond)
  if cond.ndim != 2 or cond.shape[1] != COND_DIM:
    raise ConfigError(
      f"cond has shape {cond.shape}; a generator takes (n, {COND_DIM}) "
      f"conditioning vectors (71 labels + 5 demographics)"
    )
  if not np.isfinite(cond).all():
    raise ConfigError("cond contains non-finite values")
  return cond.astype(np.float32)


def split_cond(cond):
  """(B, 76) -> labels (B, 71), demographics (B, 5)."""
  if cond.shape[-1] != COND_DIM:
    raise ValueError(
      f"cond must have {COND_DIM} features (71 labels + 5 demographics), got shape {cond.shape}"
    )
  return cond[..., :NUM_LABELS], cond[..., NUM_LABELS:]


class LinearCondEmbedding(nn.Module):
  """Labels and demographics together through a two-layer MLP -> (B, dim)."""

  dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, cond):
    split_cond(cond)  # shape check only
    h = nn.Dense(self.dim, dtype=self.dtype, name="dense0")(cond)
    return nn.Dense(self.dim, dtype=self.dtype, name="dense1")(nn.silu(h))


class NLECondEmbedding(nn.Module):
  """SSSD-ECG-nle label table (71, 2, dim) folded over labels, plus demographics.

  Selection is written as e[k, 0] + y_k (e[k, 1] - e[k, 0]): for 0/1 labels it is
  exactly the table lookup, and it needs no gather (a plain fused
  multiply-add on accelerators).
  """

  dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, cond):
    labels, demo = split_cond(cond)
    table = self.param("label_table", nn.initializers.normal(1.0), (NUM_LABELS, 2, self.dim))
    table = table.astype(self.dtype)
    y = labels.astype(self.dtype)[..., None]  # (B, 71, 1)
    per_label = table[None, :, 0] + y * (table[None, :, 1] - table[None, :, 0])
    # 1x1 conv folding the 71 label channels into one: (B, dim, 71) -> (B, dim).
    folded = nn.Dense(1, dtype=self.dtype, name="label_fold")(jnp.swapaxes(per_label, 1, 2))[..., 0]
    return folded + nn.Dense(self.dim, dtype=self.dtype, name="demo_proj")(demo)


class ConditionEmbedding(nn.Module):
  """Condition -> (B, dim), with a learned null condition where `drop` is True."""

  dim: int
  kind: str = "linear"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, cond, drop: jnp.ndarray | None = None):
    if self.kind == "linear":
      emb = LinearCondEmbedding(self.dim, self.dtype, name="linear")(cond)
    elif self.kind == "nle":
      emb = NLECondEmbedding(self.dim, self.dtype, name="nle")(cond)
    else:
      raise ValueError(f"unknown cond_embedding {self.kind!r}; expected one of {COND_EMBEDDINGS}")
    null = self.param("null_embedding", nn.initializers.normal(1.0), (self.dim,))
    if drop is None:
      return emb
    # Select rather than mask-multiply: a dropped row's value then does not
    # depend on cond at all.
    return jnp.where(jnp.asarray(drop, bool)[:, None], null.astype(emb.dtype)[None, :], emb)
