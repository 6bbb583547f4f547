"""The thirteen sampling policies of SPEC section 4 (paper section 4).

A policy is `policy(key, table, n, **state) -> Draw`: pure, deterministic for
a key, and jit-able with static n (`jax.jit(policy, static_argnums=2)`).
`table = make_table(ds)` is the train-fold table T. The judge-driven policies
(`JUDGE_POLICIES`) take a pool of `POOL_FACTOR[name] * n` tuples drawn by
`real_matched` plus the judge's outputs on their generated ECGs; see
`ecgjax.policies.judge` and `draw_pool`.
"""

from __future__ import annotations

from collections.abc import Callable

from ecgjax.policies.base import Draw
from ecgjax.policies.classes import rake_weights, rare_boost, rare_oversample_3x, uniform_class
from ecgjax.policies.demographic import demo_balanced, demo_strat, synth_cond
from ecgjax.policies.diversity import diversity_oversample
from ecgjax.policies.judge import POOL_FACTOR, iter_relabel, qfilter_matched, qstrat_matched
from ecgjax.policies.reference import prototype, real_matched, real_subset
from ecgjax.policies.table import PolicyTable, make_table

POLICIES: dict[str, Callable[..., Draw]] = {
  "real_subset": real_subset,
  "real_matched": real_matched,
  "uniform_class": uniform_class,
  "rare_boost": rare_boost,
  "rare_oversample_3x": rare_oversample_3x,
  "demo_strat": demo_strat,
  "demo_balanced": demo_balanced,
  "synth_cond": synth_cond,
  "qfilter_matched": qfilter_matched,
  "qstrat_matched": qstrat_matched,
  "iter_relabel": iter_relabel,
  "diversity_oversample": diversity_oversample,
  "prototype": prototype,
}

JUDGE_POLICIES = frozenset(POOL_FACTOR)
# real_subset trains on real signals; every other policy's cond goes to the generator.
REAL_SIGNAL_POLICIES = frozenset({"real_subset"})


def get_policy(name: str) -> Callable[..., Draw]:
  """POLICIES[name], with an error that names the unknown policy and the known ones."""
  if name not in POLICIES:
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
  return POLICIES[name]


def draw_pool(key, table: PolicyTable, n: int, name: str) -> Draw:
  """The pool a judge-driven policy selects from: real_matched, POOL_FACTOR[name] x n."""
  if name not in POOL_FACTOR:
    raise ValueError(f"policy {name!r} takes no pool; judge-driven: {', '.join(POOL_FACTOR)}")
  return real_matched(key, table, POOL_FACTOR[name] * n)


__all__ = [
  "Draw",
  "JUDGE_POLICIES",
  "POLICIES",
  "POOL_FACTOR",
  "PolicyTable",
  "REAL_SIGNAL_POLICIES",
  "draw_pool",
  "get_policy",
  "make_table",
  "rake_weights",
]
