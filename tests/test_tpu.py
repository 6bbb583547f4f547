"""Programs compiled for a Cloud TPU slice by XLA's TPU compiler (ecgjax/tpu.py), on this CPU:
the train steps hold their gradient all-reduce and gather no parameter, the sampler
communicates nothing, everything fits a v5e chip, and a smaller batch is estimated faster.
Runs where libtpu is installed (`pip install -e '.[tpu]'`)."""

import pytest

from ecgjax import tpu

pytestmark = pytest.mark.xdist_group("tpu")
needs_libtpu = pytest.mark.skipif(tpu.available() is not None, reason=str(tpu.available()))


@pytest.fixture(scope="module")
def mesh():
  return tpu.slice_mesh("v5e:2x2")


def _compiled(cfg, mesh, names, batch=None):
  progs = {p.name: p for p in tpu.programs(cfg, mesh, batch=batch)}
  return {n: tpu.analyse(progs[n], tpu.CHIPS["v5e"], mesh.size) for n in names}


def _cfg():
  from conftest import tiny_cfg

  cfg = tiny_cfg()
  cfg.classifier.batch_size = 32
  return cfg


@pytest.fixture(scope="module")
def mini(mesh):
  """The mini U-Net train step, sampler and classifier train step for v5e:2x2, compiled
  once for the module (a TPU compile takes tens of seconds here)."""
  return _compiled(_cfg(), mesh, ("unet_train", "sampler", "classifier_train"))


@needs_libtpu
def test_train_steps_reduce_gradients_and_the_sampler_communicates_nothing(mini):
  r = mini
  for name, res in r.items():
    assert res["fits"] and 0 < res["hbm_bytes"] < tpu.CHIPS["v5e"].hbm_bytes, name
    assert res["flops_per_device"] > 0, name
  assert r["unet_train"]["seconds"] > 0 and r["classifier_train"]["seconds"] > 0
  # The whole sampler is a scan, whose cost XLA counts once: compiled for memory only.
  assert r["sampler"]["seconds"] is None and r["sampler"]["time_source"] == "not costed"
  for name in ("unet_train", "classifier_train"):
    c = r[name]["collectives"]
    assert c.get("all-reduce", {}).get("count", 0) >= 1, (name, c)
    assert "all-gather" not in c, (name, c)  # parameters stay replicated, never gathered
  assert r["sampler"]["collectives"] == {}  # each device denoises its own rows


@needs_libtpu
def test_the_estimate_falls_when_the_per_device_batch_halves(mini, mesh):
  full = mini["unet_train"]
  half = _compiled(_cfg(), mesh, ("unet_train",), {"unet_train": 8})["unet_train"]
  assert half["per_device_batch"] == full["per_device_batch"] // 2 == 2
  assert 0 < half["seconds"] < full["seconds"]
  assert half["flops_per_device"] < full["flops_per_device"]


def test_collectives_are_read_from_hlo_text():
  hlo = """
  %all-reduce.1 = f32[512]{0} all-reduce(f32[512]{0} %x), channel_id=1
  %ag = (bf16[4,8]{1,0}, s32[]) all-gather-start(bf16[1,8]{1,0} %y), dimensions={0}
  %done = bf16[4,8]{1,0} all-gather-done(%ag)
  %add = f32[512]{0} add(%a, %b)
  """
  assert tpu.collectives(hlo) == {
    "all-reduce": {"count": 1, "bytes": 2048},
    "all-gather": {"count": 1, "bytes": 4 * 8 * 2 + 4},
  }


def test_batch_search_fits_a_line_through_two_compilations():
  # 1 GiB fixed + 3 MiB a row: 16 GiB hold (16 - 1) GiB / 3 MiB = 5120 rows; 4096 is the
  # largest power of two under it.
  gib, mib = 2**30, 2**20
  points = [(32, gib + 32 * 3 * mib), (64, gib + 64 * 3 * mib)]
  assert tpu.fit_batch(points, 16 * gib, limit=1 << 20) == 4096
  assert tpu.fit_batch(points, 16 * gib, limit=1024) == 1024
  assert tpu.fit_batch(points, gib + 5 * 3 * mib, limit=1024) == 4  # under the first point
  assert tpu.fit_batch([(8, gib), (16, gib)], 2 * gib, limit=512) == 512  # flat: the limit


@needs_libtpu
def test_importing_ecgjax_without_a_tpu_chip_keeps_jax_off_the_tpu_runtime():
  """With libtpu installed and no TPU chip, JAX would start libtpu's runtime, which fails
  with worker-hostname errors on stderr before falling back to the CPU; importing ecgjax
  first keeps JAX on the CPU, silently (ecgjax/__init__.py)."""
  import os
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = "import ecgjax, jax, os; print(jax.devices()[0].platform, os.environ['JAX_PLATFORMS'])"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == ["cpu", "cpu"]
  assert "hostname" not in proc.stderr and "TPU" not in proc.stderr, proc.stderr[-2000:]
