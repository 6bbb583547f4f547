"""Parity of the generator with its PyTorch twin (tests/torch_generator.py).

Same weights -> the same U-Net output, VAE moments and decode, guided DDIM
samples and loss gradients, at `mini` widths (with attention in the VAE too)
so each test runs in seconds. Tolerances are relative to the largest entry of
the reference: float32 convolutions summed in different orders differ by
~1e-6 relative per layer, and the sampler's 4 guided steps amplify that
(w = 3 multiplies the conditional/unconditional difference).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import configs
from ecgjax.diffusion import ddim
from ecgjax.diffusion import generator as gen_lib
from ecgjax.diffusion.loss import prediction_target
from ecgjax.diffusion.schedule import q_sample
from ecgjax.models.embeddings import COND_DIM, NUM_LABELS
from ecgjax.models.vae import VAE, kl_divergence

torch = pytest.importorskip(
  "torch", reason="PyTorch is optional (pip install .[torch]); parity tests need it"
)
try:
  import torch_generator as twin  # tests/ on sys.path (rootdir-less layout)
except ImportError:
  from tests import torch_generator as twin

RTOL = 1e-4  # of max |reference|, forward passes
SAMPLE_RTOL = 1e-3  # of max |reference|, 4 guided DDIM steps and the decode
GRAD_RTOL = 1e-3  # of max |reference gradient|, per tensor


def _cfg(cond_embedding="linear"):
  cfg = configs.get_config("mini")
  cfg.unet.cond_embedding = cond_embedding
  cfg.vae.update(mid_attention=True, num_heads=2)  # the paper VAE's attention, at mini width
  return cfg


def _random_params(shapes, seed):
  """Host-drawn weights: init's zero output layers would make every comparison trivial."""
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
    return np.asarray(v, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _params(gen, seed=0):
  tmpl = gen_lib.param_template(gen)
  params = {
    "vae": _random_params(tmpl["vae"], seed),
    "unet": _random_params(tmpl["unet"], seed + 1),
  }
  rng = np.random.default_rng(seed + 2)
  params["latent_scale"] = np.float32(0.7)
  params["signal_mean"] = rng.normal(size=12).astype(np.float32) * 0.1
  params["signal_std"] = rng.uniform(0.5, 2.0, 12).astype(np.float32)
  return params


def _inputs(b, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, 4, 128)).astype(np.float32)
  t = rng.integers(0, 1000, b).astype(np.int32)
  labels = (rng.random((b, NUM_LABELS)) < 0.2).astype(np.float32)
  cond = np.concatenate([labels, rng.normal(size=(b, COND_DIM - NUM_LABELS))], 1)
  return x, t, cond.astype(np.float32)


