"""The evaluation interface (ecgjax/eval/runs.py, registry.py, report.py): one run layout,
atomic results, skipping, and one report that renders every registered evaluation."""

import importlib.util
import json
import os
import warnings

import pytest
from ml_collections import ConfigDict

from ecgjax import configs
from ecgjax.errors import ConfigError
from ecgjax.eval import registry, report, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _toy(render=None, config=None):
  return runs.Evaluation(
    name="toy",
    title="A toy evaluation",
    summary="for tests",
    keys=("arm", "seed"),
    subdir=lambda k: os.path.join(k["arm"], f"seed_{k['seed']}"),
    required={"score": (int, float)},
    render=render,
    config=config,
  )


def test_run_writes_atomically_skips_and_cleans_its_scratch(tmp_path):
  toy = _toy()
  run = toy.run(str(tmp_path), arm="a", seed=3)
  assert run.done() is None
  scratch = run.scratch("cohort")
  os.makedirs(scratch)
  open(os.path.join(scratch, "shard.npz"), "w").close()
  record = run.write({"score": 0.5})
  assert record == {"evaluation": "toy", "arm": "a", "seed": 3, "score": 0.5}
  assert sorted(os.listdir(run.dir)) == ["metrics.json"]  # scratch gone, no temp file
  again = toy.run(str(tmp_path), arm="a", seed=3)
  assert again.done() == record
  with pytest.raises(ValueError, match="seed"):
    toy.run(str(tmp_path), arm="a")


def test_collect_checks_fields_types_and_place(tmp_path):
  toy = _toy()
  root = str(tmp_path)
  good = toy.run(root, arm="a", seed=0).write({"score": 0.9})
  toy.run(root, arm="b", seed=1).write({"score": True})  # a bool is not a score
  misplaced = os.path.join(root, "toy", "c", "seed_2", "metrics.json")
  os.makedirs(os.path.dirname(misplaced))
  with open(misplaced, "w") as f:
    json.dump({"arm": "a", "seed": 2, "score": 0.1}, f)  # says arm a, lives under c
  partial = os.path.join(root, "toy", "d", "seed_0", "metrics.json")
  os.makedirs(os.path.dirname(partial))
  with open(partial, "w") as f:
    f.write('{"arm": "d", "se')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", runs.SkippedRunWarning)
    found = runs.collect(root, toy)
  assert [r["arm"] for r in found] == ["a"] and found[0]["score"] == good["score"]
  messages = sorted(str(w.message) for w in caught)
  assert len(messages) == 3
  assert any("not this place" in m and misplaced in m for m in messages)
  assert any("'score' is True" in m for m in messages)
  assert any(partial in m for m in messages)


def test_a_new_evaluation_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
  """Registered at run time with its own config section: every preset carries the section,
  its runs go through the engine (Run.execute: made once, skipped after, refused under
  other settings) and the report finds its runs and renders its section."""

  def render(records, out):
    text = f"toy scores: {sorted(r['score'] for r in records)}"
    os.makedirs(out, exist_ok=True)
    return text, {}

  toy = _toy(render, lambda preset: ConfigDict(dict(scale=0.5 if preset == "paper" else 0.25)))
  monkeypatch.setattr(registry, "EVALUATIONS", dict(registry.EVALUATIONS))
  registry.register(toy)
  with pytest.raises(KeyError, match="already registered"):
    registry.register(toy)
  assert configs.get_config("paper").toy.scale == 0.5
  cfg = configs.get_config("mini")
  assert cfg.toy.scale == 0.25
  wd = str(tmp_path / "wd")
  made = []

  def step(cfg, seed):
    def make(run):
      made.append(seed)
      os.makedirs(run.scratch("cohort"))
      return {"score": cfg.toy.scale * (seed + 1)}

    return toy.run(wd, arm="a", seed=seed).execute({"scale": cfg.toy.scale}, make, config=cfg)

  for seed in (0, 2):
    record, skipped = step(cfg, seed)
    assert not skipped and record["score"] == 0.25 * (seed + 1)
    assert record["config"]["toy"] == {"scale": 0.25} and record["code_version"]
    assert record["identity"] == {"scale": 0.25}
  assert sorted(os.listdir(os.path.join(wd, "toy", "a", "seed_0"))) == ["metrics.json"]
  again, skipped = step(cfg, 0)
  assert skipped and again["score"] == 0.25 and again["seed"] == 0
  assert made == [0, 2]  # the rerun was skipped: make ran once per seed
  other = configs.get_config("mini")
  other.toy.scale = 1.0
  with pytest.raises(ConfigError, match=r"seed_0/metrics.json was made with other settings.*scale"):
    step(other, 0)
  assert made == [0, 2]
  written = report.make_report(wd)
  with open(written["index.md"], encoding="utf-8") as f:
    index = f.read()
  assert "## A toy evaluation" in index and "toy scores: [0.25, 0.75]" in index
  with open(written["index.html"], encoding="utf-8") as f:
    assert "toy scores: [0.25, 0.75]" in f.read()


