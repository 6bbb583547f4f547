"""Stable short hashes of configs and data keys: what makes two artefacts the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(obj: Any) -> str:
  """A short stable hash of a JSON-able description (config section, data key)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def describe(section) -> dict:
  """A plain dict of a config section (ConfigDict or mapping), for fingerprints and metrics.json."""
  to_dict = getattr(section, "to_dict", None)
  return to_dict() if callable(to_dict) else dict(section)
