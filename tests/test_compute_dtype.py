"""`--config.vae.compute_dtype` / `--config.unet.compute_dtype`: bf16 compute, float32 state.

bf16 keeps 8 bits of mantissa (relative rounding 2**-9 ~ 0.2 %), and every
convolution, dot and activation rounds; the stated tolerances are on the
largest error relative to the float32 output's largest entry, on `mini`
models with random weights (where the output layers are not zero):

- one U-Net pass: 3 %, one VAE decode: 3 %;
- the guided sampler (4 DDIM steps, w = 3, decode): 10 % (random weights amplify
  the guided difference; measured 4.8 %, RMS 3.5 %; single passes measured 1.1-1.2 %).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import configs
from ecgjax.diffusion import ddim
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import ConfigError
from ecgjax.models.embeddings import COND_DIM, NUM_LABELS
from ecgjax.models.vae import VAE
from ecgjax.train import generator as train_lib
from ecgjax.train.state import TrainState, adamw

UNET_RTOL = 0.03
VAE_RTOL = 0.03
SAMPLE_RTOL = 0.10


def _cfgs(**unet):
  f32 = configs.get_config("mini")
  f32.unet.update(unet)
  bf16 = configs.get_config("mini")
  bf16.unet.update(unet)
  bf16.vae.compute_dtype = bf16.unet.compute_dtype = "bfloat16"
  return f32, bf16


def _random_params(shapes, seed):
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      v = rng.normal(size=s.shape) / np.sqrt(int(np.prod(s.shape[:-1])))
    elif name == "scale":
      v = 1.0 + 0.1 * rng.normal(size=s.shape)
    elif name == "bias":
      v = 0.1 * rng.normal(size=s.shape)
    else:
      v = rng.normal(size=s.shape)
    return jnp.asarray(v, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _params(gen):
  tmpl = gen_lib.param_template(gen)
  params = {"vae": _random_params(tmpl["vae"], 0), "unet": _random_params(tmpl["unet"], 1)}
  params.update(latent_scale=jnp.float32(1.0), signal_mean=jnp.zeros(12), signal_std=jnp.ones(12))
  return params


def _cond(b, seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.random((b, NUM_LABELS)) < 0.2).astype(np.float32)
  return np.concatenate([labels, rng.normal(size=(b, COND_DIM - NUM_LABELS))], 1).astype(np.float32)


def _rel_err(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_parameters_are_float32_whatever_the_compute_dtype():
  f32, bf16 = _cfgs()
  g32, g16 = gen_lib.build(f32), gen_lib.build(bf16)
  assert g16.unet.dtype == g16.vae.dtype == jnp.bfloat16 and g32.unet.dtype == jnp.float32
  t32, t16 = gen_lib.param_template(g32), gen_lib.param_template(g16)
  assert jax.tree.structure(t32) == jax.tree.structure(t16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(t16))


@pytest.mark.parametrize("kind", ["linear", "nle"])
def test_bf16_unet_output_is_float32_and_close(kind):
  f32, bf16 = _cfgs(cond_embedding=kind)
  g32, g16 = gen_lib.build(f32), gen_lib.build(bf16)
  params = _params(g32)["unet"]
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 4, 128)).astype(np.float32)
  t = rng.integers(0, 1000, 4).astype(np.int32)
  drop = np.array([True, False, False, True])
  ref = jax.jit(g32.unet.apply)(params, x, t, _cond(4), drop)
  ours = jax.jit(g16.unet.apply)(params, x, t, _cond(4), drop)
  assert ours.dtype == jnp.float32
  err = _rel_err(ours, ref)
  print(f"U-Net ({kind}) bf16 vs float32: {err:.4f} of max |eps|")
  assert 0 < err < UNET_RTOL


def test_bf16_vae_decode_is_float32_and_close():
  f32, bf16 = _cfgs()
  g32, g16 = gen_lib.build(f32), gen_lib.build(bf16)
  params = _params(g32)["vae"]
  z = np.random.default_rng(3).normal(size=(2, 4, 128)).astype(np.float32)
  dec = lambda g: jax.jit(lambda p, z: g.vae.apply(p, z, method=VAE.decode))(params, z)
  ref, ours = dec(g32), dec(g16)
  assert ours.dtype == jnp.float32
  err = _rel_err(ours, ref)
  print(f"VAE decode bf16 vs float32: {err:.4f} of max |x|")
  assert 0 < err < VAE_RTOL


def test_bf16_sampler_output_is_float32_and_close():
  f32, bf16 = _cfgs()
  g32, g16 = gen_lib.build(f32), gen_lib.build(bf16)
  params = _params(g32)
  keys = ddim.sample_keys_for(jax.random.key(0), 3)
  run = lambda g: jax.jit(lambda p, c, k: g.sample_with_keys(p, c, k, 3.0, 0.0, num_steps=4))(
    params, _cond(3), keys
  )
  ref, ours = run(g32), run(g16)
  assert ours.dtype == jnp.float32 and ours.shape == (3, 12, 1000)
  err = _rel_err(ours, ref)
  print(f"sampler bf16 vs float32: {err:.4f} of max |x|")
  assert 0 < err < SAMPLE_RTOL


def test_bf16_training_keeps_float32_state():
  """One U-Net and one VAE step: params, optimiser state and EMA stay float32, finite."""
  _, bf16 = _cfgs()
  gen = gen_lib.build(bf16)
  params = _params(gen)
  tx = adamw(1e-3, 1e-4)
  rng = np.random.default_rng(4)
  key = jax.random.key(1)

  unet_step = jax.jit(train_lib.make_unet_step(gen.unet, tx, gen.schedule, 0.1, 0.99))
  batch = {"z": rng.normal(size=(4, 4, 128)).astype(np.float32), "cond": _cond(4)}
  state, metrics = unet_step(TrainState.create(params["unet"], tx, ema=True), batch, key)
  vae_step = jax.jit(train_lib.make_vae_step(gen.vae, tx, 1e-4, np.zeros(12), np.ones(12)))
  x = {"signal": rng.normal(size=(2, 12, 1000)).astype(np.float32)}
  vstate, vmetrics = vae_step(TrainState.create(params["vae"], tx), x, key)
  for tree in (state, vstate):
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in leaves)
  assert metrics["loss"].dtype == vmetrics["loss"].dtype == jnp.float32
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(vmetrics["loss"]))


def test_compute_dtype_config_and_fingerprints():
  f32, bf16 = _cfgs()
  # float32 fingerprints are those of a config without the key.
  plain = dict(f32.unet)
  del plain["compute_dtype"]
  assert gen_lib.describe_model(f32.unet) == plain
  assert gen_lib.describe_model(bf16.unet)["compute_dtype"] == "bfloat16"
  # An export serves either compute dtype.
  assert gen_lib.generator_meta(f32, "k") == gen_lib.generator_meta(bf16, "k")
  bad = configs.get_config("mini")
  bad.vae.compute_dtype = "float16"
  with pytest.raises(ConfigError, match="vae.compute_dtype"):
    gen_lib.build(bad)
