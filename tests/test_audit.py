"""The audit end to end at a tiny size, and the judge embedding it measures in.

The measures themselves are checked against known answers in test_fidelity.py
and test_privacy.py; here: the embedding is the head's penultimate layer, and
the audit of known cohorts (copies of training records; independent simulated
records) reads as it must, with every output file written.
"""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from conftest import tiny_cfg

from ecgjax.data import pipeline
from ecgjax.data.signals import limb_residuals
from ecgjax.errors import ConfigError
from ecgjax.eval import audit, report
from ecgjax.eval import judge as judge_lib
from ecgjax.generators import simulator
from ecgjax.train import classifier as clf_lib

pytest.importorskip("neurokit2")


@pytest.fixture(scope="session")
def judge(random_judge_dir):
  return judge_lib.load(random_judge_dir, tiny_cfg())[0]


def test_embedding_is_the_penultimate_layer(judge, ptbxl):
  x = np.asarray(ptbxl.signals[:5])
  mesh = pipeline.make_mesh(1)
  whole = clf_lib.Classifier(judge.model, judge.variables, judge.mean, judge.std)  # crop 0
  emb = whole.embed(x, mesh)
  dense = judge.variables["params"]["head"]["dense1"]
  logits = emb @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
  np.testing.assert_allclose(logits, whole.predict(x, mesh, logits=True), rtol=1e-4, atol=1e-4)
  # With the crop protocol, the mean of the window embeddings.
  windowed = clf_lib.Classifier(
    judge.model, judge.variables, judge.mean, judge.std, crop=250, crop_stride=250
  )
  by_window = [whole.embed(x[..., s : s + 250], mesh) for s in (0, 250, 500, 750)]
  np.testing.assert_allclose(
    windowed.embed(x, mesh), np.mean(by_window, axis=0), rtol=1e-4, atol=1e-5
  )


def _audit_cfg():
  cfg = tiny_cfg()
  cfg.audit.update(max_records=40, clinical_records=12, min_class_records=5)
  return cfg


@pytest.mark.slow
def test_audit_of_copies_and_of_independent_records(judge, ptbxl, tmp_path):
  cfg = _audit_cfg()
  mesh = pipeline.make_mesh(1)
  wd = str(tmp_path)
  a = audit.Audit(cfg, mesh, ptbxl, wd, judge, progress=False)
  train = np.flatnonzero(ptbxl.train_mask)
  copies = a.run(
    "copies", np.asarray(ptbxl.signals[train]), ptbxl.labels[train], about={"source": "copies"}
  )
  sim = simulator.load(cfg, ptbxl)
  cond = ptbxl.cond[train[:48]]
  simulated_signals = sim.generate(cond, jax.random.PRNGKey(0), mesh=mesh)
  simulated = a.run(
    "simulated",
    simulated_signals,
    ptbxl.labels[train[:48]],
    about={"source": "simulator"},
  )
  for space in ("embedding", "signal"):
    # Every copy sits on a training record; the real train row is the members themselves.
    assert copies["privacy"][audit.SYNTHETIC][space]["memorised_fraction"] == 1.0
    assert copies["privacy"][audit.TRAIN][space]["mia_auroc"] == 1.0
    assert simulated["privacy"][audit.SYNTHETIC][space]["memorised_fraction"] <= 0.25
    assert simulated["privacy"][audit.HELDOUT][space]["memorised_fraction"] <= 0.25
  # The simulator forms its limb leads from electrodes: identities hold to float precision.
  assert simulated["lead_residuals"][audit.SYNTHETIC]["einthoven"]["median"] < 1e-5
  assert copies["lead_residuals"][audit.SYNTHETIC]["einthoven"]["median"] == pytest.approx(
    copies["lead_residuals"][audit.TRAIN]["einthoven"]["median"], rel=0.5
  )
  assert copies["n_per_set"] == 40 and simulated["n_per_set"] == 40
  out = os.path.join(wd, "audit", "simulated")
  names = sorted(os.listdir(out))
  for name in ("audit.json", "audit.md", "audit.html", "lead_residuals.png", "clinical.png"):
    assert name in names
  with open(os.path.join(out, "audit.json")) as f:
    stored = json.load(f)
  assert stored["embedding"][audit.SYNTHETIC]["detection_auroc"] == pytest.approx(
    simulated["embedding"][audit.SYNTHETIC]["detection_auroc"]
  )
  # The stored figures against numpy on the records they describe: the cohort's random
  # subset of 40 (numpy's generator seeded with audit.seed, drawn first) and fold 10.
  test_x = np.asarray(ptbxl.signals[np.flatnonzero(ptbxl.test_mask)], np.float64)
  assert stored["n_target"] == len(test_x) and stored["n_train_records"] == len(train)
  sim_x = np.asarray(simulated_signals, np.float64)
  pick = np.sort(np.random.default_rng(cfg.audit.seed).choice(48, size=40, replace=False))
  ratio = sim_x[pick].std(axis=(0, 2)) / test_x.std(axis=(0, 2))
  assert list(stored["amplitude"][audit.SYNTHETIC]["per_lead"].values()) == pytest.approx(
    ratio, rel=1e-4
  )
  assert stored["amplitude"][audit.SYNTHETIC]["std_ratio_mean"] == pytest.approx(
    ratio.mean(), rel=1e-4
  )
  for name, r in limb_residuals(test_x).items():
    assert stored["lead_residuals"][audit.TARGET][name]["median"] == pytest.approx(
      np.median(r), rel=1e-4, abs=1e-9
    ), name
  with open(os.path.join(out, "audit.md")) as f:
    md = f.read()
  for heading in ("Lead consistency", "Amplitude", "judge's embedding", "Clinical", "Privacy"):
    assert heading in md
  # A rerun of the same audit is skipped; another cohort under the same name is refused
  # with one line naming the file, and leaves it as it was; the report links both audits.
  again = a.run(
    "simulated", simulated_signals, ptbxl.labels[train[:48]], about={"source": "simulator"}
  )
  assert again == {**stored}
  before = pathlib.Path(out, "audit.json").read_bytes()
  with pytest.raises(ConfigError) as e:
    a.run("simulated", np.zeros((1, 12, 1000), np.float32), np.zeros((1, 71)), about={})
  message = str(e.value)
  assert message.startswith(os.path.join(out, "audit.json") + " was made with other settings: ")
  assert "about.source ('simulator' on disk, None asked)" in message and "cohort (" in message
  assert pathlib.Path(out, "audit.json").read_bytes() == before
  written = report.make_report(wd)
  with open(written["index.md"]) as f:
    index = f.read()
  assert "audit/copies/audit.md" in index and "audit/simulated/audit.html" in index
