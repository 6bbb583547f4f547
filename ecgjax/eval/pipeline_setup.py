"""Making sure the custodian's artefacts exist before a practitioner's run."""

from __future__ import annotations

import os

import jax
import numpy as np

from ecgjax import generators
from ecgjax.data import pipeline
from ecgjax.errors import CheckpointError
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import plots
from ecgjax.train import generator as train_lib
from ecgjax.train import loop


def ensure_generator(cfg, mesh, ds, workdir, *, progress=True) -> None:
  """Whatever `cfg.generator.kind` needs before it can generate (docs/design.md §9).

  The latent diffusion model is trained into an empty workdir under `mini`
  (with its figures) and is an error under `paper`, where it takes
  accelerator-days; the simulator needs nothing.
  """
  kind = generators.for_config(cfg)
  if kind.ensure(cfg, mesh, ds, workdir, progress=progress) and kind.name == "latent_diffusion":
    generator_figures(cfg, mesh, ds, workdir)


def generator_figures(cfg, mesh, ds, workdir, examples: int = 3) -> list[str]:
  """<workdir>/generator/ecg_comparison.png (real vs generated, same conditioning, test
  fold) and losses.png, written by process 0. Every process generates (the sampler's batch
  is split over the whole mesh); only process 0 plots."""
  gen = generators.get("latent_diffusion").load(cfg, ds, workdir)
  out = os.path.join(workdir, train_lib.GENERATOR_DIR)
  test = np.flatnonzero(ds.test_mask)[:examples]
  fake = gen.generate(ds.cond[test], jax.random.PRNGKey(0), mesh=mesh)
  if jax.process_index() != 0:
    return []
  titles = [", ".join(c for c, on in zip(ds.codes, ds.labels[i]) if on) for i in test]
  written = [
    plots.ecg_comparison(
      np.asarray(ds.signals[test]), fake, titles, os.path.join(out, "ecg_comparison.png")
    ),
    plots.loss_curves(
      loop.read_metrics(os.path.join(out, "metrics.jsonl")), os.path.join(out, "losses.png")
    ),
  ]
  for path in written:
    print("wrote", path)
  return written


def ensure_judge(cfg, mesh, ds, workdir, *, progress=True):
  # Process 0's look at the workdir decides: every process must train, or none.
  if pipeline.process0_decides(np.bool_(judge_lib.exists(workdir))):
    return
  if cfg.preset != "mini":
    raise CheckpointError(
      f"no judge in {workdir} (preset {cfg.preset}); train one first with "
      f"python -m experiments.train_judge --preset={cfg.preset} --workdir={workdir}"
    )
  print(f"No judge in {workdir}: training the mini judge first.")
  judge_lib.train(cfg, ds, workdir, mesh, progress=progress)
