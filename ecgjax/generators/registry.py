"""The generator kinds, by name: `--config.generator.kind` picks one (docs/design.md §9).

Adding a generator is one module defining a `GeneratorKind` and one line here.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from ecgjax.errors import ConfigError
from ecgjax.generators import latent_diffusion, simulator
from ecgjax.generators.base import GeneratorKind

KINDS: dict[str, GeneratorKind] = {
  latent_diffusion.KIND.name: latent_diffusion.KIND,
  simulator.KIND.name: simulator.KIND,
}
DEFAULT = latent_diffusion.KIND.name


def names() -> list[str]:
  return list(KINDS)


def get(name: str) -> GeneratorKind:
  if name not in KINDS:
    raise ConfigError(
      f"--config.generator.kind={name!r}: unknown generator, choose one of {', '.join(KINDS)}"
    )
  return KINDS[name]


def config(preset: str) -> ConfigDict:
  """The `generator` section of a preset: `kind`, and each kind's own settings."""
  c = ConfigDict({"kind": DEFAULT})
  for name, kind in KINDS.items():
    if kind.config is not None:
      c[name] = kind.config(preset)
  return c
