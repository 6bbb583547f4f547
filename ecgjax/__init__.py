"""ecgjax: synthetic 12-lead ECG cohorts, sampling policies and TSTR evaluation in JAX/Flax."""

import glob as _glob
import importlib.util as _util
import os as _os
from importlib import metadata as _metadata

try:
  __version__ = _metadata.version("ecgjax")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
  __version__ = "0.1.0"

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips are PCI devices of Google's


def _has_tpu_chip() -> bool:
  for path in _glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      pass
  return False


def _skip_the_tpu_runtime_without_a_tpu() -> None:
  """libtpu (the `tpu` extra) serves two uses: the runtime on a TPU VM, and the TPU
  compiler on any machine (experiments.compile_tpu). On a host without a TPU chip JAX
  would still start the runtime, which fails with screenfuls of worker-hostname errors
  before JAX falls back to the CPU; there, unless JAX_PLATFORMS says otherwise (or a CUDA
  plugin is installed too), JAX uses the CPU (the TPU compiler needs no runtime:
  jax.experimental.topologies). Runs at import, before any backend starts."""
  if "JAX_PLATFORMS" in _os.environ or _util.find_spec("libtpu") is None or _has_tpu_chip():
    return
  if any(_util.find_spec(m) for m in ("jax_cuda13_plugin", "jax_cuda12_plugin")):
    return
  _os.environ["JAX_PLATFORMS"] = "cpu"  # for the processes this one starts
  import jax

  jax.config.update("jax_platforms", "cpu")  # jax may have read the environment already


_skip_the_tpu_runtime_without_a_tpu()
