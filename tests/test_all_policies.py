"""Every one of the 13 policies through the TSTR harness at a tiny size, then the report."""

import json
import os
import pathlib

import pytest
from conftest import export_random_generator, export_random_judge, tiny_cfg

from ecgjax import policies
from ecgjax.data import pipeline
from ecgjax.errors import CheckpointError
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import report, table1, tstr
from ecgjax.eval import runs as runs_lib

# One worker runs the whole module under `pytest -n 2 --dist loadgroup`, so its
# module-scoped fixtures (and the runs they cache) are built once.
pytestmark = pytest.mark.xdist_group("all_policies")

N = 16


@pytest.fixture(scope="module")
def harness(ptbxl, tmp_path_factory):
  cfg = tiny_cfg()
  cfg.classifier.update(epochs=1, batch_size=N)
  cfg.tstr.update(n=N, n_boot=10)
  workdir = str(tmp_path_factory.mktemp("all"))
  export_random_generator(cfg, ptbxl, workdir)
  # A random-weight judge: the policies only need its outputs to be well-formed.
  export_random_judge(cfg, workdir)
  return tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, workdir, progress=False)


@pytest.mark.parametrize("policy", list(policies.POLICIES))
def test_policy_runs_end_to_end(harness, policy):
  record, skipped = harness.run(policy, 0)
  assert not skipped
  path = os.path.join(harness.workdir, "tstr", policy, "seed_0", "metrics.json")
  stored = json.loads(pathlib.Path(path).read_text())
  assert stored["policy"] == policy and stored["n_train"] == N
  expected_budget = 0 if policy == "real_subset" else policies.POOL_FACTOR.get(policy, 1) * N
  assert stored["generator_budget"] == expected_budget
  assert 0.0 <= stored["macro_auroc"] <= 1.0 and stored["n_evaluable"] > 0
  if policy in ("rare_boost", "rare_oversample_3x"):  # the rebalancing diagnostics travel along
    rep = stored["policy_report"]
    assert 1 < rep["effective_sample_size"] <= harness.table.num_rows
    assert set(rep["achieved_prevalence"]) == set(harness.ds.codes) and rep["raised"]
  else:
    assert "policy_report" not in stored


def test_report_over_all_policies(harness):
  for policy in policies.POLICIES:
    harness.run(policy, 0)  # finished above: skipped
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
  record, skipped = harness.run("blend_0.25", 1, kind="blend", real_fraction=0.25)
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
