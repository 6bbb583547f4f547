"""Flags shared by the entry points, and multi-host start-up."""

from __future__ import annotations

import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from ecgjax import configs, storage
from ecgjax.data import pipeline
from ecgjax.errors import ConfigError
from ecgjax.train import events

_FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the flags every pipeline entry point shares; a main calls it at import.

  Flags belong to the mains: no library module defines one at import time.
  Defining is idempotent, so an entry point that imports another (e.g. to
  reuse its helpers) does not define a flag twice.
  """
  if "preset" in _FLAGS:
    return
  flags.DEFINE_enum(
    "preset",
    "mini",
    configs.PRESETS,
    "Sizes and counts: 'paper' (the paper's figures) or 'mini' (2 CPU cores, minutes).",
  )
  config_flags.DEFINE_config_dict(
    "config",
    configs.get_config("mini"),
    "Override any preset value, e.g. --config.train_unet.steps=5000 (applied on top of --preset).",
  )
  flags.DEFINE_string(
    "data_dir",
    None,
    "PTB-XL root in its official layout, a local path or a URL (gs://bucket/ptb-xl/1.0.3); "
    "default: the embedded 400-record slice.",
  )
  flags.DEFINE_string(
    "workdir",
    "workdir",
    "Where checkpoints, cohorts and results go: a local path or a URL (gs://bucket/dir), "
    "which a slice of several hosts needs.",
  )
  flags.DEFINE_integer("num_devices", None, "Devices on the ('data',) mesh; default: all.")
  flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "jax.distributed.initialize(): 'auto' when launched on a TPU pod slice or with a coordinator set.",
  )
  flags.DEFINE_string(
    "profile_steps",
    None,
    "START:STOP: trace training steps START..STOP-1 (0-based) of every stage with "
    "jax.profiler into the stage's TensorBoard directory (<workdir>/.../tensorboard/<stage>), "
    "for TensorBoard's profile plugin (xprof).",
  )


def data_dir() -> str | None:
  """--data_dir (None: the embedded slice)."""
  return _FLAGS.data_dir


def workdir() -> str:
  """--workdir."""
  return _FLAGS.workdir


_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _launched_multihost() -> bool:
  """A coordinator in the environment, or a Cloud TPU VM (its chips are /dev/accel* or
  /dev/vfio devices; jax.distributed.initialize() reads the slice from the metadata server)."""
  if any(v in os.environ for v in _MULTIHOST_ENV) or "," in os.environ.get(
    "TPU_WORKER_HOSTNAMES", ""
  ):
    return True
  return os.path.exists("/dev/accel0") or (
    os.path.isdir("/dev/vfio") and bool(os.environ.get("TPU_ACCELERATOR_TYPE"))
  )


def _process_from_env() -> dict:
  """num_processes and process_id from JAX_NUM_PROCESSES / JAX_PROCESS_ID, which
  launch/multiprocess.sh sets (jax.distributed.initialize() reads only the coordinator's
  address from the environment); absent ones are left to jax's cluster detection."""
  out = {}
  for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    value = os.environ.get(name)
    if value is None:
      continue
    try:
      out[arg] = int(value)
    except ValueError:
      raise ConfigError(f"{name}={value!r}: expected an integer") from None
  return out


def start(evaluation: str | None = None) -> tuple:
  """Initialises multi-host JAX if asked or detected; returns (config, mesh).

  evaluation: the registered evaluation the main runs (ecgjax/eval/registry.py); its
  optional packages are checked first, so a missing one is refused before any work.
  Under several processes the workdir must be storage every process sees: process 0
  writes a marker into it and every other process must find it (`pipeline.check_shared_directory`).
  A workdir or data URL that cannot work (no backend for its scheme, no credentials, no
  such bucket) is refused first, before anything is written.
  """
  if evaluation is not None:
    from ecgjax.eval import registry

    registry.get(evaluation).require()
  storage.check(_FLAGS.workdir, "--workdir")
  if _FLAGS.data_dir is not None:
    storage.check(_FLAGS.data_dir, "--data_dir")
  want = _FLAGS.distributed == "on" or (_FLAGS.distributed == "auto" and _launched_multihost())
  if want:
    jax.distributed.initialize(**_process_from_env())
    logging.info("process %d of %d", jax.process_index(), jax.process_count())
  enable_compilation_cache()
  try:
    events.set_profile(events.Profile.parse(_FLAGS.profile_steps))
  except ValueError as e:
    raise ConfigError(f"--profile_steps={_FLAGS.profile_steps}: {e}") from None
  cfg = configs.from_flags(_FLAGS.preset)
  try:
    mesh = pipeline.make_mesh(_FLAGS.num_devices)
  except ValueError as e:
    raise ConfigError(f"--num_devices: {e}") from None
  pipeline.check_shared_directory(_FLAGS.workdir, "--workdir")
  return cfg, mesh


def enable_compilation_cache() -> None:
  """XLA's persistent cache: a rerun (or a resumed run) skips recompiling."""
  path = os.environ.get("ECGJAX_JAX_CACHE_DIR") or os.path.join(storage.default_cache_dir(), "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def is_writer() -> bool:
  """Only process 0 writes result files."""
  return jax.process_index() == 0
