"""The thirteen sampling policies (paper section 4; docs/design.md §4).

`table = make_table(ds)` is the train-fold table T; `REGISTRY` (in
`ecgjax.policies.registry`) holds each policy's function, family and what it
trains on. The judge-driven policies (`JUDGE_POLICIES`) take a pool of
`pool_factor x n` tuples drawn by `real_matched` (`PolicySpec.draw_pool`) plus
the judge's outputs on their generated ECGs; see `ecgjax.policies.judge`.

`python -m ecgjax.policies` prints the registered names, comma-separated.
"""

from __future__ import annotations

from collections.abc import Callable

from ecgjax.policies.base import Draw
from ecgjax.policies.registry import (
  GENERATED,
  JUDGE_POOL,
  REAL,
  REGISTRY,
  PolicySpec,
  get,
  names,
)
from ecgjax.policies.table import PolicyTable, make_table


def _views():
  """Name -> function, the judge-driven names and their pool factors: views of REGISTRY."""
  policies = {name: spec.fn for name, spec in REGISTRY.items()}
  judge = {name: spec.pool_factor for name, spec in REGISTRY.items() if spec.source == JUDGE_POOL}
  return policies, judge


POLICIES: dict[str, Callable[..., Draw]]
POLICIES, POOL_FACTOR = _views()
JUDGE_POLICIES = frozenset(POOL_FACTOR)


def get_policy(name: str) -> Callable[..., Draw]:
  """The policy function registered as `name` (ValueError naming the known ones)."""
  return get(name).fn


def draw_pool(key, table: PolicyTable, n: int, name: str) -> Draw:
  """The pool a judge-driven policy selects from: real_matched, pool_factor x n."""
  return get(name).draw_pool(key, table, n)


__all__ = [
  "Draw",
  "GENERATED",
  "JUDGE_POLICIES",
  "JUDGE_POOL",
  "POLICIES",
  "POOL_FACTOR",
  "PolicySpec",
  "PolicyTable",
  "REAL",
  "REGISTRY",
  "draw_pool",
  "get",
  "get_policy",
  "make_table",
  "names",
]
