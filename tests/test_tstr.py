"""The TSTR harness, the classifier trainer and the entry points' errors."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import profiles, read_scalars

from ecgjax import configs, metrics
from ecgjax.data import pipeline
from ecgjax.errors import ConfigError
from ecgjax.eval import tstr
from ecgjax.train import classifier, events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=120):
  env = {
    **os.environ,
    "ECGJAX_CACHE_DIR": os.environ.get("ECGJAX_CACHE_DIR", "/tmp/ecgjax-test-cache"),
  }
  return subprocess.run(
    [sys.executable, "-m", *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=timeout,
    env=env,
  )


def _split(ds):
  tr, va, te = (np.flatnonzero(m) for m in (ds.train_mask, ds.val_mask, ds.test_mask))
  sig = lambda idx: np.asarray(ds.signals[idx])
  return (sig(tr), ds.labels[tr]), (sig(va), ds.labels[va]), (sig(te), ds.labels[te])


def test_classifier_learns_on_real_records(ptbxl):
  """The trainer learns: real train folds -> a fold-10 macro AUROC well above chance. The
  architecture is not what is tested (test_xresnet1d.py checks XResNet1d-50 against its
  PyTorch twin), so xresnet1d_tiny, the same trainer at a fraction of the step time."""
  (xtr, ytr), (xva, yva), (xte, yte) = _split(ptbxl)
  ccfg = configs.get_config("mini").classifier
  ccfg.update(epochs=8, arch="xresnet1d_tiny")
  clf = classifier.train_classifier(
    ccfg, xtr, ytr, xva, yva, mesh=pipeline.make_mesh(1), ckpt_dir=None, seed=0, progress=False
  )
  enough = ptbxl.evaluable(min_test_positives=5)
  auc = metrics.macro_auroc(yte, clf.predict(xte, pipeline.make_mesh(1)), enough)
  print(
    f"real_subset, {ccfg.epochs} epochs on {len(xtr)} records: fold-10 macro AUROC {auc:.4f} "
    f"over {enough.sum()} codes with >= 5 test positives (best epoch {clf.best_epoch + 1})"
  )
  assert auc > 0.6


@pytest.mark.parametrize("crop", [0, 250])
def test_classifier_resumes_exactly(ptbxl, tmp_path, crop):
  """...and writes TensorBoard scalars (the whole-record run also a profile of step 1)."""
  (xtr, ytr), (xva, yva), _ = _split(ptbxl)
  xtr, ytr = xtr[:64], ytr[:64]
  ccfg = configs.get_config("mini").classifier
  ccfg.update(epochs=2, batch_size=32, crop=crop, arch="xresnet1d_tiny")
  mesh = pipeline.make_mesh(1)
  kw = dict(mesh=mesh, seed=3, progress=False)
  events.set_profile(events.Profile(1, 2) if crop == 0 else None)  # as --profile_steps=1:2
  try:
    straight = classifier.train_classifier(
      ccfg, xtr, ytr, xva, yva, ckpt_dir=str(tmp_path / "a"), **kw
    )
  finally:
    events.set_profile(None)
  classifier.train_classifier(
    ccfg, xtr, ytr, xva, yva, ckpt_dir=str(tmp_path / "b"), stop_after_epochs=1, **kw
  )
  resumed = classifier.train_classifier(
    ccfg, xtr, ytr, xva, yva, ckpt_dir=str(tmp_path / "b"), **kw
  )
  assert straight.best_epoch == resumed.best_epoch
  for a, b in zip(jax.tree.leaves(straight.variables), jax.tree.leaves(resumed.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # TensorBoard events beside the checkpoints, read back with TensorBoard's reader: the
  # loss, gradient norm, steps/s and learning rate of each logged step (every epoch's last
  # here, 2 steps an epoch), and each epoch's validation AUROC, the best the classifier's.
  scalars = read_scalars(tmp_path / "tensorboard" / "a")
  assert {"train/loss", "train/grad_norm", "train/lr", "train/steps_per_s"} <= set(scalars)
  assert [s for s, _ in scalars["train/loss"]] == [2, 4]
  assert all(np.isfinite(v) and v > 0 for t in ("loss", "grad_norm", "steps_per_s")
             for _, v in scalars[f"train/{t}"])  # fmt: skip
  schedule = optax.cosine_onecycle_schedule(4, ccfg.learning_rate, pct_start=0.3)
  np.testing.assert_allclose(
    [v for _, v in scalars["train/lr"]], [float(schedule(s - 1)) for s in (2, 4)], rtol=1e-6
  )
  aurocs = [v for _, v in scalars["val/macro_auroc"]]
  assert [s for s, _ in scalars["val/macro_auroc"]] == [2, 4]
  assert max(aurocs) == pytest.approx(straight.val_auroc, rel=1e-6)
  # The resumed run's two halves log the uninterrupted run's losses.
  assert read_scalars(tmp_path / "tensorboard" / "b")["train/loss"] == scalars["train/loss"]
  # --profile_steps: a jax.profiler trace xprof opens, beside the events.
  assert len(profiles(tmp_path / "tensorboard" / "a")) == (1 if crop == 0 else 0)


def test_real_subset_run_writes_metrics_and_skips_on_rerun(ptbxl, tmp_path):
  cfg = configs.get_config("mini")
  cfg.classifier.update(epochs=1, batch_size=32, arch="xresnet1d_tiny")
  cfg.tstr.update(n=64, n_boot=20)
  harness = tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  record, skipped = harness.run("real_subset", 0)
  assert not skipped
  path = tmp_path / "tstr" / "real_subset" / "seed_0" / "metrics.json"
  stored = json.loads(path.read_text())
  for key in (
    "policy",
    "seed",
    "n_train",
    "macro_auroc",
    "buckets",
    "per_code",
    "n_evaluable",
    "config",
    "timings",
    "code_version",
  ):
    assert key in stored, key
  assert (
    stored["n_train"] == 64
    and stored["policy"] == "real_subset"
    and stored["generator_budget"] == 0
  )
  assert set(stored["buckets"]) == {"common", "moderate", "rare"}
  assert stored["n_evaluable"] == int(ptbxl.evaluable().sum()) == len(stored["per_code"])
  assert np.isclose(stored["macro_auroc"], np.mean(list(stored["per_code"].values())))
  # Resumption state cleaned up; the classifier's TensorBoard events stay.
  assert sorted(os.listdir(path.parent)) == ["metrics.json", "tensorboard"]
  again, skipped = harness.run("real_subset", 0)
  assert skipped and again == stored
  # Only a run made as asked is reused: progress bars change nothing, another classifier
  # or scoring setting is refused with one line naming the file and the fields.
  quiet = tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=True)
  assert quiet.run("real_subset", 0) == (stored, True)
  before = path.read_bytes()
  for section, key, value in (("classifier", "crop", 0), ("tstr", "n_boot", 50)):
    other = cfg.copy_and_resolve_references()
    other[section][key] = value
    with pytest.raises(ConfigError) as e:
      tstr.Harness(other, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False).run(
        "real_subset", 0
      )
    message = str(e.value)
    assert message.startswith(f"{path} was made with other settings: {section}.{key} (")
    assert "\n" not in message and path.read_bytes() == before
  with pytest.raises(ConfigError, match="n \\(64 on disk, 32 asked\\)"):
    harness.run("real_subset", 0, n=32)
  # A record without its settings (an older ecgjax) is not trusted either.
  path.write_text(json.dumps({k: v for k, v in stored.items() if k != "identity"}))
  with pytest.raises(ConfigError, match="records no settings .written by an older ecgjax"):
    harness.run("real_subset", 0)


def test_unknown_policy_lists_the_valid_ones():
  out = _cli("experiments.tstr", "--policy=oversample_everything")
  assert out.returncode == 1
  assert (
    "oversample_everything" in out.stderr
    and "real_matched" in out.stderr
    and "qstrat_matched" in out.stderr
  )
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
  "flag,needle",
  [
    ("--seeds=0,x", "--seeds='0,x'"),
    ("--seeds=-1", "--seeds='-1'"),
    ("--n=0", "--n must be a positive integer, got 0"),
    ("--n=-5", "--n must be a positive integer, got -5"),
  ],
)
def test_bad_seeds_and_n(flag, needle):
  out = _cli("experiments.tstr", "--policy=real_matched", flag)
  assert out.returncode == 1 and needle in out.stderr and "Traceback" not in out.stderr


def test_blend_refuses_a_real_part_larger_than_the_train_folds_before_any_work(tmp_path):
  """Fraction 0.5 of n = 1024 needs 512 real records; the embedded slice has 276."""
  out = _cli(
    "experiments.blend", "--fractions=0,0.5", "--n=1024", f"--workdir={tmp_path}", timeout=300
  )
  # One error line, the last (a cold data cache prints its progress before it).
  errors = [line for line in out.stderr.splitlines() if "--fractions" in line]
  assert out.returncode == 1 and len(errors) == 1, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in out.stderr
  assert "--fractions=0,0.5" in errors[0] and "exceeds the 276 train records" in errors[0]
  assert "--n <= 552" in errors[0]
  assert os.listdir(tmp_path) == []  # nothing trained, nothing written


def test_n_that_does_not_parse():
  out = _cli("experiments.tstr", "--n=lots")
  assert out.returncode != 0 and "--n" in out.stderr and "lots" in out.stderr


def test_paper_preset_without_generator_is_an_error(tmp_path):
  out = _cli("experiments.tstr", "--policy=real_matched", "--preset=paper", f"--workdir={tmp_path}")
  assert out.returncode == 1
  assert f"no trained generator in {tmp_path}" in out.stderr and "train_generator" in out.stderr
  assert not os.listdir(tmp_path)


# Every entry point in experiments/.
MAINS = sorted(
  f.stem for f in (pathlib.Path(__file__).parents[1] / "experiments").glob("*.py")
  if not f.stem.startswith("_")  # __init__ and helper modules such as _memory
)  # fmt: skip
assert len(MAINS) >= 13


@pytest.mark.parametrize("main", MAINS)
def test_every_entry_point_explains_its_flags(main):
  """Imports each absl main (a flag defined twice fails here) and checks --helpfull."""
  out = _cli(f"experiments.{main}", "--helpfull", timeout=60)
  # absl's --helpfull exits with status 1 after printing; a broken import leaves a traceback.
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  assert f"python -m experiments.{main}" in out.stdout  # the usage line of the module's docstring
  assert "--helpfull" in out.stdout


def test_profile_steps_flag_parses():
  """--profile_steps=START:STOP (cli.start hands it to events.set_profile)."""
  assert events.Profile.parse("10:20") == events.Profile(10, 20)
  assert events.Profile.parse(None) is None and events.Profile.parse("") is None
  for bad in ("10", "a:b", "5:5", "-1:3"):
    with pytest.raises(ValueError, match="START"):
      events.Profile.parse(bad)
