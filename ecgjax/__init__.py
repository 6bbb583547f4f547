"""ecgjax: synthetic 12-lead ECG cohorts, sampling policies and TSTR evaluation in JAX/Flax."""

from importlib import metadata as _metadata

try:
  __version__ = _metadata.version("ecgjax")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
  __version__ = "0.1.0"
