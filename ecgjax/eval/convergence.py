"""Generator convergence: TSTR at kept training checkpoints (paper 003, Table IV).

Paper 003 keeps the diffusion model's weights every few thousand training
samples and repeats its downstream evaluation at several of them. Here the
latent diffusion generator is trained with `train_unet.keep_every` = k (every
multiple of k steps is kept); for each step of `convergence.steps`, the U-Net's
EMA weights at that step (with the final VAE) generate a real_matched cohort
of `convergence.n` (default tstr.n), a classifier is trained on it and scored
on real fold 10 as in TSTR. The workdir's own generator is used when it kept
every requested step; otherwise a generator is trained for the study into
<root>/convergence/ (under `mini`; under `paper` the command to do it is the
error). Runs: <root>/convergence/step_<k>/seed_<s>/metrics.json; the plot is
macro AUROC (and the bucket means) against the training step.
"""

from __future__ import annotations

import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pandas as pd  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from ecgjax import policies, storage  # noqa: E402
from ecgjax.errors import CheckpointError, ConfigError  # noqa: E402
from ecgjax.eval import runs, salts  # noqa: E402
from ecgjax.eval.render import markdown, save_figure, to_csv, write_text  # noqa: E402
from ecgjax.generators import cohort, latent_diffusion  # noqa: E402
from ecgjax.train import generator as train_lib  # noqa: E402

STUDY_DIR = "convergence"


def parse_steps(text: str) -> list[int]:
  steps = runs.parse_list(
    text, int, flag="--config.convergence.steps",
    expected="comma-separated positive training steps", ok=lambda s: s > 0,
  )  # fmt: skip
  return sorted(set(steps))


def kept_steps(workdir: str) -> list[int]:
  """U-Net checkpoint steps kept under <workdir>/generator/unet (empty when none)."""
  path = os.path.join(workdir, train_lib.GENERATOR_DIR, "unet")
  if not storage.isdir(path):
    return []
  return sorted(int(s) for s in ocp.utils.checkpoint_steps(path))


def config(preset: str) -> ConfigDict:
  """cfg.convergence: TSTR with the U-Net's EMA weights at `steps`, kept every
  `keep_every` steps while training; `n`: the cohort per step (0: tstr.n)."""
  paper = preset == "paper"
  return ConfigDict(
    dict(
      steps="10000,25000,50000,100000" if paper else "500,1000,1500,2000",
      keep_every=5000 if paper else 500,
      n=0 if paper else 512,
    )
  )


def study_config(cfg):
  """The config the study's generator is trained with: keep_every from the study section."""
  c = cfg.copy_and_resolve_references()
  c.train_unet.keep_every = int(cfg.convergence.keep_every)
  return c


def generator_workdir(cfg, mesh, ds, workdir: str, root: str, steps, *, progress=True) -> str:
  """Where the generator whose checkpoints the study reads lives (trained here if needed)."""
  if latent_diffusion.exists(workdir) and set(steps) <= set(kept_steps(workdir)):
    return workdir
  study = os.path.join(root, STUDY_DIR)
  scfg = study_config(cfg)
  bad = [s for s in steps if s % scfg.train_unet.keep_every or s > scfg.train_unet.steps]
  if bad:
    raise ConfigError(
      f"--config.convergence.steps: {', '.join(map(str, bad))} are not multiples of "
      f"convergence.keep_every ({scfg.train_unet.keep_every}) up to train_unet.steps "
      f"({scfg.train_unet.steps})"
    )
  if latent_diffusion.exists(study) and set(steps) <= set(kept_steps(study)):
    return study
  if cfg.preset != "mini":
    raise CheckpointError(
      f"no generator with checkpoints at steps {', '.join(map(str, steps))}; train one with "
      f"python -m experiments.train_generator --preset={cfg.preset} --workdir={study} "
      f"--config.train_unet.keep_every={scfg.train_unet.keep_every}"
    )
  print(f"Training the convergence study's generator in {study} (keeping every "
        f"{scfg.train_unet.keep_every} U-Net steps).")  # fmt: skip
  latent_diffusion.train(scfg, mesh, ds, study, progress=progress)
  return study


