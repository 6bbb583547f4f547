"""Test session setup: 8 fake CPU devices for sharding tests, shared fixtures."""

import os
import shutil

# Must happen before jax initialises its backends (first jax import in this process).
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

# Tests build the same small programs many times (each training run jits its
# own step); XLA's persistent cache turns the repeats into cache hits.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("ECGJAX_TEST_JAX_CACHE", "/tmp/ecgjax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from ecgjax.data import embedded_data_dir, load_ptbxl  # noqa: E402


@pytest.fixture(scope="session")
def ptbxl(tmp_path_factory):
  """The embedded 400-record slice, loaded once per test session."""
  return load_ptbxl(cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False)


def make_ptbxl_root(dst, ecg_ids=None):
  """Copies a subset of the embedded slice into `dst` in the official layout.

  Default: 48 records, half of them with an observed height and weight so the
  train folds have something to impute from.
  """
  src = embedded_data_dir()
  db = pd.read_csv(os.path.join(src, "ptbxl_database.csv"))
  if ecg_ids is None:
    measured = db["height"].notna() & db["weight"].notna()
    ecg_ids = list(db[measured]["ecg_id"][:24]) + list(db[~measured]["ecg_id"][:24])
  db = db[db["ecg_id"].isin(ecg_ids)]
  os.makedirs(dst, exist_ok=True)
  db.to_csv(os.path.join(dst, "ptbxl_database.csv"), index=False)
  shutil.copy(os.path.join(src, "scp_statements.csv"), dst)
  for rel in db["filename_lr"]:
    os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
    for ext in (".hea", ".dat"):
      shutil.copy(os.path.join(src, rel + ext), os.path.join(dst, rel + ext))
  return str(dst)


@pytest.fixture
def small_root(tmp_path):
  return make_ptbxl_root(tmp_path / "ptbxl")
