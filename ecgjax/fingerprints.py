"""Stable short hashes of configs and data keys: what makes two artefacts the same."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def fingerprint(obj: Any) -> str:
  """A short stable hash of a JSON-able description (config section, data key)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def describe(section) -> dict:
  """A plain dict of a config section (ConfigDict or mapping), for fingerprints and metrics.json."""
  to_dict = getattr(section, "to_dict", None)
  return to_dict() if callable(to_dict) else dict(section)


def differences(stored: Any, asked: Any, prefix: str = "") -> list[str]:
  """Where a stored identity (read back from JSON) differs from the one asked for: one
  "dotted.field (on-disk value on disk, asked value asked)" per differing leaf. `asked`
  goes through JSON first, so tuples and lists, or NaN and NaN, count as equal."""
  asked = json.loads(json.dumps(asked, default=str))
  if isinstance(stored, dict) and isinstance(asked, dict):
    out = []
    for k in sorted(set(stored) | set(asked)):
      out += differences(stored.get(k), asked.get(k), f"{prefix}{k}.")
    return out
  both_nan = all(isinstance(v, float) and math.isnan(v) for v in (stored, asked))
  if stored == asked or both_nan:
    return []
  return [f"{prefix[:-1]} ({stored!r} on disk, {asked!r} asked)"]
