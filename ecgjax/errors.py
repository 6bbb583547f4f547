"""User-facing errors, and the one-line exit that every CLI gives them (docs/design.md §7, §8)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags, logging


class DataError(ValueError):
  """Bad input data; the message names the file, record, field or value."""


class ConfigError(ValueError):
  """A flag or config value that cannot work; the message names it."""


class CheckpointError(ValueError):
  """A missing, corrupt or mismatched checkpoint; the message names it."""


class StorageError(ValueError):
  """A path or URL that cannot be read or written (no backend for its scheme, no
  credentials, no such bucket or object); the message names it."""


USER_ERRORS = (DataError, ConfigError, CheckpointError, StorageError)


def _in_multiprocess_job() -> bool:
  jax = sys.modules.get("jax")  # not imported here: this module sits below everything
  return jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run`, with user errors printed as one line and exit status 1."""

  def wrapped(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      if _in_multiprocess_job():
        # jax.distributed's orderly exit waits (minutes) at a barrier for every process,
        # and a process that did not fail may be waiting in a collective instead: leave at
        # once, so the launcher (launch/multiprocess.sh) or the cluster stops the job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
      sys.exit(1)

  app.run(wrapped)
