"""TensorBoard scalars and jax.profiler traces of the training stages (docs/design.md §12).

Each stage (VAE, U-Net, judge, every TSTR classifier) writes its scalars as TensorBoard
event files into its own directory, `tensorboard/<name>` beside its checkpoint directory
(`events_dir`), so `tensorboard --logdir=<workdir>` shows every stage of a run as one
TensorBoard run, while it trains. The writer is tensorboardX's (no TensorFlow); only
process 0 writes (`open_writer` gives the others a writer that drops everything).

Remote directories (`gs://...`): a URL scheme is served by a `write_bytes(path, data)`
function registered with `register_scheme`; the event file is kept in memory and
written whole on every flush (how tensorboardX's own GCS and S3 writers work), and a
profile is traced into a local temporary directory and copied file by file. That
function is the whole seam the storage layer has to fill; without one, a scheme falls
back to tensorboardX's own writers (`gs` needs google-cloud-storage, `s3` boto3).

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
from collections.abc import Callable, Mapping

import jax
from absl import logging

EVENTS_DIR = "tensorboard"

# scheme -> write_bytes(path, data): writes `data` as the whole content of `path`.
_SCHEMES: dict[str, Callable[[str, bytes], None]] = {}


def events_dir(checkpoint_dir: str) -> str:
  """Where a stage whose checkpoints go to `checkpoint_dir` writes its events:
  `<parent>/tensorboard/<name>` (a sibling, so orbax's directory and a run's scratch
  directories, which are removed when it ends, hold only their own files)."""
  checkpoint_dir = checkpoint_dir.rstrip("/")
  parent, name = os.path.split(checkpoint_dir)
  return os.path.join(parent, EVENTS_DIR, name)


def scheme(path: str) -> str | None:
  """'gs' for 'gs://bucket/x', None for a local path."""
  head, sep, _ = path.partition("://")
  return head if sep and "/" not in head else None


def register_scheme(name: str, write_bytes: Callable[[str, bytes], None]) -> None:
  """Serves event files and profiles under `name://` with `write_bytes(path, data)`."""
  import tensorboardX.record_writer as rw

  _SCHEMES[name] = write_bytes
  rw.register_writer_factory(name, _BufferedFactory(write_bytes))


class _BufferedFile:
  """A write-only file kept in memory, written whole through `write_bytes` on flush."""

  def __init__(self, path: str, write_bytes):
    self.path, self._write_bytes, self._buf = path, write_bytes, io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buf.write(data)

  def flush(self) -> None:
    self._write_bytes(self.path, self._buf.getvalue())

  def close(self) -> None:
    self.flush()


class _BufferedFactory:
  def __init__(self, write_bytes):
    self._write_bytes = write_bytes

  def open(self, path: str) -> _BufferedFile:
    return _BufferedFile(path, self._write_bytes)

  def directory_check(self, path: str) -> None:
    pass  # object stores have no directories


class ScalarWriter:
  """Scalars of one stage, appended to a new event file in `directory`.

  A resumed stage opens a new file in the same directory; TensorBoard reads all of a
  directory's files as one run.
  """

  def __init__(self, directory: str, flush_secs: int = 30):
    from tensorboardX import SummaryWriter

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
    remote = scheme(self.directory)
    if remote is None:
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
    remote = scheme(self.directory)
    if remote is not None and _copy_up(local, self.directory, remote):
      shutil.rmtree(local, ignore_errors=True)


def _copy_up(local: str, remote_dir: str, name: str) -> bool:
  """Copies a local trace to `remote_dir` through the scheme's writer; False without one."""
  write_bytes = _SCHEMES.get(name)
  if write_bytes is None:
    logging.warning(
      "no writer registered for %s:// (events.register_scheme): the profile stays in %s",
      name,
      local,
    )
    return False
  for root, _, files in os.walk(local):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), local)
      with open(os.path.join(root, f), "rb") as fh:
        write_bytes(remote_dir.rstrip("/") + "/" + rel.replace(os.sep, "/"), fh.read())
  return True
