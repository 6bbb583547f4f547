"""grain input pipelines and placement of global batches on a ('data',) mesh.

Multi-host: every process builds the same seeded, shuffled global order and
takes its own contiguous block of every global batch (process p: rows
p * local .. (p + 1) * local - 1), so the process-local batches of one step are
disjoint and `jax.make_array_from_process_local_data` assembles them into the
global batch a single process would have made, row for row (per-row randomness
such as dropout masks then falls on the same records whatever the process count).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections.abc import Mapping

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax import storage
from ecgjax.errors import ConfigError

DATA_AXIS = "data"
# Batches read ahead by the training stream's threads. grain's default (500 elements, here
# batches, on 16 threads) holds 1.5 GB of 256-record crop batches (6 GB of whole records)
# whatever the data's size; 8 batches keep a step fed and the memory small. The order,
# and so the result, does not depend on it.
TRAIN_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


class ArraySource:
  """A grain random-access source over aligned arrays (e.g. a signals memmap)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"arrays must share their first axis, got lengths {lengths}")
    self._arrays = dict(arrays)
    self._len = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[index]) for k, v in self._arrays.items()}


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (
    jax.process_index() if process_index is None else process_index,
    jax.process_count() if process_count is None else process_count,
  )


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
      f"global batch size {global_batch_size} must be positive and divisible by the "
      f"process count {process_count}"
    )
  return global_batch_size // process_count


