"""The latent diffusion model as one object: VAE + EMA U-Net + statistics -> ECGs.

Saving and loading it for a workdir is the `latent_diffusion` generator kind's
business (ecgjax/generators/latent_diffusion.py); this module only computes.

`Generator.sampler(mesh)` is one jitted function from conditioning vectors and
per-sample keys to (B, 12, 1000) signals in mV: DDIM with CFG in latent space
(batch sharded over 'data'), VAE decode, de-standardisation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax import fingerprints
from ecgjax.data import pipeline
from ecgjax.data.signals import destandardise, project_limb_leads
from ecgjax.diffusion import ddim
from ecgjax.diffusion.loss import PREDICTIONS, eps_from_prediction
from ecgjax.diffusion.schedule import Schedule, cosine_schedule, linear_schedule
from ecgjax.errors import ConfigError
from ecgjax.fingerprints import fingerprint
from ecgjax.models.embeddings import COND_DIM, check_cond
from ecgjax.models.unet import UNet
from ecgjax.models.vae import VAE

LATENT_SHAPE = (4, 128)
# `--config.vae.compute_dtype` / `--config.unet.compute_dtype`: the dtype convolutions,
# dots and activations run in. Parameters, optimiser state, GroupNorm statistics,
# the loss, the DDIM update and the sampler's output stay float32 whatever it is.
COMPUTE_DTYPES = ("float32", "bfloat16")


def module_kwargs(section, name: str) -> dict:
  """A `vae` or `unet` config section as module arguments (compute_dtype -> dtype)."""
  kwargs = dict(section)
  dtype = kwargs.pop("compute_dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise ConfigError(
      f"--config.{name}.compute_dtype={dtype!r}: choose one of {', '.join(COMPUTE_DTYPES)}"
    )
  return {**kwargs, "dtype": jnp.dtype(dtype)}


def describe_model(section, *, compute_dtype: bool = True) -> dict:
  """A model section for fingerprints. compute_dtype appears only when it is not
  float32 (so float32 fingerprints are what they were before the option existed),
  and never with ``compute_dtype=False``: an export holds float32 parameters that
  any compute dtype can sample with."""
  d = fingerprints.describe(section)
  if not compute_dtype or d.get("compute_dtype", "float32") == "float32":
    d.pop("compute_dtype", None)
  return d


def build_vae(cfg) -> VAE:
  return VAE(**module_kwargs(cfg.vae, "vae"))


def build_unet(cfg) -> UNet:
  return UNet(**module_kwargs(cfg.unet, "unet"))


def make_schedule(diffusion_cfg) -> Schedule:
  if diffusion_cfg.schedule == "linear":
    return linear_schedule(diffusion_cfg.num_timesteps)
  if diffusion_cfg.schedule == "cosine":
    return cosine_schedule(diffusion_cfg.num_timesteps)
  raise ConfigError(f"--config.diffusion.schedule={diffusion_cfg.schedule!r}: use linear or cosine")


def denoise_fn(unet: UNet):
  """`UNet.apply` as `denoise_fn(params, x, t, cond, drop)`: the raw network output."""

  def fn(params, x, t, cond, drop):
    return unet.apply(params, x, t, cond, drop)

  return fn


def eps_fn(unet: UNet, schedule: Schedule, prediction: str):
  """The network's output converted to eps, which the DDIM sampler and CFG work in."""

  def fn(params, x, t, cond, drop):
    return eps_from_prediction(schedule, unet.apply(params, x, t, cond, drop), x, t, prediction)

  return fn


def generator_meta(cfg, content_key: str) -> dict:
  """What a generator checkpoint must agree on with the config that reads it."""
  describe = {
    "vae": describe_model(cfg.vae, compute_dtype=False),
    "unet": describe_model(cfg.unet, compute_dtype=False),
    "diffusion": fingerprints.describe(cfg.diffusion),
  }
  return {"fingerprint": fingerprint(describe), "describe": describe, "data_key": content_key}


