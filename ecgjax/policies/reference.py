"""The reference policies (paper section 4, "Reference"), the ceiling and prototype.

`real_matched` is the naive bootstrap the paper finds no policy beats: it keeps
class prevalence, the demographic marginals and the label x demographic joint
by construction, because it reuses whole real tuples.
"""

from __future__ import annotations

import jax

from ecgjax.policies import base
from ecgjax.policies.table import PolicyTable


def real_subset(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Ceiling: n real train records without replacement (real signals, no generator).

  The harness trains on `ds.signals[table.ds_rows[draw.rows]]`.
  """
  del unused
  n = base.check_n(n, "real_subset")
  if n > table.num_rows:
    raise ValueError(
      f"real_subset: n = {n} exceeds the {table.num_rows} train records "
      "(it draws without replacement)"
    )
  rows = jax.random.choice(key, table.num_rows, (n,), replace=False)
  return base.from_rows(table, rows)


def real_matched(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """n rows of T uniformly with replacement; the full tuple is reused."""
  del unused
  n = base.check_n(n, "real_matched")
  return base.from_rows(table, base.uniform_rows(key, table, n))


def prototype(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Rows drawn as real_matched, demographics replaced by their anchor class's centroid.

  The centroid is the mean z-demographics of the anchor group over T (mean
  sex is then a fraction, as a centroid is); the tuple is no real row, so
  rows = -1.
  """
  del unused
  n = base.check_n(n, "prototype")
  rows = base.uniform_rows(key, table, n)
  return base.synthesized(table.labels[rows], table.anchor_demo_z[table.group[rows]])
