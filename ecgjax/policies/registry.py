"""The policy registry: every fact about a sampling policy, stated once.

A policy is `policy(key, table, n, **state) -> Draw`: pure, deterministic for
a key, and jit-able with static n (`jax.jit(policy, static_argnums=2)`).
Its registry entry says which Table 1 family it belongs to, what the
downstream classifier trains on (`source`), and, for the reference rows of
Table 1, its role. The harness, the entry points' `--policy` enum, the report
and `launch/sweep.sh` (through `python -m ecgjax.policies`) all read this
registry, so a new policy is one function and one `PolicySpec` line in
`REGISTRY`. The definitions are in docs/design.md §4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ecgjax.policies.base import Draw
from ecgjax.policies.classes import rare_boost, rare_oversample_3x, rebalance_report, uniform_class
from ecgjax.policies.demographic import demo_balanced, demo_strat, synth_cond
from ecgjax.policies.diversity import diversity_oversample
from ecgjax.policies.judge import iter_relabel, qfilter_matched, qstrat_matched
from ecgjax.policies.reference import prototype, real_matched, real_subset
from ecgjax.policies.table import PolicyTable

# What the classifier trains on.
REAL = "real"  # real train-fold signals of the drawn rows; no generator
GENERATED = "generated"  # one generated ECG per drawn tuple
JUDGE_POOL = "judge_pool"  # a real_matched pool of pool_factor x n generated ECGs, judge-scored
SOURCES = (REAL, GENERATED, JUDGE_POOL)

# Table 1's groups (paper section 5), in the paper's order.
FAMILIES = ("Reference", "Class", "Demographic", "Filter", "Diversity")
CEILING, BASELINE = "ceiling", "baseline"


@dataclasses.dataclass(frozen=True)
class PolicySpec:
  """One sampling policy and what the harness and the report need to know about it.

  report: optional `report(table, codes) -> dict` of JSON-able diagnostics
    (e.g. the rebalancing policies' achieved prevalences, keyed by the label
    names `codes`), stored in the run's metrics.json under "policy_report".
  """

  name: str
  fn: Callable[..., Draw]
  family: str
  source: str = GENERATED
  role: str | None = None
  report: Callable[[PolicyTable, list[str]], dict] | None = None

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"policy {self.name!r}: family {self.family!r} is not one of {FAMILIES}")
    if self.source not in SOURCES:
      raise ValueError(f"policy {self.name!r}: source {self.source!r} is not one of {SOURCES}")
    if (self.source == JUDGE_POOL) != hasattr(self.fn, "pool_factor"):
      raise ValueError(
        f"policy {self.name!r}: a judge_pool policy, and only one, is marked with "
        "@judge.judge_policy(pool_factor=...)"
      )

  @property
  def pool_factor(self) -> int:
    """Generated pool size per training sample (judge-driven policies), else 1."""
    return getattr(self.fn, "pool_factor", 1)

  def generator_budget(self, n: int) -> int:
    """Generated ECGs a cohort of n training samples costs."""
    return 0 if self.source == REAL else self.pool_factor * n

  def draw_pool(self, key, table: PolicyTable, n: int) -> Draw:
    """The pool a judge-driven policy selects from: real_matched, pool_factor x n."""
    if self.source != JUDGE_POOL:
      raise ValueError(f"policy {self.name!r} takes no pool; it is a {self.source!r} policy")
    return real_matched(key, table, self.pool_factor * n)


def _rebalance_report(name: str):
  return lambda table, codes: rebalance_report(table, name, codes)


def _register(*specs: PolicySpec) -> dict[str, PolicySpec]:
  registry = {}
  for spec in specs:
    if spec.name in registry:
      raise ValueError(f"policy {spec.name!r} is registered twice")
    registry[spec.name] = spec
  return registry


# Table 1's rows, in the paper's order.
REGISTRY: dict[str, PolicySpec] = _register(
  PolicySpec("real_subset", real_subset, "Reference", REAL, role=CEILING),
  PolicySpec("real_matched", real_matched, "Reference", role=BASELINE),
  PolicySpec("uniform_class", uniform_class, "Class"),
  PolicySpec("rare_boost", rare_boost, "Class", report=_rebalance_report("rare_boost")),
  PolicySpec(
    "rare_oversample_3x",
    rare_oversample_3x,
    "Class",
    report=_rebalance_report("rare_oversample_3x"),
  ),
  PolicySpec("demo_strat", demo_strat, "Demographic"),
  PolicySpec("demo_balanced", demo_balanced, "Demographic"),
  PolicySpec("synth_cond", synth_cond, "Demographic"),
  PolicySpec("qfilter_matched", qfilter_matched, "Filter", JUDGE_POOL),
  PolicySpec("qstrat_matched", qstrat_matched, "Filter", JUDGE_POOL),
  PolicySpec("iter_relabel", iter_relabel, "Filter", JUDGE_POOL),
  PolicySpec("diversity_oversample", diversity_oversample, "Diversity", JUDGE_POOL),
  PolicySpec("prototype", prototype, "Diversity"),
)


def names() -> list[str]:
  """Every registered policy, in Table 1 order."""
  return list(REGISTRY)


def get(name: str) -> PolicySpec:
  """REGISTRY[name], with an error that names the unknown policy and the known ones."""
  if name not in REGISTRY:
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def with_role(role: str) -> str:
  """The one policy with this role (CEILING or BASELINE)."""
  (name,) = [s.name for s in REGISTRY.values() if s.role == role]
  return name
