"""Per-lead standardisation of (N, 12, T) signals: the one definition, for every model.

The generator's VAE and the classifiers see `standardise(x, mean, std)` with
the per-lead statistics of their training signals; the generator maps its
output back with `destandardise`.
"""

from __future__ import annotations

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
