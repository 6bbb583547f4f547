"""The evaluations, by name (ecgjax/eval/runs.py; docs/design.md §10).

Adding an evaluation is one module defining an `Evaluation` (its run layout,
required fields, report section, config section and optional packages) and
one line here (or `register(evaluation)` at run time); every preset then
carries its config section (ecgjax/configs.py), its runs go through
`Run.execute`, and the report finds and renders them.
"""

from __future__ import annotations

from ecgjax.eval import audit, augment, convergence, syn2real, transfer, trts, tstr
from ecgjax.eval.runs import Evaluation

EVALUATIONS: dict[str, Evaluation] = {
  e.name: e
  for e in (
    tstr.TSTR,
    tstr.BLEND,
    trts.TRTS,
    syn2real.SYN2REAL,
    audit.AUDIT,
    augment.AUGMENT,
    transfer.TRANSFER,
    convergence.CONVERGENCE,
  )
}


def get(name: str) -> Evaluation:
  if name not in EVALUATIONS:
    raise KeyError(f"unknown evaluation {name!r}; registered: {', '.join(EVALUATIONS)}")
  return EVALUATIONS[name]


def register(evaluation: Evaluation) -> Evaluation:
  """Adds an evaluation at run time (a name already taken is an error)."""
  if evaluation.name in EVALUATIONS:
    raise KeyError(f"evaluation {evaluation.name!r} is already registered")
  EVALUATIONS[evaluation.name] = evaluation
  return evaluation


def config_sections(preset: str) -> dict:
  """{name: config section} of every evaluation that has one, for `preset`."""
  return {e.name: e.config(preset) for e in EVALUATIONS.values() if e.config is not None}
