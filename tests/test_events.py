"""TensorBoard events in a directory that is a URL: written whole through the storage layer."""

import os

import numpy as np
from conftest import read_scalars

from ecgjax import storage
from ecgjax.train import events


def test_event_files_in_a_url_directory_are_written_whole_through_storage(tmp_path):
  root = "memory://events-test/w"
  assert events.events_dir(root + "/judge_train") == root + "/tensorboard/judge_train"
  writer = events.open_writer(root + "/run")
  writer.scalars(1, {"loss": 1.0}, prefix="train/")
  writer.flush()
  (name,) = storage.listdir(root + "/run")
  assert name.startswith("events.out.tfevents.")
  for step in (2, 3):
    writer.scalars(step, {"loss": 1.0 / step}, prefix="train/")
  writer.close()
  assert storage.listdir(root + "/run") == [name]  # the same object, rewritten whole
  # The object is a whole event file: TensorBoard's reader finds the three losses in it.
  with storage.open(f"{root}/run/{name}", "rb") as f:
    (tmp_path / name).write_bytes(f.read())
  assert read_scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 0.5), (3, float(np.float32(1 / 3)))]
  assert not os.path.exists("memory:")  # nothing went to a local directory of that name


def test_a_profile_of_a_url_directory_is_copied_up(tmp_path):
  import jax.numpy as jnp

  root = "memory://events-test/p"
  tracer = events.Tracer(events.Profile(0, 1), root)
  tracer.before(0)
  out = jnp.arange(8.0).sum()
  tracer.after(0, out)
  found = [os.path.join(d, f) for d, _, fs in storage.walk(root) for f in fs]
  assert any(f.endswith(".xplane.pb") and "/plugins/profile/" in f for f in found), found