def test_an_evaluation_missing_a_package_is_refused_before_any_work(monkeypatch):
  """`require` names the missing package and how to install it, in one line; the audit
  declares neurokit2, and every main of a registered evaluation checks it at start."""
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "neurokit2" else real(name, *a)
  )
  with pytest.raises(ConfigError) as e:
    registry.get("audit").require()
  assert str(e.value) == (
    "the audit evaluation needs neurokit2, which is not installed: pip install -e '.[audit]'"
  )
  registry.get("tstr").require()  # needs nothing optional
  for name in registry.EVALUATIONS:
    with open(os.path.join(REPO, "experiments", f"{name}.py"), encoding="utf-8") as f:
      assert f'cli.start(evaluation="{name}")' in f.read(), name


def test_empty_workdir_is_an_error_naming_the_layouts(tmp_path):
  """A workdir without runs (here with an empty tstr/ in it) is an error naming it and every
  evaluation's layout, and no report directory is left behind."""
  empty = tmp_path / "empty"
  os.makedirs(empty / "tstr")
  with pytest.raises(ConfigError, match="tstr/.../metrics.json") as e:
    report.make_report(str(empty))
  assert f"no runs in {empty}:" in str(e.value)
  for name in registry.EVALUATIONS:
    assert os.path.join(str(empty), name) in str(e.value)
  assert not os.path.exists(empty / "report")


def _write(root, evaluation, record, **keys):
  return registry.get(evaluation).run(root, **keys).write(record)


def _scored(macro, **extra):
  return {
    "macro_auroc": macro,
    "buckets": {"common": macro, "moderate": macro - 0.01, "rare": None},
    "n_evaluable": 3,
    **extra,
  }


