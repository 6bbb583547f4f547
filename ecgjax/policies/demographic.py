"""Demographic policies (paper section 4, "Demographic").

`demo_balanced` and `synth_cond` keep real label rows but decouple the
demographics from them: the paper's third failure mechanism, label x
demographic joint decoupling. `demo_strat` keeps whole real tuples and only
reweights the age x sex cells within each anchor class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.policies import base
from ecgjax.policies.table import NUM_CELLS, PolicyTable, cond_hash

MIN_CELL_ROWS = 3  # demo_strat drops cells with fewer rows
AGE_DECILES = 10
SYNTH_COND_MAX_ROUNDS = 100


def demo_strat_cells(table: PolicyTable):
  """(G, 6) bool kept cells (>= 3 rows) and (G,) anchor-group probabilities.

  An anchor class whose every cell is dropped cannot be drawn; the anchor
  frequencies are renormalised over the classes that keep a cell.
  """
  kept = (base.segment_counts(table.cell_ptr) >= MIN_CELL_ROWS).reshape(-1, NUM_CELLS)
  freq = jnp.where(kept.any(axis=1), table.anchor_freq, 0.0)
  return kept, freq / jnp.sum(freq)


def demo_strat(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Anchor class by anchor frequency, then a uniform kept age-tertile x sex cell, then a row.

  Cells: age tertile by the train cut points (age <= c1, <= c2, above) x sex;
  cells with fewer than 3 rows are dropped. The tuple is the row's own.
  """
  del unused
  n = base.check_n(n, "demo_strat")
  k_group, k_cell, k_row = jax.random.split(key, 3)
  kept, group_p = demo_strat_cells(table)
  group = jax.random.categorical(k_group, jnp.log(group_p), shape=(n,))
  cell_logits = jnp.where(kept[group], 0.0, -jnp.inf)
  cell = jax.random.categorical(k_cell, cell_logits, axis=-1)
  rows = base.uniform_in_segment(k_row, table.cell_ptr, table.cell_idx, group * NUM_CELLS + cell)
  return base.from_rows(table, rows)


def _rows_of_sex(key, table: PolicyTable, sex: jnp.ndarray) -> jnp.ndarray:
  """A uniform train row of the given sex per sample (any row if T has none of it)."""
  k_sex, k_any = jax.random.split(key)
  by_sex = base.uniform_in_segment(k_sex, table.sex_ptr, table.sex_idx, sex)
  has_sex = base.segment_counts(table.sex_ptr)[sex] > 0
  return jnp.where(has_sex, by_sex, base.uniform_rows(k_any, table, sex.shape[0]))


def demo_balanced(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Real label rows with demographics resampled to 50/50 sex and uniform age decile.

  Age: a decile (one of 10 equal-width bins over the train age range) drawn
  uniformly, then an age uniformly inside it; equal-count deciles of the train
  ages would just reproduce the age marginal. Height and weight: each from
  its own uniform train row of the drawn sex (the train marginal given sex).
  BMI is recomputed from them and all five axes are z-normalised with the
  train mean and std, as the generator's conditioning was.
  """
  del unused
  n = base.check_n(n, "demo_balanced")
  k_lab, k_sex, k_dec, k_age, k_h, k_w = jax.random.split(key, 6)
  labels = table.labels[base.uniform_rows(k_lab, table, n)]
  sex = jax.random.bernoulli(k_sex, 0.5, (n,)).astype(jnp.int32)
  decile = jax.random.randint(k_dec, (n,), 0, AGE_DECILES)
  lo, hi = table.age_range[0], table.age_range[1]
  age = lo + (decile + jax.random.uniform(k_age, (n,))) / AGE_DECILES * (hi - lo)
  height = table.demo[_rows_of_sex(k_h, table, sex), 2]
  weight = table.demo[_rows_of_sex(k_w, table, sex), 3]
  bmi = weight / (height / 100.0) ** 2
  demo = jnp.stack([age, sex.astype(jnp.float32), height, weight, bmi], axis=1)
  return base.synthesized(labels, (demo - table.demo_mean) / table.demo_std)


def is_real_tuple(table: PolicyTable, cond: jnp.ndarray) -> jnp.ndarray:
  """(n,) bool: the tuple's hash is a real row's (exact for misses; see cond_hash)."""
  h = cond_hash(cond)
  pos = jnp.clip(jnp.searchsorted(table.cond_hash, h), 0, table.num_rows - 1)
  return table.cond_hash[pos] == h


def _synth_tuples(key, table: PolicyTable, n: int):
  k_lab, k_axes = jax.random.split(key)
  labels = table.labels[base.uniform_rows(k_lab, table, n)]
  axis_rows = jax.random.randint(k_axes, (n, 5), 0, table.num_rows)
  demo_z = table.demo_z[axis_rows, jnp.arange(5)[None, :]]
  return labels, demo_z


def synth_cond(key, table: PolicyTable, n: int, **unused) -> base.Draw:
  """Real label rows; each demographic axis from its own independently drawn row.

  Every axis keeps its train marginal (as z-scores, BMI included, taken as
  drawn, not recomputed), but no real record's full tuple reappears: tuples
  equal to a real row are redrawn whole in up to 100 rounds of a
  `lax.while_loop` that stops as soon as none is left. With a per-tuple
  collision rate c, a tuple survives all rounds with probability c^100.
  """
  del unused
  n = base.check_n(n, "synth_cond")
  labels, demo_z = _synth_tuples(jax.random.fold_in(key, 0), table, n)
  real = is_real_tuple(table, jnp.concatenate([labels, demo_z], axis=1))

  def redraw(state):
    round_, labels, demo_z, real = state
    new_labels, new_demo_z = _synth_tuples(jax.random.fold_in(key, round_), table, n)
    labels = jnp.where(real[:, None], new_labels, labels)
    demo_z = jnp.where(real[:, None], new_demo_z, demo_z)
    real = real & is_real_tuple(table, jnp.concatenate([labels, demo_z], axis=1))
    return round_ + 1, labels, demo_z, real

  _, labels, demo_z, _ = lax.while_loop(
    lambda s: jnp.any(s[3]) & (s[0] <= SYNTH_COND_MAX_ROUNDS),
    redraw,
    (jnp.int32(1), labels, demo_z, real),
  )
  return base.synthesized(labels, demo_z)
