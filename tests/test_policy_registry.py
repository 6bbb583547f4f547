"""Every consumer's list of policies comes from the registry (ecgjax/policies/registry.py)."""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from ecgjax import policies as P
from ecgjax.eval import table1
from ecgjax.policies import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run(
    args, capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ}
  )


def test_registry_states_each_policy_once_with_its_metadata():
  assert list(P.REGISTRY) == P.names()
  for name, spec in P.REGISTRY.items():
    assert spec.name == name and spec.family in registry.FAMILIES
    assert P.POLICIES[name] is spec.fn is P.get_policy(name)
  assert {n for n, s in P.REGISTRY.items() if s.source == P.REAL} == {"real_subset"}
  assert {n for n, s in P.REGISTRY.items() if s.source == P.JUDGE_POOL} == P.JUDGE_POLICIES
  assert P.get("qfilter_matched").generator_budget(10) == 20
  assert P.get("real_subset").generator_budget(10) == 0
  assert P.get("uniform_class").generator_budget(10) == 10
  with pytest.raises(ValueError, match="unknown policy 'nope'; known: real_subset"):
    P.get("nope")


def test_a_spec_must_be_consistent():
  with pytest.raises(ValueError, match="family"):
    registry.PolicySpec("x", P.POLICIES["real_matched"], "Nonsense")
  with pytest.raises(ValueError, match="judge_policy"):
    registry.PolicySpec("x", P.POLICIES["real_matched"], "Filter", P.JUDGE_POOL)
  with pytest.raises(ValueError, match="judge_policy"):
    registry.PolicySpec("x", P.POLICIES["qfilter_matched"], "Filter", P.GENERATED)


def test_sweep_dry_run_lists_the_registry():
  out = _run("bash", "launch/sweep.sh", "--dry_run", "--no_report", "--seeds=0")
  assert out.returncode == 0, out.stderr
  swept = [
    line.split("--policy=")[1].split()[0]
    for line in out.stdout.splitlines()
    if line.startswith("python -m experiments.tstr")
  ]
  assert swept == P.names()
  listed = _run(sys.executable, "-m", "ecgjax.policies")
  assert listed.stdout.strip() == ",".join(P.names())


def test_cli_enum_is_the_registry():
  out = _run(sys.executable, "-m", "experiments.tstr", "--helpfull")
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  text = "".join(out.stdout.split())  # absl wraps the enum mid-word
  assert "<" + "|".join(P.names()) + ">" in text
  bad = _run(sys.executable, "-m", "experiments.tstr", "--policy=nope")
  assert bad.returncode != 0 and "real_subset" in bad.stderr


def test_report_groups_are_the_registry(monkeypatch):
  assert tuple(P.names()) == table1.POLICY_ORDER
  assert set(table1.GROUPS) == set(registry.FAMILIES)
  for name, spec in P.REGISTRY.items():
    assert table1.GROUP_OF[name] == spec.family
  assert (table1.CEILING, table1.BASELINE) == ("real_subset", "real_matched")


def test_a_fourteenth_policy_is_one_function_and_one_entry(monkeypatch, ptbxl, tmp_path):
  """Registered at run time: the report groups it and the harness runs it, with its report."""
  import importlib

  from ecgjax.eval import tstr

  def every_other_row(key, table, n, **unused):
    del key, unused
    return P.POLICIES["real_matched"](jax.random.PRNGKey(0), table, n)

  spec = registry.PolicySpec(
    "every_other_row",
    every_other_row,
    "Diversity",
    P.REAL,
    report=lambda table, codes: {"rows": int(table.num_rows), "first": codes[0]},
  )
  monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
  fresh = importlib.reload(table1)
  try:
    assert "every_other_row" in fresh.GROUPS["Diversity"]
    assert fresh.POLICY_ORDER[-1] == "every_other_row"
  finally:
    monkeypatch.delitem(registry.REGISTRY, spec.name)
    importlib.reload(table1)

  # The harness dispatches on the registry's source and stores the report hook's output.
  monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
  from ecgjax import configs
  from ecgjax.data import pipeline

  cfg = configs.get_config("mini")
  harness = tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  captured = {}

  def fake_fit(signals, labels, seed, run_dir):  # the classifier is not under test here
    captured["signals"] = signals
    summary = {"macro_auroc": 0.5, "buckets": {}, "per_code": {}, "n_evaluable": 0}
    return types.SimpleNamespace(best_epoch=0, val_auroc=0.5), summary

  monkeypatch.setattr(harness, "fit_and_score", fake_fit)
  record, skipped = harness.run("every_other_row", 0, n=8)
  assert not skipped and record["generator_budget"] == 0
  expected = every_other_row(None, harness.table, 8)
  rows = np.asarray(harness.table.ds_rows)[np.asarray(expected.rows)]
  np.testing.assert_array_equal(captured["signals"], np.asarray(ptbxl.signals[rows]))
  stored = json.loads(
    (tmp_path / "tstr" / "every_other_row" / "seed_0" / "metrics.json").read_text()
  )
  assert stored["policy_report"] == {"rows": 276, "first": ptbxl.codes[0]}


def test_no_library_module_defines_flags_at_import():
  code = (
    "import importlib, pkgutil\n"
    "from absl import flags\n"
    "import ecgjax\n"
    "for m in pkgutil.walk_packages(ecgjax.__path__, 'ecgjax.'):\n"
    "  if m.name != 'ecgjax.policies.__main__':\n"
    "    importlib.import_module(m.name)\n"
    "owners = flags.FLAGS.flags_by_module_dict()\n"
    "print(sorted(m for m in owners if m.split('.')[0] in ('ecgjax', 'experiments')))\n"
  )
  out = _run(sys.executable, "-c", code)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"
