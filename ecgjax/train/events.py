"""TensorBoard scalars and jax.profiler traces of the training stages (docs/design.md §12).

Each stage (VAE, U-Net, judge, every TSTR classifier) writes its scalars as TensorBoard
event files into its own directory, `tensorboard/<name>` beside its checkpoint directory
(`events_dir`), so `tensorboard --logdir=<workdir>` shows every stage of a run as one
TensorBoard run, while it trains. The writer is tensorboardX's (no TensorFlow); only
process 0 writes (`open_writer` gives the others a writer that drops everything).

Remote directories (`gs://...`, any URL of ecgjax.storage): objects cannot be appended
to, so an event file is kept in memory and written whole through the storage layer on
every flush (how tensorboardX's own GCS and S3 writers work; tensorboardX is told to use
this writer for the URL's scheme), and a profile is traced into a local temporary
directory and copied up file by file.

Profiles: `Profile(start, stop)` traces steps start..stop-1 (0-based, as counted by the
loop) of every stage with `jax.profiler` into the stage's event directory
(`plugins/profile/<run>/<host>.xplane.pb`), which TensorBoard's profile plugin (xprof)
opens. Mains set it from `--profile_steps=START:STOP` (`set_profile`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping

import jax

from ecgjax import storage

EVENTS_DIR = "tensorboard"


def events_dir(checkpoint_dir: str) -> str:
  """Where a stage whose checkpoints go to `checkpoint_dir` writes its events:
  `<parent>/tensorboard/<name>` (a sibling, so orbax's directory and a run's scratch
  directories, which are removed when it ends, hold only their own files)."""
  checkpoint_dir = checkpoint_dir.rstrip("/")
  parent, name = os.path.split(checkpoint_dir)
  return os.path.join(parent, EVENTS_DIR, name)


def _serve(protocol: str) -> None:
  """Has tensorboardX write event files under `protocol://` through the storage layer."""
  import tensorboardX.record_writer as rw

  if rw.REGISTERED_FACTORIES.get(protocol).__class__ is not _BufferedFactory:
    rw.register_writer_factory(protocol, _BufferedFactory())


def _write_bytes(path: str, data: bytes) -> None:
  storage.atomic_write(path, lambda f: f.write(data), mode="wb")


class _BufferedFile:
  """A write-only file kept in memory, written whole through `write_bytes` on flush."""

  def __init__(self, path: str):
    self.path, self._buf = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buf.write(data)

  def flush(self) -> None:
    _write_bytes(self.path, self._buf.getvalue())

  def close(self) -> None:
    self.flush()


class _BufferedFactory:
  def open(self, path: str) -> _BufferedFile:
    return _BufferedFile(path)

  def directory_check(self, path: str) -> None:
    pass  # object stores have no directories


class ScalarWriter:
  """Scalars of one stage, appended to a new event file in `directory`.

  A resumed stage opens a new file in the same directory; TensorBoard reads all of a
  directory's files as one run.
  """

  def __init__(self, directory: str, flush_secs: int = 30):
    from tensorboardX import SummaryWriter

    if storage.is_url(directory):
      _serve(storage.protocol(directory))

    self.directory = directory
    # tensorboardX names a file by the second and the host: a suffix of its own keeps a
    # writer opened within the same second (a quickly resumed stage) from truncating it.
    suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
    self._writer = SummaryWriter(directory, flush_secs=flush_secs, filename_suffix=suffix)

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
    for name, value in values.items():
      self._writer.add_scalar(prefix + name, float(value), global_step=int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class NullWriter:
  """The writer of every process but 0, and of stages without a directory."""

  directory = None

  def scalars(self, step, values, prefix=""):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def open_writer(directory: str | None) -> ScalarWriter | NullWriter:
  """Process 0's writer into `directory` (None: none); a NullWriter elsewhere."""
  if directory is None or jax.process_index() != 0:
    return NullWriter()
  return ScalarWriter(directory)


@dataclasses.dataclass(frozen=True)
class Profile:
  """Trace steps [start, stop) of a stage (0-based step indices)."""

  start: int
  stop: int

  @classmethod
  def parse(cls, spec: str | None) -> Profile | None:
    """'START:STOP' (e.g. '10:20') -> Profile; None or '' -> None (ValueError if malformed)."""
    if not spec:
      return None
    try:
      start, stop = (int(s) for s in spec.split(":"))
    except ValueError:
      raise ValueError("expected START:STOP, two step numbers") from None
    if not 0 <= start < stop:
      raise ValueError("expected 0 <= START < STOP")
    return cls(start, stop)


_profile: Profile | None = None


def set_profile(profile: Profile | None) -> None:
  """The steps every following stage of this process traces (the mains' --profile_steps).

  A process-wide setting, like jax.profiler itself (one trace at a time per process).
  """
  global _profile
  _profile = profile


def get_profile() -> Profile | None:
  return _profile


class Tracer:
  """Starts and stops one jax.profiler trace around a stage's steps (process 0 only)."""

  def __init__(self, profile: Profile | None, directory: str | None):
    self.profile = profile if directory is not None and jax.process_index() == 0 else None
    self.directory = directory
    self._local = None

  def before(self, step: int) -> None:
    """Called before step `step` (0-based) is dispatched."""
    if self.profile is None or step != self.profile.start:
      return
    if not storage.is_url(self.directory):
      os.makedirs(self.directory, exist_ok=True)
      self._local = self.directory
    else:
      self._local = tempfile.mkdtemp(prefix="ecgjax-profile-")
    jax.profiler.start_trace(self._local)

  def after(self, step: int, outputs) -> None:
    """Called after step `step` was dispatched, with its outputs (blocked on at the end)."""
    if self._local is None or step + 1 != self.profile.stop:
      return
    jax.block_until_ready(outputs)
    self.stop()

  def stop(self) -> None:
    """Ends the trace (also when the stage ends early); copies a remote one up."""
    if self._local is None:
      return
    jax.profiler.stop_trace()
    local, self._local = self._local, None
    if storage.is_url(self.directory):
      _copy_up(local, self.directory)
      shutil.rmtree(local, ignore_errors=True)


def _copy_up(local: str, remote_dir: str) -> None:
  """Copies a local trace into `remote_dir` through the storage layer."""
  for root, _, files in os.walk(local):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), local)
      storage.copy(os.path.join(root, f), remote_dir.rstrip("/") + "/" + rel.replace(os.sep, "/"))
