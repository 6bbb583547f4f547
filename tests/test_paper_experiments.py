"""Papers 001/003's experiments at a tiny size: augmentation, mixtures and transfer, convergence."""

import os

import jax
import numpy as np
import pytest
from conftest import make_ptbxl_root, random_generator, tiny_cfg, trained_cfg, workdir_from

from ecgjax.data import load_ptbxl, pipeline
from ecgjax.errors import CheckpointError, ConfigError
from ecgjax.eval import augment, convergence, runs, transfer, tstr
from ecgjax.generators import latent_diffusion

# One worker runs the whole module under `pytest -n 2 --dist loadgroup`, so its fixtures
# (and the runs they cache) are built once; they are session-scoped because that worker may
# run other modules' tests in between, which would tear a module-scoped fixture down.
pytestmark = pytest.mark.xdist_group("paper_experiments")


def _cfg():
  cfg = tiny_cfg()
  cfg.classifier.update(epochs=1, batch_size=32)
  cfg.tstr.update(n=32, n_boot=10)
  return cfg


@pytest.fixture(scope="session")
def small(ptbxl, tmp_path_factory):
  """A 141-record root: every record with AFIB or PVC and the first 120 others (a third of
  the embedded slice, so each classifier trains and predicts in a third of the time)."""
  codes = list(ptbxl.codes)
  rare = ptbxl.labels[:, [codes.index("AFIB"), codes.index("PVC")]].any(1)
  keep = np.flatnonzero(rare | (np.cumsum(~rare) <= 120))
  root = make_ptbxl_root(tmp_path_factory.mktemp("small"), list(ptbxl.ecg_id[keep]))
  return load_ptbxl(root, cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False)


@pytest.fixture(scope="session")
def harness(small, tmp_path_factory):
  cfg = _cfg()
  wd = workdir_from(tmp_path_factory.mktemp("papers"), random_generator(cfg, small))
  return tstr.Harness(cfg, pipeline.make_mesh(1), small, wd, progress=False)


@pytest.mark.slow
def test_augmentation_arms(harness, small):
  codes = augment.parse_codes("AFIB,PVC", small.codes)
  cols = [list(small.codes).index(c) for c in codes]
  tr = np.flatnonzero(small.train_mask)
  n_pos = int(small.labels[tr][:, cols].any(1).sum())
  got = {arm: augment.run(harness, codes, arm, 0)[0] for arm in augment.ARMS}
  assert got["baseline"]["n_train"] == len(tr) and got["baseline"]["n_added"] == 0
  assert got["double"]["n_train"] == got["synthetic"]["n_train"] == len(tr) + n_pos
  assert got["synthetic"]["n_added"] == n_pos > 0
  assert got["baseline"]["train_positives"] == {
    c: int(small.labels[tr][:, j].sum()) for c, j in zip(codes, cols)
  }
  for record in got.values():
    assert set(record["per_code_gmean"]) <= set(codes) and record["codes"] == codes
  assert augment.run(harness, codes, "double", 0)[1]  # finished: skipped
  assert sorted(os.listdir(os.path.join(harness.root, "augment", "synthetic", "seed_0"))) == [
    "metrics.json",
    "tensorboard",
  ]  # the cohort and checkpoints were scratch; the classifier's TensorBoard events stay
  text, written = augment.render(list(got.values()), str(harness.root) + "/r")
  assert "AFIB baseline" in text and os.path.getsize(written["augment.csv"]) > 0
  with pytest.raises(ConfigError, match="does not render"):
    augment.parse_codes("AFIB,CRBBB", small.codes, ("NORM", "AFIB"))


