"""Time per draw of every sampling policy under jax.jit, after a warm-up call.

  python -m experiments.bench_policies [--n=8000] [--repeats=5] [--data_dir=...]

The judge-driven policies select from a real_matched pool of POOL_FACTOR x n
with random judge outputs (the selection cost does not depend on their values).
real_subset draws without replacement, so it is capped at the train size.
Prints figures only; nothing here asserts a speed.
"""

import statistics
import time

import jax
import jax.numpy as jnp
from absl import flags

from ecgjax import errors
from ecgjax import policies as P
from ecgjax.data import load_ptbxl

_DATA_DIR = flags.DEFINE_string("data_dir", None, "PTB-XL root; default: the embedded slice.")
_N = flags.DEFINE_integer("n", 8000, "Draw size (the paper's n_train).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed draws per policy; the median is reported.")


def _state(key, table, n, name):
  if name not in P.JUDGE_POLICIES:
    return {}
  pool = P.draw_pool(jax.random.fold_in(key, 1), table, n, name)
  logits = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), pool.labels.shape)
  return dict(
    pool=pool,
    judge_logits=logits,
    judge_probs=jax.nn.sigmoid(logits),
    thresholds=jnp.full((pool.labels.shape[1],), 0.5),
  )


def main(argv):
  del argv
  ds = load_ptbxl(_DATA_DIR.value, progress=False)
  table = P.make_table(ds)
  print(
    f"table: {table.num_rows} train rows; device: {jax.devices()[0].device_kind}; "
    f"repeats: {_REPEATS.value}"
  )
  print(f"{'policy':<22} {'n':>6} {'pool':>6} {'compile+1st ms':>15} {'ms/draw':>9}")
  for name, policy in P.POLICIES.items():
    n = min(_N.value, table.num_rows) if P.get(name).source == P.REAL else _N.value
    key = jax.random.PRNGKey(0)
    state = jax.block_until_ready(_state(key, table, n, name))
    fn = jax.jit(policy, static_argnums=2)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(key, table, n, **state))
    first = time.perf_counter() - t0
    times = []
    for i in range(_REPEATS.value):
      k = jax.random.PRNGKey(i + 1)
      t0 = time.perf_counter()
      jax.block_until_ready(fn(k, table, n, **state))
      times.append(time.perf_counter() - t0)
    pool = P.POOL_FACTOR[name] * n if name in P.JUDGE_POLICIES else "-"
    print(
      f"{name:<22} {n:>6} {pool:>6} {1e3 * first:>15.1f} {1e3 * statistics.median(times):>9.2f}"
    )


if __name__ == "__main__":
  errors.run(main)