def _fake_workdir(wd):
  """Two seeds of every registered evaluation, and a simulator root with a TSTR run."""
  for seed in (0, 1):
    d = 0.01 * seed
    for policy in ("real_subset", "real_matched", "qstrat_matched"):
      _write(wd, "tstr", _scored(0.80 + d), policy=policy, seed=seed)
    for f in (0.0, 0.5, 1.0):
      _write(
        wd, "blend", _scored(0.78 + f / 10 + d, policy=f"blend_{f:g}"), real_fraction=f, seed=seed
      )
    _write(
      wd, "trts", _scored(0.66 + d, trtr_macro_auroc=0.70, generator="latent_diffusion"), seed=seed
    )
    for regime, cap in (
      ("syn", None),
      ("real", "all"),
      ("syn_real", "all"),
      ("real", 5),
      ("syn_real", 5),
    ):
      _write(
        wd, "syn2real",
        {"n_train": 100, "n_train_pos": 5, "note": None,
         "test": {"f1": 0.4 + d + (regime == "syn_real") * 0.1, "auprc": 0.5, "n_pos": 3, "n": 40}},
        leads="II", **{"class": "AFIB"}, regime=regime, cap=cap, seed=seed,
      )  # fmt: skip
    for arm in ("baseline", "double", "synthetic"):
      _write(
        wd, "augment",
        {"codes": ["AFIB", "PVC"], "per_code_gmean": {"AFIB": 0.9 + d, "PVC": 0.8},
         "per_code_f1": {"AFIB": 0.6, "PVC": None}, "per_code_auroc": {"AFIB": 0.95, "PVC": 0.9},
         "train_positives": {"AFIB": 6, "PVC": 7}, "test_positives": {"AFIB": 1, "PVC": 1}},
        arm=arm, seed=seed,
      )  # fmt: skip
    for setting, n_real, n_syn in (
      ("synthetic", 0, 64),
      ("scratch_1", 276, 0),
      ("mix_1", 276, 276),
    ):
      _write(
        wd, "transfer", _scored(0.7 + d, n_real=n_real, n_synthetic=n_syn, init=None),
        setting=setting, seed=seed,
      )  # fmt: skip
    for step in (500, 1000):
      _write(
        wd,
        "convergence",
        _scored(0.6 + step / 1e4 + d, samples_seen=step * 64),
        step=step,
        seed=seed,
      )
  from ecgjax.eval import audit

  rows = {
    k: {
      "einthoven": {"median": 0.2},
      "avr": {"median": 0.1},
      "avl": {"median": 0.1},
      "avf": {"median": 0.1},
    }
    for k in (*audit.ROWS, audit.TARGET)
  }
  emb = {k: {"frechet": 1.0, "mmd2": 0.01, "mmd_bandwidth": 2.0, "precision": 0.7, "recall": 0.6,
             "density": 0.9, "coverage": 0.8, "detection_auroc": 0.7} for k in audit.ROWS}  # fmt: skip
  priv = {
    k: {
      s: {"memorised_fraction": 0.05, "distance_ratio": 1.0, "mia_auroc": 0.5}
      for s in ("embedding", "signal")
    }
    for k in audit.ROWS
  }
  amp = {k: {"std_ratio_mean": 0.8, "std_ratio_min": 0.7, "std_ratio_max": 0.9} for k in audit.ROWS}
  for name in ("real_matched_seed0", "qstrat_matched_seed0"):
    _write(
      wd, "audit",
      {"lead_residuals": rows, "embedding": emb, "privacy": priv, "amplitude": amp},
      name=name,
    )  # fmt: skip
  _write(os.path.join(wd, "simulator"), "tstr", _scored(0.63), policy="real_matched", seed=0)


def test_report_renders_every_registered_evaluation(tmp_path, capsys):
  wd = str(tmp_path / "wd")
  _fake_workdir(wd)
  written = report.make_report(wd)
  with open(written["index.md"], encoding="utf-8") as f:
    index = f.read()
  for evaluation in registry.EVALUATIONS.values():
    assert f"## {evaluation.title}\n" in index, evaluation.name
  assert "[generator: simulator]" in index
  # Each section's own files, and the audits linked where they are.
  for name in (
    "table1.md", "figure1.png", "figure2.png", "blend.csv", "trts.md", "syn2real.md",
    "gain_vs_positives.png", "augment.md", "augment.csv", "transfer.md", "transfer.csv",
    "convergence.md", "convergence.png", os.path.join("simulator", "table1.md"), "index.html",
  ):  # fmt: skip
    assert name in written and os.path.getsize(written[name]) > 0, name
  out = os.path.dirname(written["index.md"])
  for link in ("../audit/real_matched_seed0/audit.md", "../audit/qstrat_matched_seed0/audit.html"):
    assert f"({link})" in index
  assert "(simulator/figure1.png)" in index  # a sub-root's images, relinked
  with open(written["figure1.png"], "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  with open(written["index.html"], encoding="utf-8") as f:
    page = f.read()
  assert page.startswith("<!DOCTYPE html>") and "<table>" in page and 'src="figure1.png"' in page
  assert os.path.isfile(os.path.join(out, "..", "audit", "real_matched_seed0", "audit.json"))
  # Augmentation's table holds the per-code means over the two seeds.
  with open(written["augment.md"], encoding="utf-8") as f:
    assert "0.905 ± 0.007" in f.read()
  assert "Syn-to-Real" in capsys.readouterr().out
