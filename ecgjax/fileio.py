"""Atomic file writes: a reader sees the whole file or none of it (SPEC 7)."""

from __future__ import annotations

import json
import os
import tempfile


def atomic_write(path: str, write, mode: str = "w") -> str:
  """Writes through a temp file in the same directory and renames it into place.

  `write(f)` fills the open file; if it raises (or the process is killed),
  the destination is untouched and the temp file is removed.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
  )
  try:
    with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_json(path: str, obj) -> str:
  return atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=float))
