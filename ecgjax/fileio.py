"""Atomic file writes: a reader sees the whole file or none of it (docs/design.md §7)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """A temp path in `path`'s directory, renamed onto `path` when the block ends.

  For writers that need a file name rather than an open file (e.g. a numpy
  memmap). If the block raises (or the process is killed), the destination is
  untouched and the temp file is removed.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
  )
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write(path: str, write, mode: str = "w") -> str:
  """Writes through a temp file in the same directory and renames it into place.

  `write(f)` fills the open file; on failure the destination is untouched.
  """
  encoding = {"encoding": "utf-8"} if "b" not in mode else {}
  with atomic_path(path) as tmp, open(tmp, mode, **encoding) as f:
    write(f)
  return path


def write_json(path: str, obj) -> str:
  return atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=float))
