"""grain pipelines: determinism, exact resume, eval coverage, mesh placement."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ecgjax.data import pipeline


def _arrays(n=50):
  return {
    "x": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
    "id": np.arange(n),
  }


def _take(iterator, k):
  return [next(iterator) for _ in range(k)]


def test_same_seed_same_batches_and_new_order_each_epoch():
  a = _take(iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=3)), 12)
  b = _take(iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=3)), 12)
  c = _take(iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=4)), 12)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["id"], y["id"])
  assert any((x["id"] != y["id"]).any() for x, y in zip(a, c))
  # Within the first epoch (6 full batches of 50 records) no record repeats.
  first_epoch = np.concatenate([x["id"] for x in a[:6]])
  assert len(set(first_epoch.tolist())) == 48
  np.testing.assert_array_equal(a[0]["x"][:, 0], a[0]["id"].astype(np.float32))


def test_restored_iterator_continues_exactly():
  reference = _take(iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0)), 20)
  it = iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0))
  _take(it, 13)  # past one epoch boundary
  state = json.loads(json.dumps(it.get_state()))  # survives serialisation
  fresh = iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0))
  fresh.set_state(state)
  for expected, got in zip(reference[13:], _take(fresh, 7)):
    np.testing.assert_array_equal(expected["id"], got["id"])


@pytest.mark.parametrize("crop", [None, 2])
def test_processes_feed_contiguous_blocks_of_the_single_process_batch(crop):
  # Process p feeds rows p * local .. of each global batch, so the assembled global batch
  # is the one-process batch row for row (dropout masks fall on the same records).
  arrays = {"signal": np.arange(50 * 4, dtype=np.float32).reshape(50, 1, 4), "id": np.arange(50)}
  kw = dict(global_batch_size=8, seed=1, crop=crop)
  single = _take(iter(pipeline.train_dataset(arrays, **kw)), 9)
  per_process = [
    _take(iter(pipeline.train_dataset(arrays, **kw, process_index=p, process_count=2)), 9)
    for p in (0, 1)
  ]
  for step in range(9):
    a, b = per_process[0][step], per_process[1][step]
    assert a["id"].shape == (4,) and not set(a["id"]) & set(b["id"])
    for key in ("id", "signal"):
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), single[step][key])


@pytest.mark.parametrize("n,batch,processes", [(50, 8, 1), (48, 8, 1), (50, 8, 2), (7, 4, 2)])
def test_eval_pipeline_yields_every_record_once(n, batch, processes):
  seen = []
  for p in range(processes):
    for element in pipeline.eval_dataset(
      _arrays(n), global_batch_size=batch, process_index=p, process_count=processes
    ):
      assert element["id"].shape == (batch // processes,)
      seen.extend(element["id"][element["mask"]].tolist())
  assert sorted(seen) == list(range(n))
  # Concatenated in process order, the batches are the records in order.
  padded = np.concatenate(
    [
      np.concatenate(
        [
          e["index"]
          for e in pipeline.eval_dataset(
            _arrays(n), global_batch_size=batch, process_index=p, process_count=processes
          )
        ]
      ).reshape(-1, batch // processes)
      for p in range(processes)
    ],
    axis=1,
  ).reshape(-1)
  np.testing.assert_array_equal(padded, np.arange(len(padded)))


def test_global_batch_is_split_across_8_devices():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set in conftest.py)")
  mesh = pipeline.make_mesh(8)
  local = next(iter(pipeline.train_dataset(_arrays(), global_batch_size=16, seed=0)))
  batch = pipeline.shard_batch(local, mesh)
  x = batch["x"]
  assert x.shape == (16, 3) and x.sharding.spec == P("data")
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
  assert len(shards) == 8 and {s.device for s in shards} == set(jax.devices()[:8])
  for k, shard in enumerate(shards):
    assert shard.data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(shard.data), local["x"][2 * k : 2 * k + 2])
  with pytest.raises(ValueError, match="does not split over 8 devices"):
    pipeline.shard_batch({"x": np.zeros((12, 3))}, mesh)


def test_bad_batch_sizes_are_errors():
  with pytest.raises(ValueError, match="fewer than one global batch"):
    pipeline.train_dataset(_arrays(5), global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="divisible by the process count 3"):
    pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0, process_index=0, process_count=3)
