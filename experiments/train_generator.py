"""Trains the latent diffusion generator on real PTB-XL: the VAE, then the latent U-Net
(paper 000 section 3).

  python -m experiments.train_generator --preset=mini --workdir=workdir
  python -m experiments.train_generator --preset=paper --data_dir=/data/ptb-xl/1.0.3 --workdir=gs://...

Rerunning with the same flags resumes from the last checkpoint. Writes
<workdir>/generator/{vae,unet,export}/ (orbax), metrics.jsonl, and the plots
ecg_comparison.png (real vs generated, same conditioning) and losses.png.
The simulator generator kind needs no training.
"""

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.eval import pipeline_setup
from ecgjax.generators import latent_diffusion

cli.define_flags()
_PLOT_EXAMPLES = flags.DEFINE_integer(
  "plot_examples", 3, "Test-fold records shown in ecg_comparison.png."
)


def main(argv):
  del argv
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  latent_diffusion.train(cfg, mesh, ds, workdir)
  pipeline_setup.generator_figures(cfg, mesh, ds, workdir, examples=_PLOT_EXAMPLES.value)


if __name__ == "__main__":
  errors.run(main)