@dataclasses.dataclass
class Generator:
  vae: VAE
  unet: UNet
  schedule: Schedule
  prediction: str  # what the U-Net regresses: 'eps' or 'v'
  params: dict  # {'vae', 'unet' (EMA weights), 'latent_scale', 'signal_mean', 'signal_std'}
  fingerprint: str = ""  # of the config that shaped it; names the generator in cohort manifests
  # 'generated': the limb leads as the VAE decodes them; 'projected': projected onto the
  # subspace where Einthoven's and Goldberger's identities hold (data/signals.py).
  limb_leads: str = "generated"
  _samplers: dict = dataclasses.field(default_factory=dict, repr=False)
  _placed: dict = dataclasses.field(default_factory=dict, repr=False)

  def decode(self, params, z):
    """Scaled latents (B, 4, 128) -> signals (B, 12, 1000) in mV."""
    x = self.vae.apply(params["vae"], z / params["latent_scale"], method=VAE.decode)
    x = destandardise(x, params["signal_mean"], params["signal_std"])
    return project_limb_leads(x) if self.limb_leads == "projected" else x

  def sample_with_keys(self, params, cond, sample_keys, cfg_scale, eta, *, num_steps: int):
    z = ddim.ddim_sample_with_keys(
      eps_fn(self.unet, self.schedule, self.prediction),
      params["unet"],
      cond,
      sample_keys,
      self.schedule,
      shape=LATENT_SHAPE,
      num_steps=num_steps,
      eta=eta,
      cfg_scale=cfg_scale,
    )
    return self.decode(params, z)

  def sampler(self, mesh: Mesh, *, num_steps: int):
    """jit: (params, cond, sample_keys, cfg_scale, eta) -> signals, batch over 'data'.

    Cached per (mesh, num_steps), so repeated calls reuse one compilation.
    """
    cache_key = (mesh, num_steps)
    if cache_key not in self._samplers:
      data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
      fn = lambda p, c, k, w, e: self.sample_with_keys(p, c, k, w, e, num_steps=num_steps)
      self._samplers[cache_key] = jax.jit(
        fn, in_shardings=(rep, data, data, rep, rep), out_shardings=data
      )
    return self._samplers[cache_key]

  def generate(
    self,
    cond: np.ndarray,
    key: jax.Array,
    *,
    mesh: Mesh,
    num_steps: int,
    cfg_scale: float,
    eta: float = 0.0,
    batch_size: int = 256,
    start: int = 0,
  ):
    """Signals for `cond` (n, 76), sample i keyed by fold_in(key, start + i).

    Every batch is padded to the same size (a multiple of the device count),
    so one compiled sampler serves the whole cohort; padded rows are dropped.
    """
    check_cond(cond)
    n_dev = mesh.shape["data"]
    batch_size = max(n_dev, -(-min(batch_size, max(len(cond), 1)) // n_dev) * n_dev)
    run = self.sampler(mesh, num_steps=num_steps)
    if mesh not in self._placed:
      self._placed = {mesh: pipeline.put_replicated(self.params, mesh)}
    params = self._placed[mesh]
    out = []
    for s in range(0, len(cond), batch_size):
      c = np.asarray(cond[s : s + batch_size], np.float32)
      m = len(c)
      if m < batch_size:
        c = np.concatenate([c, np.repeat(c[-1:], batch_size - m, 0)])
      keys = ddim.sample_keys_for(key, batch_size, start + s)
      # host_value: the batch is split over 'data', which may span other processes.
      out.append(pipeline.host_value(run(params, jnp.asarray(c), keys, cfg_scale, eta))[:m])
    return np.concatenate(out) if out else np.zeros((0, 12, 1000), np.float32)


def build(cfg) -> Generator:
  if cfg.diffusion.prediction not in PREDICTIONS:
    raise ConfigError(f"--config.diffusion.prediction={cfg.diffusion.prediction!r}: use eps or v")
  return Generator(
    vae=build_vae(cfg),
    unet=build_unet(cfg),
    schedule=make_schedule(cfg.diffusion),
    prediction=cfg.diffusion.prediction,
    params={},
  )


def param_template(gen: Generator) -> dict:
  """Abstract shapes of the exported parameters (no compute)."""
  return _param_template(gen.vae, gen.unet)


@functools.lru_cache(maxsize=16)
def _param_template(vae: VAE, unet: UNet) -> dict:
  # Cached per (VAE, U-Net) definition (flax modules hash by their fields): tracing both
  # inits takes a second or more, and every load of a generator needs the template.
  x = jnp.zeros((1, 12, 1000), jnp.float32)
  z = jnp.zeros((1,) + LATENT_SHAPE, jnp.float32)
  vae_shapes = jax.eval_shape(lambda: vae.init(jax.random.PRNGKey(0), x))
  unet_shapes = jax.eval_shape(
    lambda: unet.init(
      jax.random.PRNGKey(0),
      z,
      jnp.zeros((1,), jnp.int32),
      jnp.zeros((1, COND_DIM)),
      jnp.zeros((1,), bool),
    )
  )
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  return {
    "vae": vae_shapes,
    "unet": unet_shapes,
    "latent_scale": f32(),
    "signal_mean": f32(12),
    "signal_std": f32(12),
  }
