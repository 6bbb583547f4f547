"""TensorBoard events through a registered URL scheme (the seam a storage layer fills)."""

import os

import numpy as np
from conftest import read_scalars

from ecgjax.train import events


def test_a_registered_scheme_receives_whole_event_files(tmp_path):
  store = {}
  events.register_scheme("memtest", lambda path, data: store.__setitem__(path, bytes(data)))
  assert events.scheme("memtest://bucket/run") == "memtest" and events.scheme("/a/b") is None
  assert (
    events.events_dir("memtest://bucket/w/judge_train")
    == "memtest://bucket/w/tensorboard/judge_train"
  )
  writer = events.open_writer("memtest://bucket/run")
  for step in (1, 2, 3):
    writer.scalars(step, {"loss": 1.0 / step}, prefix="train/")
  writer.close()
  (path,) = store
  assert path.startswith("memtest://bucket/run/events.out.tfevents.")
  # The bytes are a whole event file: TensorBoard's reader finds the three losses in it.
  (tmp_path / os.path.basename(path)).write_bytes(store[path])
  assert read_scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 0.5), (3, float(np.float32(1 / 3)))]
