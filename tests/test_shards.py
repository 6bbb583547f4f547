"""Lazily read cohorts: ShardedArray indexing, the .npz shard format, and training on it."""

import concurrent.futures
import os

import jax
import numpy as np
import pytest
from conftest import tiny_cfg

from ecgjax.data import pipeline, shards
from ecgjax.errors import ConfigError
from ecgjax.generators import cohort
from ecgjax.train import classifier as clf_lib


def _parts(tmp_path, sizes=(5, 1, 7), compressed=()):
  """Arrays of `sizes` rows, stored as npz members, a .npy, or compressed members."""
  rng = np.random.default_rng(0)
  arrays, parts = [], []
  for k, size in enumerate(sizes):
    a = rng.normal(size=(size, 3, 4)).astype(np.float32)
    arrays.append(a)
    if k == 1:
      path = str(tmp_path / f"p{k}.npy")
      np.save(path, a)
      parts.append(shards.npy_part(path))
      continue
    path = str(tmp_path / f"p{k}.npz")
    (np.savez_compressed if k in compressed else np.savez)(path, x=a, other=np.arange(size))
    parts.append(shards.npz_part(path, "x"))
  return shards.ShardedArray(parts), np.concatenate(arrays)


@pytest.mark.parametrize("compressed", [(), (2,)])
def test_sharded_array_indexes_like_the_concatenation(tmp_path, compressed):
  lazy, full = _parts(tmp_path, compressed=compressed)
  assert lazy.shape == full.shape and len(lazy) == 13 and lazy.dtype == np.float32
  assert lazy.ndim == 3 and lazy.nbytes == full.nbytes
  assert lazy.parts[2].in_place is not bool(compressed)
  keys = [
    0,
    5,
    -1,
    np.int64(6),
    slice(None),
    slice(3, 9),
    slice(None, None, -3),
    slice(20, 30),
    np.array([12, 0, 5, 5, 6, 4]),
    np.array([[1, 2], [11, 3]]),
    [7, 8, 9],
    np.arange(13) % 2 == 0,
    (slice(2, 8), 1),
    (np.array([3, 12]), slice(None), 2),
    (4, 0, 3),
  ]
  for key in keys:
    np.testing.assert_array_equal(lazy[key], full[key], err_msg=str(key))
  np.testing.assert_array_equal(np.asarray(lazy), full)
  np.testing.assert_array_equal(np.asarray(lazy, np.float64), full.astype(np.float64))
  for bad in (13, -14, np.array([0, 13])):
    with pytest.raises(IndexError):
      lazy[bad]
  with pytest.raises(IndexError, match="boolean"):
    lazy[np.ones(3, bool)]


def test_sharded_array_reads_concurrently_and_pickles(tmp_path):
  import pickle

  lazy, full = _parts(tmp_path, sizes=(64, 3, 50), compressed=(2,))
  rng = np.random.default_rng(1)
  picks = [rng.integers(0, len(full), size=7) for _ in range(200)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(lambda rows: lazy[rows], picks))
  for rows, g in zip(picks, got):
    np.testing.assert_array_equal(g, full[rows])
  again = pickle.loads(pickle.dumps(lazy))
  np.testing.assert_array_equal(again[[0, 70, 116]], full[[0, 70, 116]])
  # A grain source over it gives the rows of the array.
  source = pipeline.ArraySource({"signal": lazy, "id": np.arange(len(full))})
  np.testing.assert_array_equal(source[66]["signal"], full[66])


def test_parts_must_fit_together(tmp_path):
  np.savez(tmp_path / "a.npz", x=np.zeros((2, 3), np.float32))
  np.savez(tmp_path / "b.npz", x=np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match="row shape or dtype"):
    shards.ShardedArray([shards.npz_part(str(tmp_path / f), "x") for f in ("a.npz", "b.npz")])
  with pytest.raises(KeyError, match="no array 'y'"):
    shards.npz_part(str(tmp_path / "a.npz"), "y")


def _write(tmp_path, n=40, shard_size=16, name="c"):
  rng = np.random.default_rng(2)
  cond = rng.normal(size=(n, 76)).astype(np.float32)
  labels = rng.random((n, 71)) < 0.2
  rows = np.arange(n) % 7
  out = str(tmp_path / name)

  def generate(c, start):  # deterministic in the sample index, like a generator
    idx = np.arange(start, start + len(c))
    return (
      np.sin(idx[:, None, None] * 0.01 + np.arange(1000) * 0.05)[:, None, 0] * np.ones((1, 12, 1))
      + idx[:, None, None] * 1e-3
    )

  cohort.write_cohort(
    generate, cond, labels, rows, out, seed=0, shard_size=shard_size, identity={"g": "t"},
    progress=False,
  )  # fmt: skip
  return out


def test_lazy_cohort_equals_the_concatenated_one(tmp_path):
  out = _write(tmp_path)
  eager = cohort.read_cohort(out)
  lazy = cohort.read_cohort(out, lazy=True)
  assert set(lazy) == set(eager) == set(cohort.FIELDS)
  assert len(lazy["signals"].parts) == 3  # 16 + 16 + 8
  for k in eager:
    assert lazy[k].shape == eager[k].shape and lazy[k].dtype == eager[k].dtype
    np.testing.assert_array_equal(np.asarray(lazy[k]), eager[k])
  np.testing.assert_array_equal(lazy["signals"][[39, 0, 17]], eager["signals"][[39, 0, 17]])


def test_lazy_cohort_reads_compressed_shards_and_refuses_broken_ones(tmp_path):
  out = _write(tmp_path)
  eager = cohort.read_cohort(out)
  path = os.path.join(out, "shard_00000016.npz")
  with np.load(path) as z:
    members = {k: z[k] for k in z.files}
  np.savez_compressed(path, **members)  # e.g. a cohort recompressed for transfer
  np.testing.assert_array_equal(
    np.asarray(cohort.read_cohort(out, lazy=True)["signals"]), eager["signals"]
  )
  np.savez(path, **{**members, "index": members["index"] + 1})
  with pytest.raises(ConfigError, match="exactly once"):
    cohort.read_cohort(out, lazy=True)
  with open(path, "wb") as f:
    f.write(b"not a zip")
  with pytest.raises(ConfigError, match="unreadable shard"):
    cohort.read_cohort(out, lazy=True)


def test_training_on_the_lazy_cohort_gives_the_same_weights(tmp_path, ptbxl):
  out = _write(tmp_path, n=48, shard_size=20)
  ccfg = tiny_cfg().classifier
  ccfg.update(arch="xresnet1d_tiny", epochs=2, batch_size=16)
  mesh = pipeline.make_mesh(2)
  va = np.flatnonzero(ptbxl.val_mask)[:24]
  results = []
  for lazy in (False, True):
    made = cohort.read_cohort(out, lazy=lazy)
    assert isinstance(made["signals"], shards.ShardedArray) == lazy
    clf = clf_lib.train_classifier(
      ccfg, made["signals"], np.asarray(made["labels"]), np.asarray(ptbxl.signals[va]),
      ptbxl.labels[va], mesh=mesh, ckpt_dir=None, seed=3, progress=False,
    )  # fmt: skip
    results.append((clf, clf.predict(made["signals"], mesh)))
  (a, pa), (b, pb) = results
  for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(a.mean, b.mean)
  np.testing.assert_array_equal(pa, pb)
  assert a.best_epoch == b.best_epoch
