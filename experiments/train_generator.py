"""Trains the generator on real PTB-XL: the VAE, then the latent U-Net (paper 000 section 3).

  python -m experiments.train_generator --preset=mini --workdir=workdir
  python -m experiments.train_generator --preset=paper --data_dir=/data/ptb-xl/1.0.3 --workdir=gs://...

Rerunning with the same flags resumes from the last checkpoint. Writes
<workdir>/generator/{vae,unet,export}/ (orbax), metrics.jsonl, and the plots
ecg_comparison.png (real vs generated, same conditioning) and losses.png.
"""

import os

import jax
import numpy as np
from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.diffusion import generator as gen_lib
from ecgjax.eval import plots
from ecgjax.train import generator as train_lib
from ecgjax.train import loop

cli.define_flags()
_PLOT_EXAMPLES = flags.DEFINE_integer(
  "plot_examples", 3, "Test-fold records shown in ecg_comparison.png."
)


def run(cfg, mesh, data_dir, workdir, progress=True):
  ds = load_ptbxl(data_dir, progress=progress)
  vae_params, mean, std, _ = train_lib.train_vae(cfg, ds, workdir, mesh, progress=progress)
  unet_params, scale, _ = train_lib.train_unet(
    cfg, ds, workdir, mesh, vae_params, mean, std, progress=progress
  )
  params = {
    "vae": vae_params,
    "unet": unet_params,
    "latent_scale": np.float32(scale),
    "signal_mean": mean,
    "signal_std": std,
  }
  gen_lib.export(workdir, params, gen_lib.generator_meta(cfg, ds.content_key))
  gen = gen_lib.load(workdir, cfg, ds.content_key)
  if cli.is_writer():
    out = os.path.join(workdir, "generator")
    test = np.flatnonzero(ds.test_mask)[: _PLOT_EXAMPLES.value]
    fake = gen.generate(
      ds.cond[test],
      jax.random.PRNGKey(0),
      mesh=mesh,
      num_steps=cfg.sample.num_steps,
      cfg_scale=cfg.sample.cfg_scale,
    )
    titles = [", ".join(c for c, on in zip(ds.codes, ds.labels[i]) if on) for i in test]
    print(
      "wrote",
      plots.ecg_comparison(
        np.asarray(ds.signals[test]), fake, titles, os.path.join(out, "ecg_comparison.png")
      ),
    )
    print(
      "wrote",
      plots.loss_curves(
        loop.read_metrics(os.path.join(out, "metrics.jsonl")), os.path.join(out, "losses.png")
      ),
    )
  return gen


def main(argv):
  del argv
  cfg, mesh = cli.start()
  run(cfg, mesh, cli.data_dir(), cli.workdir())


if __name__ == "__main__":
  errors.run(main)
