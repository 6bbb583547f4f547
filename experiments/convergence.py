"""Generator convergence (paper 003, Table IV): TSTR at kept U-Net training checkpoints.

  python -m experiments.convergence --preset=mini --workdir=workdir --seeds=0
  python -m experiments.convergence --config.convergence.steps=500,2000 --seeds=0,1

For each step of --config.convergence.steps, the latent diffusion generator's
EMA weights at that U-Net step generate a real_matched cohort; a classifier
trained on it is scored on real fold 10. The checkpoints come from the
workdir's generator when it kept them (trained with
--config.train_unet.keep_every=k), else from a generator trained for the
study in <workdir>/convergence/ (under mini; under paper the error gives the
command). Writes <workdir>/convergence/step_<k>/seed_<s>/metrics.json and
<workdir>/convergence/report/convergence.{md,csv,png}.
"""

import os

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.errors import ConfigError
from ecgjax.eval import convergence, tstr

cli.define_flags()
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds (draws and classifiers).")


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start(evaluation="convergence")
  if cfg.generator.kind != "latent_diffusion":
    raise ConfigError(
      f"--config.generator.kind={cfg.generator.kind}: the convergence study follows the "
      "latent_diffusion generator's training; other kinds are not trained"
    )
  steps = convergence.parse_steps(cfg.convergence.steps)
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  gen_dir = convergence.generator_workdir(cfg, mesh, ds, workdir, harness.root, steps)
  records = []
  for seed in seeds:
    for step in steps:
      record, skipped = convergence.run(harness, gen_dir, step, seed)
      records.append(record)
      m = record["macro_auroc"]
      print(
        f"seed {seed} step {step:6d}: macro AUROC {'n/a' if m is None else f'{m:.4f}'}"
        + ("  (finished earlier)" if skipped else "")
      )
  if cli.is_writer():
    out = os.path.join(convergence.CONVERGENCE.directory(harness.root), "report")
    text, written = convergence.render(records, out)
    print(text)
    for path in written.values():
      print("wrote", path)


if __name__ == "__main__":
  errors.run(main)
