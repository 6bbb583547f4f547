"""Every one of the 13 policies through the TSTR harness at a tiny size, then the report."""

import json
import os
import pathlib

import numpy as np
import pytest
from conftest import tiny_cfg, workdir_from
from sklearn.metrics import roc_auc_score

from ecgjax import metrics, policies
from ecgjax.data import pipeline
from ecgjax.errors import CheckpointError
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import report, table1, tstr
from ecgjax.eval import runs as runs_lib

# One worker runs the whole module under `pytest -n 2 --dist loadgroup`, so its fixtures
# (and the runs they cache) are built once; they are session-scoped because that worker may
# run other modules' tests in between, which would tear a module-scoped fixture down.
pytestmark = [pytest.mark.xdist_group("all_policies"), pytest.mark.slow]

N = 16


def _cfg():
  cfg = tiny_cfg()
  cfg.classifier.update(epochs=1, batch_size=N)
  cfg.tstr.update(n=N, n_boot=10)
  return cfg


@pytest.fixture(scope="session")
def harness(ptbxl, tmp_path_factory, random_generator_dir, random_judge_dir):
  # A random-weight judge: the policies only need its outputs to be well-formed.
  workdir = workdir_from(tmp_path_factory.mktemp("all"), random_generator_dir, random_judge_dir)
  return tstr.Harness(_cfg(), pipeline.make_mesh(1), ptbxl, workdir, progress=False)


@pytest.fixture(scope="session")
def finished(harness):
  """Every policy's TSTR run, each made once for the module whichever test asks first:
  {policy: (record, skipped, [(test labels, test scores, train labels) of each
  metrics.summarize call during the run])}."""
  out, calls, summarize = {}, [], metrics.summarize

  def spy(y_test, s_test, y_val, s_val, y_train, *args, **kwargs):
    calls.append((np.asarray(y_test), np.asarray(s_test), np.asarray(y_train)))
    return summarize(y_test, s_test, y_val, s_val, y_train, *args, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(metrics, "summarize", spy)
    for policy in policies.POLICIES:
      calls.clear()
      record, skipped = harness.run(policy, 0)
      out[policy] = (record, skipped, list(calls))
  return out


@pytest.mark.parametrize("policy", list(policies.POLICIES))
def test_policy_runs_end_to_end(harness, finished, policy):
  record, skipped, calls = finished[policy]
  assert not skipped and len(calls) == 1
  path = os.path.join(harness.workdir, "tstr", policy, "seed_0", "metrics.json")
  stored = json.loads(pathlib.Path(path).read_text())
  assert stored["policy"] == policy and stored["n_train"] == N
  expected_budget = 0 if policy == "real_subset" else policies.POOL_FACTOR.get(policy, 1) * N
  assert stored["generator_budget"] == expected_budget
  # The stored AUROCs against scikit-learn's on the test-fold scores the run produced: one
  # per code with a train positive, a test positive and a test negative, and their mean.
  y_true, y_score, y_train = calls[0]
  cols = [
    j
    for j in range(y_true.shape[1])
    if y_train[:, j].any() and 0 < y_true[:, j].sum() < len(y_true)
  ]
  assert stored["n_evaluable"] == len(cols) > 0
  expected = {stored["codes"][j]: roc_auc_score(y_true[:, j], y_score[:, j]) for j in cols}
  assert stored["per_code"] == pytest.approx(expected, abs=1e-6)
  assert stored["macro_auroc"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
  if policy in ("rare_boost", "rare_oversample_3x"):  # the rebalancing diagnostics travel along
    rep = stored["policy_report"]
    assert 1 < rep["effective_sample_size"] <= harness.table.num_rows
    assert set(rep["achieved_prevalence"]) == set(harness.ds.codes) and rep["raised"]
  else:
    assert "policy_report" not in stored


def test_report_over_all_policies(harness, finished):
  # Stands alone: `finished` makes every policy's run whatever ran before.
  assert sorted(finished) == sorted(policies.POLICIES)
  out = os.path.join(harness.workdir, "report")
  report.make_report(harness.workdir)
  df = table1.table1(runs_lib.collect(harness.workdir, tstr.TSTR))
  assert list(df["policy"]) == list(table1.POLICY_ORDER) and sorted(table1.POLICY_ORDER) == sorted(
    policies.POLICIES
  )
  assert (df["seeds"] == 1).all()
  for name in ("table1.md", "table1.csv", "figure1.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0


def test_blend_mixes_real_and_synthetic(harness):
  record, skipped = harness.run("blend_0.25", 1, real_fraction=0.25)
  assert not skipped and record["real_fraction"] == 0.25 and record["n_train"] == N
  assert record["generator_budget"] == N - round(0.25 * N)  # only the synthetic part is generated
  path = os.path.join(harness.workdir, "blend", "frac_0.25", "seed_1", "metrics.json")
  assert json.loads(pathlib.Path(path).read_text())["real_fraction"] == 0.25
  runs = runs_lib.collect(harness.workdir, tstr.BLEND)
  assert [r["real_fraction"] for r in runs] == [0.25]


def test_judge_loads_whatever_its_training_settings_but_not_another_architecture(harness):
  cfg = tiny_cfg()
  cfg.classifier.update(epochs=30, learning_rate=1e-3)  # the judge was exported with epochs=1
  clf, thresholds = judge_lib.load(harness.workdir, cfg)
  assert thresholds.shape == (71,) and clf.model.num_classes == 71
  cfg.classifier.arch = "xresnet1d101"
  with pytest.raises(CheckpointError, match="different config .*differing: classifier"):
    judge_lib.load(harness.workdir, cfg)