@pytest.mark.slow
def test_transfer_settings(harness):
  cfg = harness.cfg
  cfg.transfer.update(ratios="0.5", fractions="0.25", n_synthetic=32)
  settings = transfer.settings(cfg.transfer)
  assert settings == ["synthetic", "scratch_0.25", "finetune_0.25", "mix_0.5"]
  exp = transfer.Transfer(harness)
  got = {s: exp.run(s, 0)[0] for s in settings}
  n_real = int(harness.ds.train_mask.sum())
  assert got["synthetic"]["n_real"] == 0 and got["synthetic"]["n_synthetic"] == 32
  assert got["scratch_0.25"]["n_real"] == got["finetune_0.25"]["n_real"] == round(0.25 * n_real)
  assert got["finetune_0.25"]["init"] == "synthetic" and got["scratch_0.25"]["init"] is None
  assert got["mix_0.5"]["n_synthetic"] == round(0.5 * n_real)
  assert got["mix_0.5"]["n_real"] == n_real
  # Fine-tuning starts from the pre-trained weights, so it differs from scratch.
  assert got["finetune_0.25"]["per_code"] != got["scratch_0.25"]["per_code"]
  found = runs.collect(harness.root, transfer.TRANSFER)
  assert sorted(r["setting"] for r in found) == sorted(settings)
  with pytest.raises(ConfigError, match="fractions"):
    transfer.settings(type(cfg.transfer)(dict(ratios="1", fractions="0,1", n_synthetic=0)))


@pytest.mark.slow
def test_convergence_reads_kept_checkpoints(ptbxl, trained_dir, tmp_path, monkeypatch):
  """The study trains its generator into <root>/convergence when the workdir's kept none
  of its steps: here that training is the shared trained artefact's (conftest.trained_cfg:
  9 U-Net steps, every 3rd kept), copied where the study asks for it."""
  cfg = trained_cfg()
  cfg.classifier.update(epochs=1, batch_size=32)
  cfg.tstr.update(n=32, n_boot=10)
  cfg.convergence.update(steps="3,6", keep_every=3, n=32)
  trainings = []

  def train(scfg, mesh, ds, workdir, *, progress=True):
    trainings.append((workdir, scfg.train_unet.keep_every, scfg.train_unet.steps))
    workdir_from(workdir, trained_dir)

  monkeypatch.setattr(latent_diffusion, "train", train)
  wd = str(tmp_path)
  mesh = pipeline.make_mesh(1)
  harness = tstr.Harness(cfg, mesh, ptbxl, wd, progress=False)
  steps = convergence.parse_steps(cfg.convergence.steps)
  gen_dir = convergence.generator_workdir(cfg, mesh, ptbxl, wd, harness.root, steps, progress=False)
  assert gen_dir == os.path.join(wd, "convergence") and trainings == [(gen_dir, 3, 9)]
  # Multiples of keep_every survive beside the latest checkpoints.
  assert {3, 6, 9} <= set(convergence.kept_steps(gen_dir))
  scfg = convergence.study_config(cfg)
  final = latent_diffusion.load(scfg, ptbxl, gen_dir).model.params["unet"]
  at9 = latent_diffusion.load_at_step(scfg, ptbxl, gen_dir, 9)
  at3 = latent_diffusion.load_at_step(scfg, ptbxl, gen_dir, 3)
  # The EMA weights at the last step are the exported ones; at step 3 they differ.
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(at9.model.params["unet"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(
    not np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(at3.model.params["unet"]))
  )
  assert at3.identity["generator"].endswith("@step3") and at3.identity != at9.identity
  records = [convergence.run(harness, gen_dir, s, 0)[0] for s in steps]
  assert [r["step"] for r in records] == [3, 6]
  assert records[0]["samples_seen"] == 3 * cfg.train_unet.batch_size
  _, written = convergence.render(records, str(tmp_path / "r"))
  assert os.path.getsize(written["convergence.png"]) > 1000
  with pytest.raises(CheckpointError, match="step 4"):
    latent_diffusion.load_at_step(scfg, ptbxl, gen_dir, 4)
  with pytest.raises(ConfigError, match="positive"):
    convergence.parse_steps("0,3")
