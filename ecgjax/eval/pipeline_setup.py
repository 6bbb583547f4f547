"""Making sure the custodian's artefacts exist before a practitioner's run."""

from __future__ import annotations

from absl import logging

from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import CheckpointError
from ecgjax.eval import judge as judge_lib


def ensure_generator(cfg, mesh, ds, workdir, *, progress=True):
  """Under `mini`, trains a generator into an empty workdir; under `paper` that is an error.

  Training a paper-size generator takes accelerator-days, so it is never
  started implicitly.
  """
  if gen_lib.exists(workdir):
    return
  if cfg.preset != "mini":
    raise CheckpointError(
      f"no trained generator in {workdir} (preset {cfg.preset}); train one first with "
      f"python -m experiments.train_generator --preset={cfg.preset} --workdir={workdir}"
    )
  logging.warning("no generator in %s: training the mini one first", workdir)
  print(f"No generator in {workdir}: training the mini generator first.")
  from experiments import train_generator

  train_generator.run(cfg, mesh, ds.data_dir, workdir, progress=progress)


def ensure_judge(cfg, mesh, ds, workdir, *, progress=True):
  if judge_lib.exists(workdir):
    return
  if cfg.preset != "mini":
    raise CheckpointError(
      f"no judge in {workdir} (preset {cfg.preset}); train one first with "
      f"python -m experiments.train_judge --preset={cfg.preset} --workdir={workdir}"
    )
  print(f"No judge in {workdir}: training the mini judge first.")
  judge_lib.train(cfg, ds, workdir, mesh, progress=progress)
