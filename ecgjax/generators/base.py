"""What a generator is to the rest of ecgjax (docs/design.md §9).

A generator *kind* (`GeneratorKind`) knows how to make itself usable for a
workdir (`ensure`: train it, or say why not), how to `load` it, and which
settings it adds under `cfg.generator.<kind>`. A loaded `Generator` turns
conditioning vectors into signals, sample i keyed by `fold_in(key, start + i)`,
so a cohort is the same whatever the batch, shard or device count; its
`identity` is what makes two cohorts the same (the cohort manifest stores it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from jax.sharding import Mesh


class Generator(Protocol):
  kind: str
  sampling_rate: int  # Hz of the signals `generate` returns
  # Codes whose labels the signals render; None: all 71. TSTR trains and scores
  # on these codes only.
  codes: tuple[str, ...] | None

  @property
  def identity(self) -> dict: ...

  def generate(self, cond: np.ndarray, key, *, mesh: Mesh, start: int = 0) -> np.ndarray:
    """(k, 76) conditioning vectors -> (k, 12, 10 * sampling_rate) float32 signals in mV."""

  def cohort_notes(self, cond: np.ndarray) -> dict:
    """What a reader of the cohort should know (stored in the manifest, not compared)."""


@dataclasses.dataclass(frozen=True)
class GeneratorKind:
  name: str
  summary: str  # one line, shown by --helpfull
  # ensure(cfg, mesh, ds, workdir, progress=...) -> bool: True when it trained
  # something now; raises CheckpointError when the workdir lacks what it needs.
  ensure: Callable[..., bool]
  load: Callable[..., Generator]  # load(cfg, ds, workdir) -> Generator
  # The kind's settings as cfg.generator.<name> (None: it has none there).
  config: Callable[[str], Any] | None = None
  needs_training: bool = True  # False: usable without any patient data
  # The codes its signals render (None: all 71); TSTR with it trains and scores on these.
  codes: tuple[str, ...] | None = None
