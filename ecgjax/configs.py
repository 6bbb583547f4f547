"""Presets `paper` and `mini` (docs/design.md §6) as ml_collections ConfigDicts.

Every entry point takes `--preset=paper|mini` and any `--config.a.b=value`
override on top of the preset, e.g.

  python -m experiments.train_generator --preset=mini --config.train_unet.steps=3000
"""

from __future__ import annotations

from absl import flags
from ml_collections import ConfigDict, config_flags

from ecgjax.errors import ConfigError
from ecgjax.eval import registry as evaluations
from ecgjax.generators import registry as generators
from ecgjax.models.unet import UNET_MINI, UNET_PAPER
from ecgjax.models.vae import VAE_MINI, VAE_PAPER

PRESETS = ("paper", "mini")


def get_config(preset: str = "mini") -> ConfigDict:
  if preset not in PRESETS:
    raise ConfigError(f"--preset={preset!r}: unknown preset, choose one of {', '.join(PRESETS)}")
  paper = preset == "paper"
  c = ConfigDict()
  c.preset = preset

  # Which generator makes the synthetic cohorts (docs/design.md §9), and each
  # kind's own settings, e.g. --config.generator.kind=simulator.
  c.generator = generators.config(preset)
  # The latent_diffusion generator (paper 000 section 3): frozen 1-D VAE + latent U-Net with CFG.
  c.vae = ConfigDict(dict(VAE_PAPER if paper else VAE_MINI))
  c.unet = ConfigDict(dict(UNET_PAPER if paper else UNET_MINI))
  c.unet.cond_embedding = "linear"  # or "nle" (SSSD-ECG-nle label table)
  # Compute dtype of each network, "float32" or "bfloat16" (bf16 convolutions, dots and
  # activations; parameters, optimiser state, GroupNorm statistics, losses, the DDIM
  # update and the sampler's output stay float32). Part of a training stage's
  # fingerprint and of a cohort's identity when not float32; not of the exported
  # generator, so a float32-trained generator can sample in bf16.
  c.vae.compute_dtype = "float32"
  c.unet.compute_dtype = "float32"
  # v-prediction: stable x0 at the terminal timesteps (see diffusion/loss.py).
  c.diffusion = ConfigDict(
    dict(num_timesteps=1000, schedule="linear", p_uncond=0.1, prediction="v")
  )
  c.train_vae = ConfigDict(
    dict(
      steps=20_000 if paper else 500,
      batch_size=128 if paper else 32,
      learning_rate=2e-4 if paper else 2e-3,
      weight_decay=1e-4,
      kl_weight=1e-4,
      log_every=100 if paper else 50,
      checkpoint_every=2000 if paper else 250,
      seed=0,
    )
  )
  c.train_unet = ConfigDict(
    dict(
      steps=100_000 if paper else 2000,
      batch_size=256 if paper else 64,
      learning_rate=1e-4 if paper else 2e-3,
      weight_decay=1e-4,
      ema_decay=0.999 if paper else 0.99,
      log_every=200 if paper else 100,
      checkpoint_every=5000 if paper else 500,
      # > 0: keep every multiple of it as well (a convergence study's checkpoints). Under
      # mini the main generator keeps the convergence study's steps, so the study reads
      # its checkpoints instead of training a second generator.
      keep_every=0 if paper else 500,
      seed=1,
    )
  )
  c.sample = ConfigDict(
    dict(
      num_steps=100 if paper else 25,
      eta=0.0,
      cfg_scale=3.0,
      batch_size=256 if paper else 64,
      # 'projected' (default): limb leads made to obey Einthoven's and Goldberger's
      # identities by a least-squares projection (ecgjax/data/signals.py); 'generated':
      # as the VAE decodes them (README "Generators" gives the TSTR figures of both).
      limb_leads="projected",
    )
  )
  # Downstream classifier (docs/design.md §3): one-cycle AdamW, best epoch on fold 9.
  c.classifier = ConfigDict(
    dict(
      arch="xresnet1d50",
      epochs=30 if paper else 8,
      batch_size=128 if paper else 32,
      learning_rate=1e-2,
      weight_decay=1e-2,
      seed=0,
      # The PTB-XL benchmark's protocol, the default (docs/design.md §5): train on
      # random 2.5 s windows (crop=250) and predict a record as the maximum over
      # windows every crop_stride samples (125: half a window, the last one flush
      # with the end). crop=0 trains and predicts on the whole 10 s record.
      crop=250,
      crop_stride=125,
    )
  )
  # Each evaluation's own section (cfg.tstr, cfg.syn2real, cfg.augment, cfg.transfer,
  # cfg.convergence, cfg.audit, ...), defined with its module (ecgjax/eval/registry.py).
  for name, section in evaluations.config_sections(preset).items():
    c[name] = section
  return c


def from_flags(preset: str, config_flag: str = "config") -> ConfigDict:
  """The preset with the command line's `--config.*` overrides applied on top."""
  cfg = get_config(preset)
  for path, value in config_flags.get_override_values(flags.FLAGS[config_flag]).items():
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  cfg.preset = preset
  return cfg
