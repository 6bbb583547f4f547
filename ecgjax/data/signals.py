"""Per-lead standardisation of (N, 12, T) signals, and the limb leads' identities.

The generator's VAE and the classifiers see `standardise(x, mean, std)` with
the per-lead statistics of their training signals; the generator maps its
output back with `destandardise`.

The six limb leads (I, II, III, aVR, aVL, aVF) are fixed combinations of two:
Einthoven's law III = II - I and Goldberger's definitions aVR = -(I + II)/2,
aVL = I - II/2, aVF = II - I/2. `limb_residuals` measures how far signals are
from that; `project_limb_leads` moves the six limb leads to the nearest (least
squares) point of the two-dimensional subspace where all four identities hold.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

STD_FLOOR = 1e-6  # a flat lead (all zeros) must not divide by zero


def lead_stats(signals, rows=None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """Per-lead mean and std (12,) float32 over `signals[rows]` (default: all rows).

  Accumulates in float64 over chunks of rows, so a large memmap is never read
  whole.
  """
  rows = np.arange(len(signals)) if rows is None else np.asarray(rows)
  if rows.size == 0:
    raise ValueError("lead_stats: no rows")
  total = np.zeros(signals.shape[1])
  total_sq = np.zeros(signals.shape[1])
  for start in range(0, rows.size, chunk):
    block = np.asarray(signals[rows[start : start + chunk]], dtype=np.float64)
    total += block.sum(axis=(0, 2))
    total_sq += (block**2).sum(axis=(0, 2))
  count = rows.size * signals.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0)) + STD_FLOOR
  return mean.astype(np.float32), std.astype(np.float32)


def standardise(x, mean, std):
  """(x - mean) / std per lead; x is (..., 12, T), numpy or jax."""
  return (x - mean[:, None]) / std[:, None]


def destandardise(x, mean, std):
  """The inverse of `standardise`."""
  return x * std[:, None] + mean[:, None]


# Limb leads (I, II, III, aVR, aVL, aVF) from (I, II): the identities as a 6 x 2 matrix.
LIMB_FROM_I_II = np.array(
  [[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]], np.float64
)
# The orthogonal projector onto that matrix's column space: A (A^T A)^-1 A^T (6 x 6).
LIMB_PROJECTOR = LIMB_FROM_I_II @ np.linalg.solve(
  LIMB_FROM_I_II.T @ LIMB_FROM_I_II, LIMB_FROM_I_II.T
)


def project_limb_leads(x):
  """(..., 12, T) signals with the six limb leads replaced by their least-squares projection
  onto the subspace where Einthoven's and Goldberger's identities hold (each time sample
  separately); the precordial leads are unchanged. numpy or jax in, jax out."""
  x = jnp.asarray(x)
  p = jnp.asarray(LIMB_PROJECTOR, x.dtype)
  limb = jnp.einsum("ij,...jt->...it", p, x[..., :6, :])
  return jnp.concatenate([limb, x[..., 6:, :]], axis=-2)


def limb_residuals(signals) -> dict[str, np.ndarray]:
  """Per record, each identity's residual relative to the limb leads' mean amplitude:
  mean_t |residual| / mean_{lead, t} |limb lead|, for 'einthoven' (I + III - II) and
  'avr' (aVR + (I + II)/2), 'avl' (aVL - I + II/2), 'avf' (aVF - II + I/2)."""
  x = np.asarray(signals, np.float64)
  i, ii, iii, avr, avl, avf = (x[:, k] for k in range(6))
  scale = np.abs(x[:, :6]).mean(axis=(1, 2))
  scale = np.where(scale > 0, scale, np.inf)
  residuals = {
    "einthoven": i + iii - ii,
    "avr": avr + (i + ii) / 2,
    "avl": avl - i + ii / 2,
    "avf": avf - ii + i / 2,
  }
  return {name: np.abs(r).mean(axis=1) / scale for name, r in residuals.items()}
