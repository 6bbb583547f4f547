"""Training the generator (paper 000 section 3): the VAE, then the latent U-Net.

Stage 1 fits the KL-regularised VAE on standardised train-fold signals.
Stage 2 encodes the train folds with the frozen VAE (posterior means), scales
latents to unit variance (the stored `latent_scale`), and fits the U-Net on
them with condition dropout for classifier-free guidance and EMA weights.
Both stages resume exactly from their last orbax checkpoint.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ecgjax import fingerprints
from ecgjax.data import pipeline
from ecgjax.data.signals import standardise
from ecgjax.diffusion import generator as gen_lib
from ecgjax.diffusion.loss import diffusion_loss
from ecgjax.fingerprints import fingerprint
from ecgjax.models.embeddings import COND_DIM
from ecgjax.models.vae import VAE, kl_divergence
from ecgjax.train import events, loop
from ecgjax.train.checkpoint import Checkpointer
from ecgjax.train.state import TrainState, adamw

# <workdir>/generator/: checkpoints of both stages, metrics.jsonl, plots, the export and
# tensorboard/{vae,unet} (each stage's TensorBoard events and profiles).
GENERATOR_DIR = "generator"


def make_vae_step(vae: VAE, tx, kl_weight: float, mean, std):
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def step(state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    x = standardise(batch["signal"], mean, std)

    def loss_fn(params):
      recon, mu, logvar = vae.apply(params, x, sample_key=key)
      rec = jnp.mean((recon - x) ** 2)
      kl = jnp.mean(kl_divergence(mu, logvar)) / np.prod(gen_lib.LATENT_SHAPE)
      return rec + kl_weight * kl, (rec, kl)

    (loss, (rec, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss, "recon_mse": rec, "kl": kl, "grad_norm": optax.tree.norm(grads)}
    return state.apply_gradients(grads, tx), metrics

  return step


def make_unet_step(unet, tx, schedule, p_uncond: float, ema_decay: float, prediction: str = "v"):
  denoise = gen_lib.denoise_fn(unet)

  def step(state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    (loss, aux), grads = jax.value_and_grad(diffusion_loss, argnums=1, has_aux=True)(
      denoise, state.params, batch["z"], batch["cond"], key, schedule, p_uncond, prediction
    )
    new = state.apply_gradients(grads, tx, ema_decay=ema_decay)
    metrics = {"loss": loss, "drop_frac": aux["drop_frac"], "grad_norm": optax.tree.norm(grads)}
    return new, metrics

  return step


def _schedule(tcfg):
  return optax.warmup_cosine_decay_schedule(
    0.0, tcfg.learning_rate, min(500, tcfg.steps // 10 + 1), tcfg.steps, tcfg.learning_rate * 0.05
  )


def train_vae(cfg, ds, workdir: str, mesh: Mesh, *, stop_after=None, progress=True):
  """Stage 1. Returns (vae params, signal mean, signal std)."""
  tcfg = cfg.train_vae
  mean, std = ds.signal_stats()
  vae = gen_lib.build_vae(cfg)
  lr = _schedule(tcfg)
  tx = adamw(lr, tcfg.weight_decay)
  key = jax.random.PRNGKey(tcfg.seed)
  # Jitted: an eager init dispatches (and compiles) every op on its own, seconds per call.
  params = jax.jit(vae.init)(key, jnp.zeros((1, 12, 1000)))
  state = TrainState.create(params, tx)
  train = np.flatnonzero(ds.train_mask)
  data = iter(
    pipeline.train_dataset(
      {"signal": ds.signals[train]}, global_batch_size=tcfg.batch_size, seed=tcfg.seed
    )
  )
  meta = {
    "fingerprint": fingerprint(
      [gen_lib.describe_model(cfg.vae), fingerprints.describe(tcfg), ds.content_key]
    ),
    "describe": {"vae": gen_lib.describe_model(cfg.vae), "train_vae": fingerprints.describe(tcfg)},
  }
  ckpt_dir = os.path.join(workdir, GENERATOR_DIR, "vae")
  ckpt = Checkpointer(
    ckpt_dir,
    meta=meta,
    save_interval_steps=tcfg.checkpoint_every,
  )
  step = loop.jit_train_step(make_vae_step(vae, tx, tcfg.kl_weight, mean, std), mesh)
  state = loop.fit(
    state,
    step,
    data,
    num_steps=tcfg.steps,
    mesh=mesh,
    key=jax.random.fold_in(key, 1),
    checkpointer=ckpt,
    log_every=tcfg.log_every,
    desc="vae",
    metrics_path=os.path.join(workdir, GENERATOR_DIR, "metrics.jsonl"),
    events_dir=events.events_dir(ckpt_dir),
    lr_fn=lr,
    stop_after=stop_after,
    progress=progress,
  )
  ckpt.close()
  return jax.device_get(state.params), mean, std, state.step


def encode_latents(vae: VAE, params, signals, mean, std, batch_size=256):
  """Posterior means (N, 4, 128) of standardised signals, batched on the host."""
  enc = jax.jit(lambda p, x: vae.apply(p, standardise(x, mean, std), method=VAE.encode)[0])
  out = [
    np.asarray(enc(params, jnp.asarray(signals[s : s + batch_size])))
    for s in range(0, len(signals), batch_size)
  ]
  return np.concatenate(out)


def train_unet(cfg, ds, workdir, mesh, vae_params, mean, std, *, stop_after=None, progress=True):
  """Stage 2. Returns (EMA params, latent_scale, final step)."""
  tcfg = cfg.train_unet
  vae = gen_lib.build_vae(cfg)
  train = np.flatnonzero(ds.train_mask)
  latents = encode_latents(vae, vae_params, ds.signals[train], mean, std)
  latent_scale = np.float32(1.0 / max(float(latents.std()), 1e-6))
  unet = gen_lib.build_unet(cfg)
  schedule = gen_lib.make_schedule(cfg.diffusion)
  lr = _schedule(tcfg)
  tx = adamw(lr, tcfg.weight_decay)
  key = jax.random.PRNGKey(tcfg.seed)
  params = jax.jit(unet.init)(
    key,
    jnp.zeros((1,) + gen_lib.LATENT_SHAPE),
    jnp.zeros((1,), jnp.int32),
    jnp.zeros((1, COND_DIM)),
    jnp.zeros((1,), bool),
  )
  state = TrainState.create(params, tx, ema=True)
  data = iter(
    pipeline.train_dataset(
      {"z": latents * latent_scale, "cond": ds.cond[train]},
      global_batch_size=tcfg.batch_size,
      seed=tcfg.seed,
    )
  )
  ckpt = unet_checkpointer(cfg, ds, workdir, latent_scale)
  step = loop.jit_train_step(
    make_unet_step(
      unet, tx, schedule, cfg.diffusion.p_uncond, tcfg.ema_decay, cfg.diffusion.prediction
    ),
    mesh,
  )
  state = loop.fit(
    state,
    step,
    data,
    num_steps=tcfg.steps,
    mesh=mesh,
    key=jax.random.fold_in(key, 1),
    checkpointer=ckpt,
    log_every=tcfg.log_every,
    desc="unet",
    metrics_path=os.path.join(workdir, GENERATOR_DIR, "metrics.jsonl"),
    events_dir=events.events_dir(os.path.join(workdir, GENERATOR_DIR, "unet")),
    lr_fn=lr,
    stop_after=stop_after,
    progress=progress,
  )
  ckpt.close()
  return jax.device_get(state.ema_params), latent_scale, state.step


def train_generator(cfg, ds, workdir: str, mesh: Mesh, *, progress: bool = True) -> dict:
  """Both stages on the already loaded dataset; returns the parameters to export.

  {'vae', 'unet' (EMA weights), 'latent_scale', 'signal_mean', 'signal_std'}:
  the tree `diffusion.generator.param_template` describes. Each stage resumes
  from its checkpoint under <workdir>/generator/.
  """
  vae_params, mean, std, _ = train_vae(cfg, ds, workdir, mesh, progress=progress)
  unet_params, scale, _ = train_unet(
    cfg, ds, workdir, mesh, vae_params, mean, std, progress=progress
  )
  return {
    "vae": vae_params,
    "unet": unet_params,
    "latent_scale": np.float32(scale),
    "signal_mean": mean,
    "signal_std": std,
  }


def _unet_describe(cfg) -> dict:
  # keep_every decides which checkpoints survive, not what they hold: not fingerprinted.
  tcfg = {k: v for k, v in fingerprints.describe(cfg.train_unet).items() if k != "keep_every"}
  return {
    "unet": gen_lib.describe_model(cfg.unet),
    "train_unet": tcfg,
    "diffusion": fingerprints.describe(cfg.diffusion),
  }


def unet_checkpointer(cfg, ds, workdir: str, latent_scale, create: bool = True) -> Checkpointer:
  """The U-Net stage's checkpoints, <workdir>/generator/unet/: every `checkpoint_every`
  steps, the latest two kept, and with `train_unet.keep_every` = k > 0 every multiple of k
  kept too (the convergence study's checkpoints; k must be a multiple of checkpoint_every)."""
  from ecgjax.errors import ConfigError

  tcfg = cfg.train_unet
  keep = int(tcfg.get("keep_every", 0) or 0)
  if keep < 0 or (keep and keep % tcfg.checkpoint_every):
    raise ConfigError(
      f"--config.train_unet.keep_every={keep}: must be 0 or a multiple of "
      f"checkpoint_every ({tcfg.checkpoint_every})"
    )
  describe = _unet_describe(cfg)
  meta = {
    "fingerprint": fingerprint([describe, float(latent_scale), ds.content_key]),
    "describe": describe,
  }
  return Checkpointer(
    os.path.join(workdir, GENERATOR_DIR, "unet"),
    meta=meta,
    save_interval_steps=tcfg.checkpoint_every,
    keep_period=keep or None,
    create=create,
  )


def restore_unet_ema(cfg, ds, workdir: str, step: int, latent_scale) -> dict:
  """The U-Net's EMA weights at a kept training step (CheckpointError when not kept)."""
  from ecgjax.errors import CheckpointError

  ckpt = unet_checkpointer(cfg, ds, workdir, latent_scale, create=False)
  try:
    steps = ckpt.all_steps()
    if step not in steps:
      raise CheckpointError(
        f"{ckpt.directory} keeps no checkpoint at step {step} (kept: "
        f"{', '.join(map(str, steps)) or 'none'}); train with --config.train_unet.keep_every"
      )
    unet = gen_lib.build_unet(cfg)
    tx = adamw(_schedule(cfg.train_unet), cfg.train_unet.weight_decay)
    params = jax.eval_shape(
      lambda: unet.init(
        jax.random.PRNGKey(0),
        jnp.zeros((1,) + gen_lib.LATENT_SHAPE),
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1, COND_DIM)),
        jnp.zeros((1,), bool),
      )
    )
    template = jax.eval_shape(lambda p: TrainState.create(p, tx, ema=True), params)
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state = ckpt.restore(template, step=step, sharding=cpu)
  finally:
    ckpt.close()
  return jax.device_get(state.ema_params)