def run(harness, gen_workdir: str, step: int, seed: int) -> tuple[dict, bool]:
  """TSTR with the generator at `step` for one seed; returns (record, finished earlier)."""
  h, cfg = harness, harness.cfg
  # The generator's identity (its weights at `step`) is part of what a finished run is
  # compared with, so it is loaded first.
  t0 = time.perf_counter()
  gen = latent_diffusion.load_at_step(cfg, h.ds, gen_workdir, step)
  n = int(cfg.convergence.n or cfg.tstr.n)
  identity = {"n": n, "generator": gen.identity, **h.settings()}

  def make(r: runs.Run) -> dict:
    draw = policies.get("real_matched").fn(salts.key(seed), h.table, n)
    rows = np.asarray(h.table.ds_rows)[np.asarray(draw.rows)]
    out = r.scratch("cohort")
    cohort.generate_cohort(
      gen, h.mesh, draw.cond, draw.labels, rows, out, seed=seed, progress=h.progress
    )
    made = cohort.read_cohort(out)
    t1 = time.perf_counter()
    clf, summary = h.fit_and_score(made["signals"], made["labels"], seed, r.dir)
    return {
      "samples_seen": int(step * cfg.train_unet.batch_size),
      "generator": gen.identity["generator"],
      "n_train": n,
      **h.scored(summary, clf),
      "per_code_gmean": summary["per_code_gmean"],
      "per_code_f1": summary["per_code_f1"],
      "timings": {"generate_s": t1 - t0, "classifier_s": time.perf_counter() - t1},
    }

  return CONVERGENCE.run(h.root, step=step, seed=seed).execute(identity, make, config=cfg)


def table(records: list[dict]) -> pd.DataFrame:
  rows = []
  for step in sorted({r["step"] for r in records}):
    rs = [r for r in records if r["step"] == step]
    rows.append({"step": step, "samples seen": rs[0]["samples_seen"], **runs.auroc_cells(rs)})
  return pd.DataFrame(rows)


def plot(records: list[dict], path: str) -> str:
  steps = sorted({r["step"] for r in records})
  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for name, get, style in (
    ("macro", lambda r: r["macro_auroc"], dict(color="black", lw=1.6, marker="o")),
    ("common", lambda r: r["buckets"].get("common"), dict(color="tab:blue", lw=1, ls="--")),
    ("moderate", lambda r: r["buckets"].get("moderate"), dict(color="tab:orange", lw=1, ls="--")),
    ("rare", lambda r: r["buckets"].get("rare"), dict(color="tab:green", lw=1, ls="--")),
  ):
    stats = [runs.mean_std(get(r) for r in records if r["step"] == s) for s in steps]
    mean = np.array([m for m, _, _ in stats])
    std = np.array([s if np.isfinite(s) else 0.0 for _, s, _ in stats])
    ax.plot(steps, mean, label=name, **style)
    if name == "macro" and (std > 0).any():
      ax.fill_between(steps, mean - std, mean + std, color="black", alpha=0.12, lw=0)
  ax.set_xlabel("U-Net training step")
  ax.set_ylabel("TSTR AUROC (real test fold)")
  ax.set_title("TSTR against generator training (paper 003, Table IV)", fontsize=10)
  ax.grid(lw=0.3, alpha=0.5)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  df = table(records)
  md = (
    "A real_matched cohort generated by the generator at each kept U-Net step, TSTR on real "
    "fold 10 (mean ± std over seeds).\n\n" + markdown(df) + "\n![convergence](convergence.png)\n"
  )
  return md, {
    "convergence.md": write_text(os.path.join(out, "convergence.md"), md),
    "convergence.csv": to_csv(df, os.path.join(out, "convergence.csv")),
    "convergence.png": plot(records, os.path.join(out, "convergence.png")),
  }


CONVERGENCE = runs.Evaluation(
  name="convergence",
  title="TSTR against generator training steps (paper 003, Table IV)",
  summary="TSTR with the generator's kept checkpoints (experiments.convergence)",
  keys=("step", "seed"),
  subdir=lambda k: os.path.join(f"step_{k['step']}", f"seed_{k['seed']}"),
  required={"step": int, "seed": int, "macro_auroc": (int, float), "buckets": dict},
  render=render,
  config=config,
)
