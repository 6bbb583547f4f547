"""Every PRNG salt of the evaluations, in one place.

A run with seed s draws from PRNGKey(s) folded with the salt of what it
draws (a TSTR policy's own draw uses PRNGKey(s) itself), so two draws of one
run never share a stream. The values are fixed:
changing one changes every result drawn with it.
"""

from __future__ import annotations

import jax

JUDGE_POOL = 7  # tstr: the pool a judge policy selects from (folded into the policy's key)
BLEND_REAL = 1  # blend: the real_subset part
BLEND_SYNTHETIC = 2  # blend: the real_matched synthetic part
TRANSFER_PRETRAIN = 1  # transfer: the synthetic-only (pre-training) cohort
TRANSFER_MIX = 2  # transfer: the synthetic part of a mix_<r> set
SYN2REAL_CLASS = 1  # syn2real: the simulated cohort of class i uses SYN2REAL_CLASS + i


def key(seed: int, salt: int | None = None):
  """PRNGKey(seed), folded with `salt` when one is given."""
  k = jax.random.PRNGKey(seed)
  return k if salt is None else jax.random.fold_in(k, salt)
