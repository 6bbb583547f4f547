"""The `latent_diffusion` generator kind: paper 000's VAE + latent U-Net with CFG.

Trained once on real PTB-XL (ecgjax/train/generator.py) and exported to
<workdir>/generator/export (orbax, with the fingerprint of the config that
shapes it and the key of the data it was fitted on). Sampling settings come
from `cfg.sample` (DDIM steps, guidance scale, eta, batch size) and are part of
a cohort's identity.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh

from ecgjax import storage
from ecgjax.data import pipeline
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import CheckpointError, ConfigError
from ecgjax.generators.base import GeneratorKind
from ecgjax.train import generator as train_lib
from ecgjax.train.checkpoint import Checkpointer

EXPORT_DIR = os.path.join(train_lib.GENERATOR_DIR, "export")


@dataclasses.dataclass
class LatentDiffusion:
  """A loaded latent diffusion model and the sampler settings it generates with."""

  model: gen_lib.Generator
  num_steps: int
  cfg_scale: float
  eta: float = 0.0
  batch_size: int = 256
  kind: str = "latent_diffusion"
  sampling_rate: int = 100
  codes: tuple[str, ...] | None = None

  @property
  def identity(self) -> dict:
    ident = {
      "generator": self.model.fingerprint,
      "num_steps": self.num_steps,
      "cfg_scale": self.cfg_scale,
      "eta": self.eta,
      "limb_leads": self.model.limb_leads,
    }
    # bf16 compute gives other samples from the same weights; float32 adds no key,
    # so cohorts made before the option keep their identity.
    dtypes = {
      n: np.dtype(m.dtype).name for n, m in (("vae", self.model.vae), ("unet", self.model.unet))
    }
    if any(d != "float32" for d in dtypes.values()):
      ident["compute_dtype"] = dtypes
    return ident

  def generate(self, cond, key, *, mesh: Mesh, start: int = 0) -> np.ndarray:
    return self.model.generate(
      cond,
      key,
      mesh=mesh,
      num_steps=self.num_steps,
      cfg_scale=self.cfg_scale,
      eta=self.eta,
      batch_size=self.batch_size,
      start=start,
    )

  def cohort_notes(self, cond) -> dict:
    return {"kind": self.kind, "renders": "all 71 labels and the 5 demographics"}


def export(workdir: str, params: dict, meta: dict) -> None:
  """Writes (or replaces) the export; every process calls it (an orbax checkpointer is
  collective: process 0 writes the host arrays)."""
  path = os.path.join(workdir, EXPORT_DIR)
  if jax.process_index() == 0:
    # A rerun of a finished training exports again: the step is replaced, not refused.
    storage.rmtree(path)
  pipeline.barrier("generator export cleared")
  ckpt = Checkpointer(path, meta=meta, max_to_keep=1)
  ckpt.save(0, params, force=True)
  ckpt.wait()
  ckpt.close()


def exists(workdir: str) -> bool:
  path = os.path.join(workdir, EXPORT_DIR)
  return any(d.isdigit() for d in storage.listdir(path))


def load_model(workdir: str, cfg, content_key: str | None = None) -> gen_lib.Generator:
  """The exported model of `workdir`, checked against `cfg` (and the data key)."""
  path = os.path.join(workdir, EXPORT_DIR)
  if not exists(workdir):
    raise CheckpointError(
      f"no trained generator in {workdir} (expected {path}); "
      f"run python -m experiments.train_generator --workdir={workdir}"
    )
  gen = gen_lib.build(cfg)
  meta = gen_lib.generator_meta(cfg, content_key or "")
  ckpt = Checkpointer(path, meta=meta, create=False)
  stored = ckpt.read_meta()
  if content_key is not None and stored.get("data_key") != content_key:
    raise CheckpointError(
      f"generator in {path} was trained on other data "
      f"(data key {stored.get('data_key')}, this data {content_key})"
    )
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  params = ckpt.restore(gen_lib.param_template(gen), sharding=cpu)
  ckpt.close()
  gen.params = params
  gen.fingerprint = meta["fingerprint"]
  return gen


LIMB_LEADS = ("generated", "projected")


def load(cfg, ds, workdir: str) -> LatentDiffusion:
  s = cfg.sample
  if s.limb_leads not in LIMB_LEADS:
    raise ConfigError(
      f"--config.sample.limb_leads={s.limb_leads!r}: choose one of {', '.join(LIMB_LEADS)}"
    )
  model = load_model(workdir, cfg, ds.content_key)
  model.limb_leads = s.limb_leads
  return LatentDiffusion(
    model,
    num_steps=s.num_steps,
    cfg_scale=s.cfg_scale,
    eta=s.eta,
    batch_size=s.batch_size,
  )


def train(cfg, mesh: Mesh, ds, workdir: str, *, progress: bool = True) -> LatentDiffusion:
  """Trains (or resumes training) both stages on `ds`, exports, and loads the result."""
  params = train_lib.train_generator(cfg, ds, workdir, mesh, progress=progress)
  export(workdir, params, gen_lib.generator_meta(cfg, ds.content_key))
  return load(cfg, ds, workdir)


def ensure(cfg, mesh: Mesh, ds, workdir: str, *, progress: bool = True) -> bool:
  """Under `mini`, trains a generator into a workdir that has none; under `paper` that is
  an error, since a paper-size generator takes accelerator-days and is never started
  implicitly."""
  if exists(workdir):
    return False
  if cfg.preset != "mini":
    raise CheckpointError(
      f"no trained generator in {workdir} (preset {cfg.preset}); train one first with "
      f"python -m experiments.train_generator --preset={cfg.preset} --workdir={workdir}"
    )
  print(f"No generator in {workdir}: training the mini generator first.")
  train(cfg, mesh, ds, workdir, progress=progress)
  return True


KIND = GeneratorKind(
  name="latent_diffusion",
  summary="paper 000's VAE + latent U-Net with classifier-free guidance, trained on the real train folds",
  ensure=ensure,
  load=load,
)


def load_at_step(cfg, ds, workdir: str, step: int) -> LatentDiffusion:
  """The exported generator with its U-Net's EMA weights at a kept training step (a
  convergence study's checkpoint; --config.train_unet.keep_every). The VAE, latent scale
  and signal statistics are the export's; the identity names the step."""
  gen = load(cfg, ds, workdir)
  model = gen.model
  unet = train_lib.restore_unet_ema(cfg, ds, workdir, step, model.params["latent_scale"])
  model.params = {**model.params, "unet": unet}
  model.fingerprint = f"{model.fingerprint}@step{step}"
  return gen
