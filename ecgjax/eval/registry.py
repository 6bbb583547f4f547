"""The evaluations, by name (ecgjax/eval/runs.py; docs/design.md §10).

Adding an evaluation is one module defining an `Evaluation` (its run layout,
required fields and report section) and one line here; the report then finds
and renders its runs.
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