def process_block(
  ds: grain.MapDataset, global_batch_size: int, index: int, count: int
) -> grain.MapDataset:
  """Process `index`'s rows of every global batch of `ds`: the contiguous block
  [index * local, (index + 1) * local) of each run of `global_batch_size` elements, so
  that batching by `local` gives this process's slice of each global batch. Only the
  rows a process feeds are read (ds is random access). One process: `ds` itself."""
  if count == 1:
    return ds
  local = _local_batch_size(global_batch_size, count)
  n = len(ds) // global_batch_size * local

  def element(j):
    return ds[(j // local) * global_batch_size + index * local + j % local]

  return grain.MapDataset.range(n).map(element)


def random_crop(length: int, key: str = "signal"):
  """A grain random_map transform: a uniform window of `length` samples of `key` (last axis).

  The window's start comes from grain's per-element generator (seeded by the
  pipeline seed and the element's index in the repeated stream), so the crops
  are a function of the seed alone: the same on any number of processes, and
  restored exactly with the iterator's state.
  """

  def crop(element, rng: np.random.Generator):
    x = element[key]
    if not 1 <= length <= x.shape[-1]:
      raise ValueError(f"crop length {length} must be in [1, {x.shape[-1]}] for {key!r}")
    start = int(rng.integers(0, x.shape[-1] - length + 1))
    return {**element, key: x[..., start : start + length]}

  return crop


def train_dataset(
  arrays: Mapping[str, np.ndarray],
  *,
  global_batch_size: int,
  seed: int,
  crop: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """Seeded shuffle (a new order every epoch), endless repeat, drop-remainder batches.

  Deterministic for a seed; its iterator's `get_state()` / `set_state()` (or
  grain's orbax handler) resumes exactly where it stopped. crop: train on a
  random window of this many samples of each `signal` (see `random_crop`).
  """
  source = ArraySource(arrays)
  if len(source) < global_batch_size:
    raise ValueError(
      f"{len(source)} records are fewer than one global batch of {global_batch_size}"
    )
  index, count = _process(process_index, process_count)
  local = _local_batch_size(global_batch_size, count)
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  if crop:
    ds = ds.random_map(random_crop(crop))
  ds = process_block(ds, global_batch_size, index, count)
  return ds.batch(local, drop_remainder=True).to_iter_dataset(TRAIN_READ_OPTIONS)


def eval_dataset(
  arrays: Mapping[str, np.ndarray],
  *,
  global_batch_size: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.MapDataset:
  """Every record exactly once, in order; the last global batch is padded.

  Each element carries `mask` (bool): False marks padding rows, which repeat
  the last record and must be ignored by the metric.
  """
  source = ArraySource(arrays)
  n = len(source)
  if n == 0:
    raise ValueError("eval_dataset: no records")
  index, count = _process(process_index, process_count)
  local = _local_batch_size(global_batch_size, count)
  padded = math.ceil(n / global_batch_size) * global_batch_size

  def fetch(i):
    element = source[min(i, n - 1)]
    element["mask"] = np.bool_(i < n)
    element["index"] = np.int64(i)
    return element

  ds = process_block(grain.MapDataset.range(padded).map(fetch), global_batch_size, index, count)
  return ds.batch(local, drop_remainder=True)


def process0_decides(value: np.ndarray) -> np.ndarray:
  """Process 0's value on every process (multi-host); the value itself on one host.

  Decisions made from files (is this seed finished? which shards remain?)
  must agree across processes, or their collectives deadlock; only process 0
  writes those files, so its view is the one that counts.
  """
  if jax.process_count() == 1:
    return np.asarray(value)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def host_value(x) -> np.ndarray:
  """The whole value of an array as numpy on every process: a jax.Array that spans other
  processes' devices (e.g. a batch split over a multi-host 'data' axis) is gathered."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def global_array(x, sharding: NamedSharding) -> jax.Array:
  """A host value that every process holds whole, placed with `sharding` (each process
  fills only its own devices' shards, so this works whatever devices the mesh spans)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _all_processes(value: np.ndarray) -> np.ndarray:
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(np.asarray(value)))


def check_same_on_processes(text: str, what: str) -> None:
  """Raises ConfigError on every process unless `text` (e.g. the data's content key) is
  the same on all of them: processes that read different inputs would silently train on
  different data."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=16).digest(), np.uint8)
  seen = _all_processes(digest)
  differ = [i for i in range(len(seen)) if not np.array_equal(seen[i], seen[0])]
  if differ:
    raise ConfigError(
      f"{what} differs between processes: process(es) {', '.join(map(str, differ))} read "
      f"something other than process 0; every process must read the same bytes"
    )


SHARED_MARKER = ".ecgjax_shared_check"


def check_shared_directory(path: str, what: str) -> None:
  """Raises ConfigError on every process unless `path` is one directory that every
  process sees (shared storage), which a multi-process job needs wherever process 0
  writes what the others read (checkpoints, cohorts, finished runs).

  Process 0 writes a marker holding a fresh job token; after a barrier every process
  looks for it. A host-local directory of the same name would let the processes
  diverge silently (different resume points, unfinished cohorts), so it is refused.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  token = multihost_utils.broadcast_one_to_all(
    np.frombuffer(secrets.token_bytes(16), np.uint8).copy()
  )
  token = bytes(np.asarray(token, np.uint8)).hex()
  marker = os.path.join(storage.normalize(path), f"{SHARED_MARKER}.{token}")
  if jax.process_index() == 0:
    storage.atomic_write(marker, lambda f: f.write(token))
  barrier(f"ecgjax shared check {token} written")
  try:
    with storage.open(marker, encoding="utf-8") as f:
      seen = f.read() == token
  except OSError:
    seen = False
  ok = _all_processes(np.bool_(seen)).reshape(-1)
  barrier(f"ecgjax shared check {token} read")
  if jax.process_index() == 0:
    storage.remove(marker)
  if not ok.all():
    blind = ", ".join(str(i) for i in np.flatnonzero(~ok))
    raise ConfigError(
      f"{what}={path}: process(es) {blind} of {jax.process_count()} do not see the marker "
      f"process 0 wrote at {marker}; under several processes it must be storage every "
      f"process sees at the same path (a shared filesystem or a gs:// bucket), since "
      f"process 0 writes the checkpoints, cohorts and results the others read "
      f"(launch/README.md)"
    )


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ('data',) mesh over the first `num_devices` devices (default: all)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={num_devices}: {len(devices)} devices are available")
  # Auto axes: the compiler propagates shardings (GSPMD), so model code needs
  # no sharding annotations; jax.make_mesh defaults to Explicit axes otherwise.
  return jax.make_mesh(
    (n,), (DATA_AXIS,), devices=devices[:n], axis_types=(jax.sharding.AxisType.Auto,)
  )


def put_replicated(tree, mesh: Mesh):
  """`tree` replicated on every device of `mesh`. Under several processes an array held by
  this process alone (e.g. restored onto a local device) goes through the host, since CPU
  backends have no cross-host device transfer; every process must hold the same values."""
  if jax.process_count() > 1:
    tree = jax.tree.map(
      lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, tree
    )
  return jax.device_put(tree, replicated(mesh))


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op on one process), e.g. before
  the others read what process 0 has just written."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places this process's slice of a global batch; the result is split along 'data'."""
  sharding = batch_sharding(mesh)
  n_dev = mesh.shape[DATA_AXIS]
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    global_rows = v.shape[0] * jax.process_count()
    if global_rows % n_dev:
      raise ValueError(
        f"batch field {k!r}: global batch of {global_rows} rows does not split over {n_dev} devices"
      )
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out