def _close(ours, theirs, rtol, name="", scale=None):
  """|ours - theirs| <= rtol * scale, scale = max |theirs| unless given."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  if scale is None:
    scale = float(np.abs(theirs).max())
    assert scale > 1e-3, f"{name}: reference is ~0, the comparison would be trivial"
  err = float(np.abs(ours - theirs).max())
  print(f"{name}: max abs err {err:.3g}, relative to the scale {err / scale:.3g}")
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * scale, err_msg=name)


def _t(a):
  return torch.from_numpy(np.array(a))


@pytest.mark.parametrize("kind", ["linear", "nle"])
def test_unet_output_matches_twin(kind):
  cfg = _cfg(kind)
  gen = gen_lib.build(cfg)
  params = _params(gen)
  x, t, cond = _inputs(4)
  drop = np.array([True, False, False, True])
  ours = jax.jit(gen.unet.apply)(params["unet"], x, t, cond, drop)
  model = twin.load_flax_params(twin.TorchUNet(**cfg.unet), params["unet"])
  with torch.no_grad():
    theirs = model(_t(x), _t(t).long(), _t(cond), _t(drop)).numpy()
  _close(ours, theirs, RTOL, f"unet[{kind}]")


def test_vae_encode_and_decode_match_twin():
  cfg = _cfg()
  gen = gen_lib.build(cfg)
  params = _params(gen)
  x = np.random.default_rng(3).normal(size=(2, 12, 1000)).astype(np.float32)
  z = np.random.default_rng(4).normal(size=(2, 4, 128)).astype(np.float32)
  mean, logvar = jax.jit(lambda p, x: gen.vae.apply(p, x, method=VAE.encode))(params["vae"], x)
  recon = jax.jit(lambda p, z: gen.vae.apply(p, z, method=VAE.decode))(params["vae"], z)
  model = twin.load_flax_params(twin.TorchVAE(**cfg.vae), params["vae"])
  with torch.no_grad():
    t_mean, t_logvar = model.encode(_t(x))
    t_recon = model.decode(_t(z))
  _close(mean, t_mean.numpy(), RTOL, "vae mean")
  _close(logvar, t_logvar.numpy(), RTOL, "vae logvar")
  _close(recon, t_recon.numpy(), RTOL, "vae decode")


def test_guided_ddim_samples_match_twin():
  """The whole sampler: x_T from the per-sample keys, 4 CFG steps, decode, de-standardise."""
  cfg = _cfg()
  gen = gen_lib.build(cfg)
  params = _params(gen)
  _, _, cond = _inputs(3, seed=5)
  keys = ddim.sample_keys_for(jax.random.key(7), 3)
  ours = jax.jit(lambda p, c, k: gen.sample_with_keys(p, c, k, 3.0, 0.0, num_steps=4))(
    params, cond, keys
  )
  x_T = np.asarray(ddim.initial_noise(keys, gen_lib.LATENT_SHAPE))
  schedule = twin.Schedule(
    gen.schedule.sqrt_alphas_cumprod, gen.schedule.sqrt_one_minus_alphas_cumprod
  )
  model = twin.generator_from_flax(cfg, params, schedule)
  with torch.no_grad():
    theirs = model.sample(_t(x_T), _t(cond), num_steps=4, cfg_scale=3.0).numpy()
  assert ours.shape == theirs.shape == (3, 12, 1000)
  _close(ours, theirs, SAMPLE_RTOL, "samples")


def _grads_close(jax_grads, model, fresh, name):
  """Loads our gradients into a fresh twin, so both are compared in torch's layout.

  A convolution's bias just before a GroupNorm has a zero gradient (the norm
  removes it), so each tensor's scale is floored at 1e-3 of the largest gradient.
  """
  expect = twin.load_flax_params(fresh, jax_grads)
  got = {n: p.grad.numpy() for n, p in model.named_parameters()}
  floor = 1e-3 * max(float(np.abs(g).max()) for g in got.values())
  for pname, g in expect.named_parameters():
    ref = got[pname]
    scale = max(float(np.abs(ref).max()), floor)
    _close(g.detach().numpy(), ref, GRAD_RTOL, f"{name} grad {pname}", scale=scale)


def test_unet_loss_gradients_match_twin():
  """The v-prediction loss for fixed t, noise and drop (what the training steps differentiate)."""
  cfg = _cfg()
  gen = gen_lib.build(cfg)
  params = _params(gen)
  z, t, cond = _inputs(3, seed=8)
  noise = np.random.default_rng(9).normal(size=z.shape).astype(np.float32)
  drop = np.array([False, True, False])

  def loss(p):
    x_t = q_sample(gen.schedule, z, t, noise)
    target = prediction_target(gen.schedule, z, t, noise, "v")
    return jnp.mean(jnp.square(gen.unet.apply(p, x_t, t, cond, drop) - target))

  ours = jax.jit(jax.grad(loss))(params["unet"])
  model = twin.load_flax_params(twin.TorchUNet(**cfg.unet), params["unet"])
  sched = twin.Schedule(
    gen.schedule.sqrt_alphas_cumprod, gen.schedule.sqrt_one_minus_alphas_cumprod
  )
  tt = _t(t).long()
  sa, s1m = sched.sa[tt][:, None, None], sched.s1m[tt][:, None, None]
  zt, nt = _t(z), _t(noise)
  out = model(sa * zt + s1m * nt, tt, _t(cond), _t(drop))
  torch.nn.functional.mse_loss(out, sa * nt - s1m * zt).backward()
  _grads_close(ours, model, twin.TorchUNet(**cfg.unet), "unet")


def test_vae_loss_gradients_match_twin():
  """Reconstruction of the posterior mean plus the KL term (the sampled z is torch's own)."""
  cfg = _cfg()
  gen = gen_lib.build(cfg)
  params = _params(gen)
  x = np.random.default_rng(10).normal(size=(2, 12, 1000)).astype(np.float32)

  def loss(p):
    recon, mean, logvar = gen.vae.apply(p, x)
    return jnp.mean((recon - x) ** 2) + 0.1 * jnp.mean(kl_divergence(mean, logvar))

  ours = jax.jit(jax.grad(loss))(params["vae"])
  model = twin.load_flax_params(twin.TorchVAE(**cfg.vae), params["vae"])
  recon, mean, logvar = model(_t(x))
  kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
  (torch.nn.functional.mse_loss(recon, _t(x)) + 0.1 * kl).backward()
  _grads_close(ours, model, twin.TorchVAE(**cfg.vae), "vae")


def test_load_rejects_a_twin_of_another_shape():
  cfg = _cfg()
  params = _params(gen_lib.build(cfg))
  with pytest.raises((ValueError, KeyError)):
    twin.load_flax_params(twin.TorchUNet(**{**cfg.unet, "num_res_blocks": 2}), params["unet"])
