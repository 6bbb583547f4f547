"""The data-parallel DDIM sampler on 8 (fake CPU) devices.

Needs 8 devices, which on CPU means XLA_FLAGS must carry
--xla_force_host_platform_device_count=8 before jax initialises its backend;
the test session's conftest sets it, and to run this file alone:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest tests/test_sampler_sharding.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax.diffusion import ddim
from ecgjax.diffusion.schedule import linear_schedule

N_DEVICES = 8
BATCH = 16
SHAPE = (4, 8)
NUM_STEPS = 6
SCHED = linear_schedule()

pytestmark = pytest.mark.skipif(
  jax.device_count() < N_DEVICES,
  reason=(
    f"needs {N_DEVICES} devices, found {jax.device_count()}; set "
    f"XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES} "
    "before jax is first imported"
  ),
)


class ToyDenoiser(nn.Module):
  """A small per-sample MLP that uses x, t, cond and the drop mask."""

  @nn.compact
  def __call__(self, x, t, cond, drop):
    b = x.shape[0]
    c = jnp.where(drop[:, None], 0.0, cond)
    h = jnp.concatenate([x.reshape(b, -1), c, jnp.sin(t[:, None] / 100.0)], -1)
    h = nn.tanh(nn.Dense(32)(h))
    return nn.Dense(int(np.prod(x.shape[1:])))(h).reshape(x.shape)


MODEL = ToyDenoiser()


def denoise(params, x, t, cond, drop):
  return MODEL.apply(params, x, t, cond, drop)


@pytest.fixture(scope="session")
def setup():
  rng = np.random.default_rng(0)
  params = MODEL.init(
    jax.random.key(0),
    np.zeros((2,) + SHAPE, np.float32),
    np.zeros((2,), np.int32),
    np.zeros((2, 76), np.float32),
    np.zeros((2,), bool),
  )
  cond = rng.standard_normal((BATCH, 76), np.float32)
  keys = rng.integers(0, 2**32, (BATCH, 2), dtype=np.uint32)
  mesh = jax.make_mesh((N_DEVICES,), ("data",))
  sampler = ddim.make_sharded_sampler(denoise, SCHED, mesh, shape=SHAPE, num_steps=NUM_STEPS)
  # Unsharded: numpy inputs are uncommitted, so this runs on one device.
  reference = jax.jit(
    lambda p, c, k, w, e: ddim.ddim_sample_with_keys(
      denoise, p, c, k, SCHED, shape=SHAPE, num_steps=NUM_STEPS, eta=e, cfg_scale=w
    )
  )
  return params, cond, keys, mesh, sampler, reference


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sharded_sampler_matches_unsharded(setup, eta):
  params, cond, keys, mesh, sampler, reference = setup
  out = sampler(params, cond, keys, 3.0, eta)
  want = reference(params, cond, keys, 3.0, eta)
  assert out.shape == (BATCH,) + SHAPE
  assert len(want.sharding.device_set) == 1
  # Same per-sample arithmetic; only XLA's matmul tiling may differ per shard.
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), out.ndim)
  shards = out.addressable_shards
  assert len(shards) == N_DEVICES
  assert {s.data.shape[0] for s in shards} == {BATCH // N_DEVICES}


def test_sharded_sampler_needs_no_communication(setup):
  """Samples are independent, so the compiled program should move no data
  between devices; the interleaved CFG doubling is what keeps it so."""
  params, cond, keys, _, sampler, _ = setup
  hlo = sampler.lower(params, cond, keys, 3.0, 1.0).compile().as_text()
  for op in ("all-to-all", "collective-permute", "all-gather", "all-reduce"):
    assert op not in hlo, op


def test_sharded_sampler_rejects_indivisible_batch(setup):
  params, cond, keys, _, sampler, _ = setup
  with pytest.raises(ValueError, match="12"):
    sampler(params, cond[:12], keys[:12], 3.0, 0.0)
