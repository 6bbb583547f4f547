"""grain input pipelines and placement of global batches on a ('data',) mesh.

Multi-host: every process builds the same seeded, shuffled global order and
takes every `process_count`-th element of it, so the process-local batches of
one step are disjoint and together form one global batch, which
`jax.make_array_from_process_local_data` assembles across hosts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


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
  ds = ds.slice(slice(index, None, count))
  return ds.batch(local, drop_remainder=True).to_iter_dataset()


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

  ds = grain.MapDataset.range(padded).map(fetch).slice(slice(index, None, count))
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
