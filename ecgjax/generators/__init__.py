"""Generators: anything that turns conditioning vectors into 12-lead ECGs (docs/design.md §9).

kind = generators.get(cfg.generator.kind)
kind.ensure(cfg, mesh, ds, workdir)      # train it (mini) or say what is missing
gen = kind.load(cfg, ds, workdir)
signals = gen.generate(cond, key, mesh=mesh, start=0)
"""

from ecgjax.generators.base import Generator, GeneratorKind
from ecgjax.generators.registry import DEFAULT, KINDS, get, names

__all__ = ["DEFAULT", "KINDS", "Generator", "GeneratorKind", "get", "names", "for_config"]


def for_config(cfg) -> GeneratorKind:
  """The kind `cfg.generator.kind` names."""
  return get(cfg.generator.kind)
