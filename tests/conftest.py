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
jax.config.update(
  "jax_compilation_cache_dir", os.environ.get("ECGJAX_TEST_JAX_CACHE", "/tmp/ecgjax-test-jax-cache")
)
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


def tiny_cfg():
  """The mini preset shrunk to a few steps, for tests; classifiers (TSTR's and the judge)
  are xresnet1d_tiny, the same code path as XResNet1d-50 at a fraction of its step time
  (tests of the architecture itself build it directly)."""
  from ecgjax import configs

  cfg = configs.get_config("mini")
  cfg.classifier.arch = "xresnet1d_tiny"
  cfg.train_vae.update(steps=6, batch_size=16, checkpoint_every=3, log_every=3)
  cfg.train_unet.update(steps=6, batch_size=16, checkpoint_every=3, log_every=3)
  cfg.sample.update(num_steps=2, batch_size=16)
  return cfg


def export_random_generator(cfg, ds, workdir):
  """A generator with random weights, exported like a trained one (no training needed)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ecgjax.diffusion import generator as gen_lib
  from ecgjax.generators import latent_diffusion

  gen = gen_lib.build(cfg)
  # Jitted: an eager init runs (and compiles) every op on its own, ~30 s for the two.
  params = {
    "vae": jax.jit(gen.vae.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12, 1000))),
    "unet": jax.jit(gen.unet.init)(
      jax.random.PRNGKey(1),
      jnp.zeros((1, 4, 128)),
      jnp.zeros((1,), jnp.int32),
      jnp.zeros((1, 76)),
      jnp.zeros((1,), bool),
    ),
    "latent_scale": np.float32(1.0),
    "signal_mean": np.zeros(12, np.float32),
    "signal_std": np.ones(12, np.float32),
  }
  assert jax.tree.structure(gen_lib.param_template(gen)) == jax.tree.structure(params)
  latent_diffusion.export(workdir, params, gen_lib.generator_meta(cfg, ds.content_key))
  return workdir


def export_random_judge(cfg, workdir):
  """A judge with random weights and thresholds 0.5, exported like a trained one."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ecgjax.eval import judge as judge_lib
  from ecgjax.train import classifier as clf_lib

  model = clf_lib.build_model(cfg.classifier)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 12, 1000)), train=False))(
    jax.random.PRNGKey(0)
  )
  clf = clf_lib.Classifier(
    model, jax.device_get(variables), np.zeros(12, np.float32), np.ones(12, np.float32)
  )
  clf_lib.export(
    judge_lib.path(workdir), clf, cfg.classifier, {"thresholds": np.full(71, 0.5, np.float32)}
  )
  return workdir
