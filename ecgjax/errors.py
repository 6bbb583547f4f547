"""User-facing errors, and the one-line exit that every CLI gives them (docs/design.md §7, §8)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging


class DataError(ValueError):
  """Bad input data; the message names the file, record, field or value."""


class ConfigError(ValueError):
  """A flag or config value that cannot work; the message names it."""


class CheckpointError(ValueError):
  """A missing, corrupt or mismatched checkpoint; the message names it."""


USER_ERRORS = (DataError, ConfigError, CheckpointError)


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run`, with user errors printed as one line and exit status 1."""

  def wrapped(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)
