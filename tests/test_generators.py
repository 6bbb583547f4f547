"""The generator interface end to end: every generated policy with either generator kind,
the simulator through TSTR, and paper 002's Syn-to-Real protocol at a tiny size."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny_cfg, workdir_from
from sklearn.metrics import average_precision_score, f1_score

from ecgjax import generators, policies
from ecgjax.data import pipeline
from ecgjax.errors import ConfigError
from ecgjax.eval import cohorts as generate_main
from ecgjax.eval import syn2real, tstr
from ecgjax.generators import cohort, simulator

N = 8
GENERATED = [p for p in policies.names() if policies.get(p).source != policies.REAL]


# Each generated policy's draw with one generator kind, the kinds alternating down the
# registry's order, so that each kind makes cohorts of every policy source (tuples and judge
# pools): the draw is the policy's, the rendering the generator's, and neither depends on
# the other (one cohort per policy instead of one per policy and kind).
KINDS = generators.names()
CASES = [(p, KINDS[i % len(KINDS)]) for i, p in enumerate(GENERATED)]


def test_the_cases_cover_every_kind_and_policy_source():
  for kind in KINDS:
    sources = {policies.get(p).source for p, k in CASES if k == kind}
    assert sources == {policies.get(p).source for p in GENERATED}, kind
  assert sorted(p for p, _ in CASES) == sorted(GENERATED)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, random_generator_dir, random_judge_dir):
  return workdir_from(tmp_path_factory.mktemp("gens"), random_generator_dir, random_judge_dir)


@pytest.mark.parametrize(("policy", "kind"), CASES)
def test_generate_every_generated_policy_with_either_kind(workdir, ptbxl, tmp_path, kind, policy):
  cfg = tiny_cfg()
  cfg.generator.kind = kind
  out = str(tmp_path / "cohort")
  manifest = generate_main.make_cohort(
    cfg, pipeline.make_mesh(1), ptbxl, workdir, N, out, 0, 4, progress=False, policy=policy
  )
  assert manifest["complete"] and manifest["n"] == N
  made = cohort.read_cohort(out)
  assert made["signals"].shape == (N, 12, 1000) and np.isfinite(made["signals"]).all()
  assert made["labels"].shape == (N, 71) and made["cond"].shape == (N, 76)
  # The cohort's conditioning is the real train records' (dataset rows).
  assert ptbxl.train_mask[made["rows"]].all()
  assert manifest["notes"]["kind"] == kind
  if kind == "simulator":
    rendered = set(manifest["notes"]["rendered_with_the_normal_rule"])
    drawn = {c for c, k in zip(ptbxl.codes, made["cond"][:, :71].sum(0)) if k}
    assert rendered == drawn - set(simulator.COVERED_CODES)
  if policies.get(policy).source == policies.JUDGE_POOL:
    pool = cohort.read_cohort(os.path.join(out, "pool"))
    assert len(pool["signals"]) == policies.POOL_FACTOR[policy] * N
    # The selection is made of pool signals.
    assert all(any(np.array_equal(s, p) for p in pool["signals"]) for s in made["signals"])
  # A rerun finds the cohort complete and generates nothing.
  again = generate_main.make_cohort(
    cfg, pipeline.make_mesh(1), ptbxl, workdir, N, out, 0, 4, progress=False, policy=policy
  )
  assert again["last_run"]["generated"] == 0


def test_generate_refuses_real_subset_in_one_line(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "experiments.generate", "--policy=real_subset", "--n=4",
     f"--workdir={tmp_path}", "--config.generator.kind=simulator"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "real_subset" in lines[0] and "real records" in lines[0]


def test_simulator_tstr_trains_and_scores_on_its_codes(ptbxl, tmp_path):
  cfg = tiny_cfg()
  cfg.generator.kind = "simulator"
  cfg.classifier.update(epochs=1, batch_size=16)
  cfg.tstr.update(n=16, n_boot=10)
  harness = tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  record, skipped = harness.run("real_matched", 0)
  path = tmp_path / "simulator" / "tstr" / "real_matched" / "seed_0" / "metrics.json"
  stored = json.loads(path.read_text())
  assert not skipped and stored["generator"] == "simulator"
  assert stored["codes"] == list(simulator.COVERED_CODES)
  assert set(stored["per_code"]) <= set(simulator.COVERED_CODES)
  assert not (tmp_path / "tstr").exists()  # the default generator's root is untouched


def test_simulated_vs_real_figure(ptbxl, tmp_path, monkeypatch):
  """The figure shows, per class the simulator renders (and NORM), the first real record
  with that class and none of the others beside the simulator's ECG for its conditioning:
  checked on the plotted arrays themselves."""
  import matplotlib.figure

  figures, savefig = [], matplotlib.figure.Figure.savefig
  monkeypatch.setattr(
    matplotlib.figure.Figure,
    "savefig",
    lambda fig, *a, **k: figures.append(fig) or savefig(fig, *a, **k),
  )
  cfg = tiny_cfg()
  path = generate_main.simulated_vs_real(
    cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path / "sim.png")
  )
  assert os.path.getsize(path) > 10_000 and len(figures) == 1
  names = ("NORM",) + simulator.CLASSES
  codes = list(ptbxl.codes)
  others = lambda name: [codes.index(c) for c in simulator.CLASSES if c != name]
  rows = {
    name: np.flatnonzero(ptbxl.labels[:, codes.index(name)] & ~ptbxl.labels[:, others(name)].any(1))
    for name in names
  }
  # A class with no such record (WPW in the embedded slice) gets an empty real panel and
  # a simulated ECG of its label alone with the first train record's demographics.
  first_train = np.flatnonzero(ptbxl.train_mask)[0]
  real, cond, missing = [], [], 0
  for name in names:
    if len(rows[name]):
      real.append(np.asarray(ptbxl.signals[rows[name][0]]))
      cond.append(ptbxl.cond[rows[name][0]])
    else:
      missing += 1
      real.append(np.full((12, 1000), np.nan))
      c = np.array(ptbxl.cond[first_train], np.float32)
      c[: len(codes)] = 0
      c[codes.index(name)] = 1
      cond.append(c)
  assert 0 < missing < len(names)  # both kinds of panel are checked
  sim = simulator.load(cfg, ptbxl).generate(
    np.stack(cond), jax.random.PRNGKey(0), mesh=pipeline.make_mesh(1)
  )
  axes = np.asarray(figures[0].axes).reshape(12, 2 * len(names))  # leads x (real | simulated)
  for j, name in enumerate(names):
    about = f"ecg_id {ptbxl.ecg_id[rows[name][0]]}" if len(rows[name]) else "no real record"
    assert axes[0, 2 * j].get_title().startswith(f"real: {name} ({about}")
    assert axes[0, 2 * j + 1].get_title().startswith(f"simulated: {name}")
    for lead in range(12):
      (r,), (f,) = axes[lead, 2 * j].lines, axes[lead, 2 * j + 1].lines
      np.testing.assert_allclose(r.get_ydata(), real[j][lead], atol=1e-6)
      np.testing.assert_allclose(f.get_ydata(), sim[j, lead], atol=1e-5)


def test_syn2real_scores_match_sklearn():
  y = np.array([0, 1, 1, 0, 1, 0, 0])
  p = np.array([0.1, 0.8, 0.4, 0.6, 0.9, 0.2, 0.3])
  s = syn2real.scores(y, p)
  assert s["f1"] == pytest.approx(f1_score(y, p >= 0.5))
  assert s["auprc"] == pytest.approx(average_precision_score(y, p))
  # By hand: predictions 1,0,1,1 at 0.5 -> TP 2, FP 1, FN 1 -> F1 2/3.
  assert s["f1"] == pytest.approx(2 / 3)
  assert syn2real.scores(np.zeros(4), np.ones(4))["f1"] is None


def test_cap_positives_and_caps():
  rows, y = np.arange(10), np.array([1, 0, 1, 0, 1, 0, 1, 0, 0, 0], np.float32)
  r, yy = syn2real.cap_positives(rows, y, 2, seed=0)
  assert yy.sum() == 2 and (yy == 0).sum() == 6 and set(r) >= {1, 3, 5, 7, 8, 9}
  assert np.array_equal(syn2real.cap_positives(rows, y, 2, seed=0)[0], r)
  assert syn2real.cap_positives(rows, y, "all", 0)[0] is rows
  assert syn2real.parse_caps("5, 10,all") == [5, 10, "all"]
  with pytest.raises(ConfigError, match="caps"):
    syn2real.parse_caps("5,-1")


@pytest.mark.slow
def test_syn2real_protocol_at_a_tiny_size(ptbxl, tmp_path):
  cfg = tiny_cfg()
  cfg.classifier.update(epochs=1, batch_size=16)
  cfg.syn2real.update(n_syn=16, epochs=0)  # epochs 0: the classifier section's (1)
  exp = syn2real.Syn2Real(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  counts = exp.counts().set_index("class")
  records = [
    exp.run("II", "AFIB", r, 0, c) for r, c in (("syn", None), ("real", 2), ("syn_real", 2))
  ]
  assert [skipped for _, skipped in records] == [False, False, False]
  syn, real, synreal = (r for r, _ in records)
  assert syn["n_train"] == 16 and real["n_train_pos"] == synreal["n_train_pos"] == 2
  assert real["n_train"] == counts.loc["AFIB", "train_neg"] + 2
  assert real["test"]["n_pos"] == counts.loc["AFIB", "test_pos"]
  # A rerun skips finished runs; one with another classifier setting is refused.
  assert exp.run("II", "AFIB", "real", 0, 2)[1]
  other = cfg.copy_and_resolve_references()
  other.classifier.epochs = 2
  redo = syn2real.Syn2Real(other, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  with pytest.raises(
    ConfigError, match=r"was made with other settings: classifier.epochs \(1 on disk, 2 asked\)"
  ):
    redo.run("II", "AFIB", "real", 0, 2)
  # A class without train positives is recorded, not faked: the case built by removing
  # WPW from every train record of a copy of the data.
  wpw = list(ptbxl.codes).index("WPW")
  labels = ptbxl.labels.copy()
  labels[ptbxl.train_mask, wpw] = False
  no_wpw = syn2real.Syn2Real(
    cfg, pipeline.make_mesh(1), dataclasses.replace(ptbxl, labels=labels), str(tmp_path / "nw"),
    progress=False,
  )  # fmt: skip
  assert no_wpw.counts().set_index("class").loc["WPW", "train_pos"] == 0
  record, skipped = no_wpw.run("II", "WPW", "real", 0, "all")
  assert not skipped and record["test"]["f1"] is None and "no real positive" in record["note"]
  written = syn2real.write_report(
    syn2real.collect(exp.root), exp.counts(), [2, "all"], str(tmp_path / "r")
  )
  assert all(os.path.getsize(p) > 0 for p in written.values())
  assert "AFIB" in pathlib.Path(written["syn2real.md"]).read_text()


def test_a_third_generator_is_one_module_and_one_registry_entry(ptbxl, tmp_path, monkeypatch):
  """A toy kind (what a new module would define) plus one entry in registry.KINDS: the cohort
  writer, the TSTR harness and its results root take it with no other change."""
  from ecgjax.generators import base
  from ecgjax.generators import registry as gen_registry

  class Sines:
    kind, sampling_rate, codes = "sines", 100, ("NORM",)
    identity = {"generator": "sines-v1"}

    def generate(self, cond, key, *, mesh, start=0):
      i = np.arange(start, start + len(cond))[:, None, None]
      t = np.arange(1000)[None, None, :] / 100.0
      return np.broadcast_to(np.sin(2 * np.pi * (1 + 0.01 * i) * t), (len(cond), 12, 1000))

    def cohort_notes(self, cond):
      return {"renders": "a sine per sample"}

  kind = base.GeneratorKind(
    name="sines", summary="test", ensure=lambda *a, **k: False, load=lambda *a, **k: Sines(),
    needs_training=False, codes=("NORM",),
  )  # fmt: skip
  monkeypatch.setitem(gen_registry.KINDS, "sines", kind)
  cfg = tiny_cfg()
  cfg.generator.kind = "sines"
  out = str(tmp_path / "cohort")
  manifest = generate_main.make_cohort(
    cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), 6, out, 0, 4, progress=False
  )
  assert manifest["complete"] and manifest["generator"] == "sines-v1"
  made = cohort.read_cohort(out)
  assert made["signals"].shape == (6, 12, 1000) and np.allclose(made["signals"][0, 0, 25], 1.0)
  harness = tstr.Harness(cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), progress=False)
  assert harness.root == str(tmp_path / "sines") and harness.codes == ["NORM"]


def test_a_cohort_on_disk_is_reused_only_when_it_is_the_one_asked_for(ptbxl, tmp_path):
  """Another seed, n or generator setting is refused with one line naming the cohort and
  the fields, and the shards and manifest stay byte for byte; the same request is reused;
  a manifest without the identity fields (an older ecgjax) is refused, not trusted."""
  cfg = tiny_cfg()
  cfg.generator.kind = "simulator"
  noisy = tiny_cfg()
  noisy.generator.kind = "simulator"
  noisy.generator.simulator.noise = 0.5
  out = str(tmp_path / "cohort")
  mesh = pipeline.make_mesh(1)

  def make(cfg=cfg, n=8, seed=0):
    return generate_main.make_cohort(
      cfg, mesh, ptbxl, str(tmp_path), n, out, seed, 4, progress=False
    )

  def files():
    return {f: pathlib.Path(out, f).read_bytes() for f in sorted(os.listdir(out))}

  make()
  before = files()
  for kwargs, field in ((dict(seed=1), "seed (0 on disk, 1 asked)"), (dict(n=12), "n (8 on disk, 12 asked)"), (dict(cfg=noisy), "noise (1.0 on disk, 0.5 asked)")):  # fmt: skip
    with pytest.raises(ConfigError) as e:
      make(**kwargs)
    message = str(e.value)
    assert message.startswith(f"{out} holds a different cohort: differs in ") and field in message
    assert "\n" not in message
    assert files() == before
  assert make()["last_run"]["generated"] == 0 and files() == before
  manifest = json.loads(before[cohort.MANIFEST])
  del manifest["seed"], manifest["noise"]
  pathlib.Path(out, cohort.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(ConfigError, match="its manifest lacks noise, seed .written by an older"):
    make()


def test_generate_refuses_another_seed_in_one_line(ptbxl, tmp_path):
  """The command of a user asking for a second cohort in the same --out; the first
  cohort is the one `experiments.generate --config.generator.kind=simulator --n=8
  --seed=0` writes (the same call, made here)."""
  from ecgjax import configs

  cfg = configs.get_config("mini")
  cfg.generator.kind = "simulator"
  out = str(tmp_path / "c")
  generate_main.make_cohort(
    cfg, pipeline.make_mesh(1), ptbxl, str(tmp_path), 8, out, 0, cohort.DEFAULT_SHARD_SIZE,
    progress=False,
  )  # fmt: skip
  manifest = (tmp_path / "c" / cohort.MANIFEST).read_bytes()
  args = [sys.executable, "-m", "experiments.generate", "--config.generator.kind=simulator",
          f"--workdir={tmp_path}", "--n=8", f"--out={out}"]  # fmt: skip
  again = subprocess.run([*args, "--seed=1"], capture_output=True, text=True, timeout=300)
  errors = [line for line in again.stderr.splitlines() if "holds a different cohort" in line]
  assert again.returncode == 1 and len(errors) == 1, again.stderr[-2000:]
  assert "seed (0 on disk, 1 asked)" in errors[0] and "Traceback" not in again.stderr
  assert (tmp_path / "c" / cohort.MANIFEST).read_bytes() == manifest
