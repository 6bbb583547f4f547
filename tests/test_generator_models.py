"""Generator models: sizes at paper scale (shape-only), behaviour at mini scale."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.embeddings import NUM_LABELS, NLECondEmbedding
from ecgjax.models.layers import count_params, sinusoidal_embedding
from ecgjax.models.unet import UNET_MINI, UNET_PAPER, UNet
from ecgjax.models.vae import VAE, VAE_MINI, VAE_PAPER, kl_divergence

PAPER_VAE_PARAMS = 4.71e6
PAPER_UNET_PARAMS = 5.36e6


def _unet_inputs(b, key=0):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(key), 4)
  x = jax.random.normal(k1, (b, 4, 128))
  t = jax.random.randint(k2, (b,), 0, 1000)
  labels = jax.random.bernoulli(k3, 0.2, (b, NUM_LABELS)).astype(jnp.float32)
  demo = jax.random.normal(k4, (b, 5))
  return x, t, jnp.concatenate([labels, demo], axis=-1)


def _random_params(shapes, seed=1):
  """Weights drawn on the host for eval_shape'd params.

  Compiling `init` costs seconds per model on CPU (threefry draws), and the
  zero-initialised output layers would make every output 0, so that every
  comparison below would pass trivially.
  """
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(s.shape[:-1]))
      v = rng.normal(size=s.shape) / np.sqrt(fan_in)
    elif name == "scale":
      v = 1.0 + 0.1 * rng.normal(size=s.shape)
    elif name == "bias":
      v = 0.1 * rng.normal(size=s.shape)
    else:  # embedding tables, null embedding
      v = rng.normal(size=s.shape)
    return jnp.asarray(v, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _unet_shapes(**cfg):
  model = UNet(**cfg)
  x, t, cond = _unet_inputs(1)
  return jax.eval_shape(model.init, jax.random.key(0), x, t, cond, jnp.zeros((1,), bool))


# --- paper sizes, no compute --------------------------------------------------


def test_vae_paper_param_count_and_latent_shape():
  model = VAE(**VAE_PAPER)
  x = jax.ShapeDtypeStruct((3, 12, 1000), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)
  n = count_params(params)
  print(f"VAE paper params: {n:,}")
  assert abs(n / PAPER_VAE_PARAMS - 1) < 0.05, n
  mean, logvar = jax.eval_shape(functools.partial(model.apply, method=VAE.encode), params, x)
  assert mean.shape == logvar.shape == (3, 4, 128)
  z = jax.ShapeDtypeStruct((3, 4, 128), jnp.float32)
  recon = jax.eval_shape(functools.partial(model.apply, method=VAE.decode), params, z)
  assert recon.shape == (3, 12, 1000)


@pytest.mark.parametrize("kind", ["linear", "nle"])
def test_unet_paper_param_count(kind):
  params = _unet_shapes(**{**UNET_PAPER, "cond_embedding": kind})
  n = count_params(params)
  print(f"UNet paper params ({kind}): {n:,}")
  tol = 0.05 if kind == "linear" else 0.10  # the spec's size is for `linear`
  assert abs(n / PAPER_UNET_PARAMS - 1) < tol, n


def test_count_params_counts_scalars():
  tree = {"a": jnp.zeros((3, 4)), "b": [jnp.zeros(5), jnp.zeros(())]}
  assert count_params(tree) == 18


# --- mini VAE ---------------------------------------------------------------


@pytest.fixture(scope="session")
def mini_vae():
  """Everything the VAE tests look at, from one compiled function."""
  model = VAE(**VAE_MINI)
  x = jax.random.normal(jax.random.key(0), (2, 12, 1000))
  params = _random_params(jax.eval_shape(model.init, jax.random.key(1), x))
  print(f"VAE mini params: {count_params(params):,}")

  def loss(p, key):
    recon, mean, logvar = model.apply(p, x, sample_key=key)
    rec = jnp.mean((recon - x) ** 2)
    return rec + 1e-4 * jnp.mean(kl_divergence(mean, logvar)), (recon, mean)

  @jax.jit
  def run(p):
    (_, (recon_s, mean_s)), grads = jax.value_and_grad(loss, has_aux=True)(p, jax.random.key(3))
    recon, mean, logvar = model.apply(p, x)
    mean2, _ = model.apply(p, x, method=VAE.encode)
    recon2 = model.apply(p, mean2, method=VAE.decode)
    return dict(
      recon=recon,
      mean=mean,
      logvar=logvar,
      recon2=recon2,
      recon_s=recon_s,
      mean_s=mean_s,
      grads=grads,
    )

  return model, params, x, jax.device_get(run(params))


def test_vae_mini_forward(mini_vae):
  _, params, x, out = mini_vae
  assert "batch_stats" not in params
  assert out["recon"].shape == x.shape == (2, 12, 1000)
  assert out["mean"].shape == out["logvar"].shape == (2, 4, 128)
  for k in ("recon", "mean", "logvar"):
    assert np.isfinite(out[k]).all(), k
  assert np.abs(out["recon"]).max() > 1e-3
  # Without a key the mean is decoded: same as decode(encode(x).mean).
  assert out["recon2"].shape == (2, 12, 1000)
  np.testing.assert_allclose(out["recon2"], out["recon"], rtol=1e-4, atol=1e-5)
  # With a key, z is sampled: a different reconstruction, same moments.
  np.testing.assert_allclose(out["mean_s"], out["mean"], rtol=1e-5, atol=1e-6)
  assert np.abs(out["recon_s"] - out["recon"]).max() > 1e-4
  kl = kl_divergence(out["mean"], out["logvar"])
  assert kl.shape == (2,) and (np.asarray(kl) > 0).all()


def test_vae_mini_gradient_is_finite(mini_vae):
  grads = jax.tree_util.tree_leaves(mini_vae[3]["grads"])
  assert all(np.isfinite(g).all() for g in grads)
  assert all(np.abs(g).max() > 0 for g in grads)


def test_vae_rejects_wrong_shape(mini_vae):
  model, params, _, _ = mini_vae
  with pytest.raises(ValueError, match="12, 1000"):
    jax.eval_shape(model.apply, params, jnp.zeros((2, 12, 999)))


def test_kl_divergence_closed_form():
  mean = jnp.array([[[0.0, 1.0]]])
  logvar = jnp.array([[[0.0, np.log(4.0)]]])
  # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2), summed: 0 + 0.5 * (1 + 4 - 1 - log 4)
  np.testing.assert_allclose(kl_divergence(mean, logvar), [0.5 * (4.0 - np.log(4.0))], rtol=1e-6)


# --- mini U-Net -------------------------------------------------------------


@pytest.fixture(scope="session", params=["linear", "nle"])
def mini_unet(request):
  cfg = {**UNET_MINI, "cond_embedding": request.param}
  model = UNet(**cfg)
  params = _random_params(_unet_shapes(**cfg))
  print(f"UNet mini params ({request.param}): {count_params(params):,}")
  return model, params, jax.jit(model.apply)


def test_unet_mini_forward(mini_unet):
  _, params, apply = mini_unet
  x, t, cond = _unet_inputs(2)
  eps = np.asarray(apply(params, x, t, cond, jnp.zeros((2,), bool)))
  assert eps.shape == (2, 4, 128)
  assert np.isfinite(eps).all()
  assert np.abs(eps).max() > 1e-3


def test_timestep_embedding_int_or_float():
  t = jnp.array([0, 1, 999], jnp.int32)
  emb_i = sinusoidal_embedding(t, 16)
  np.testing.assert_array_equal(emb_i, sinusoidal_embedding(t * 1.0, 16))
  assert emb_i.shape == (3, 16)
  np.testing.assert_allclose(emb_i[0], [1.0] * 8 + [0.0] * 8)
  assert not np.allclose(emb_i[1], emb_i[2])


def test_unet_drop_ignores_cond(mini_unet):
  _, params, apply = mini_unet
  x, t, cond_a = _unet_inputs(2, key=0)
  _, _, cond_b = _unet_inputs(2, key=7)
  assert not np.allclose(cond_a, cond_b)
  dropped = jnp.ones((2,), bool)
  kept = jnp.zeros((2,), bool)
  # Dropped: two different conditions give the identical prediction.
  np.testing.assert_array_equal(
    apply(params, x, t, cond_a, dropped), apply(params, x, t, cond_b, dropped)
  )
  # Kept: the condition matters, and the null condition differs from it.
  eps_a = np.asarray(apply(params, x, t, cond_a, kept))
  eps_b = np.asarray(apply(params, x, t, cond_b, kept))
  assert np.abs(eps_a - eps_b).max() > 1e-3
  eps_null = np.asarray(apply(params, x, t, cond_a, dropped))
  assert np.abs(eps_a - eps_null).max() > 1e-3
  # Per sample: only row 0 is dropped.
  mixed = jnp.array([True, False])
  eps_ma = np.asarray(apply(params, x, t, cond_a, mixed))
  eps_mb = np.asarray(apply(params, x, t, cond_b, mixed))
  np.testing.assert_allclose(eps_ma[0], eps_mb[0], rtol=1e-5, atol=1e-6)
  assert np.abs(eps_ma[1] - eps_mb[1]).max() > 1e-3
  np.testing.assert_allclose(eps_ma[1], eps_a[1], rtol=1e-5, atol=1e-6)


def test_nle_table_and_null_entry():
  params = _unet_shapes(**{**UNET_PAPER, "cond_embedding": "nle"})["params"]
  d = UNET_PAPER["emb_dim"]
  assert params["cond_embed"]["nle"]["label_table"].shape == (NUM_LABELS, 2, d)
  assert params["cond_embed"]["null_embedding"].shape == (d,)
  linear = _unet_shapes(**UNET_PAPER)["params"]
  assert "nle" not in linear["cond_embed"]
  assert linear["cond_embed"]["null_embedding"].shape == (d,)


def test_nle_matches_table_lookup():
  """Against a plain NumPy lookup: e[k, y_k] folded with the 1x1 weights."""
  d = 6
  module = NLECondEmbedding(d)
  _, _, cond = _unet_inputs(3)
  params = _random_params(jax.eval_shape(module.init, jax.random.key(0), cond))["params"]
  got = np.asarray(jax.jit(module.apply)({"params": params}, cond))
  table = np.asarray(params["label_table"])
  w = np.asarray(params["label_fold"]["kernel"])[:, 0]
  b0 = np.asarray(params["label_fold"]["bias"])[0]
  wd = np.asarray(params["demo_proj"]["kernel"])
  bd = np.asarray(params["demo_proj"]["bias"])
  cond = np.asarray(cond)
  y = cond[:, :NUM_LABELS].astype(int)
  want = np.stack(
    [
      sum(w[k] * table[k, y[i, k]] for k in range(NUM_LABELS)) + b0 + cond[i, NUM_LABELS:] @ wd + bd
      for i in range(len(cond))
    ]
  )
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
