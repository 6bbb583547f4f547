"""Table 1 / Figures 1-2 from a hand-written workdir: numbers checked against numpy.

The std is the sample std (ddof=1) in both the code and these hand
computations, as the paper's ± is a spread over seeds.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ecgjax import storage
from ecgjax.eval import render, runs, table1, tstr

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# policy -> {seed: (macro, common, moderate, rare)}; None is a bucket without evaluable codes.
TSTR = {
  "prototype": {0: (0.79, 0.76, 0.82, 0.79), 1: (0.78, 0.75, 0.83, None)},
  "my_new_policy": {0: (0.85, 0.86, 0.84, 0.85)},  # not in Table 1: goes last, as "Other"
  "uniform_class": {
    0: (0.86, 0.877, 0.859, 0.855),
    2: (0.85, 0.876, 0.858, 0.856),
  },  # seed 1 missing
  "real_matched": {
    0: (0.8845, 0.88, 0.87, 0.89),
    1: (0.8967, 0.89, 0.88, 0.90),
    2: (0.872, 0.877, 0.875, 0.88),
  },
  "real_subset": {0: (0.907, 0.9345, 0.923, 0.8978)},
  "rare_boost": {0: (0.8816, 0.8882, 0.8748, 0.8815)},  # seeds 1, 2: corrupt and partial files
}
BLEND = {0.0: {0: 0.88, 1: 0.89}, 0.5: {0: 0.90, 1: 0.91, 2: 0.915}, 1.0: {0: 0.907}}
ORDER = ["real_subset", "real_matched", "uniform_class", "rare_boost", "prototype", "my_new_policy"]


def _metrics(policy, seed, macro, buckets, **extra):
  return {
    "policy": policy,
    "seed": seed,
    "n_train": 64,
    "macro_auroc": macro,
    "buckets": dict(zip(table1.BUCKETS, buckets)),
    "per_code": {"NORM": macro},
    "n_evaluable": 3,
    "config": {"preset": "mini"},
    "timings": {"total_s": 1.0},
    **extra,
  }


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  return str(path)


@pytest.fixture
def workdir(tmp_path):
  wd = tmp_path / "wd"
  for policy, seeds in TSTR.items():
    for seed, (macro, *buckets) in seeds.items():
      _write(
        wd / "tstr" / policy / f"seed_{seed}" / "metrics.json",
        json.dumps(_metrics(policy, seed, macro, buckets)),
      )
  bad = {
    "corrupt": _write(
      wd / "tstr" / "rare_boost" / "seed_1" / "metrics.json", '{"policy": "rare_boost", "se'
    ),  # truncated mid-write
    "partial": _write(
      wd / "tstr" / "rare_boost" / "seed_2" / "metrics.json",
      json.dumps({"policy": "rare_boost", "seed": 2, "buckets": {}}),
    ),
  }
  os.makedirs(
    wd / "tstr" / "rare_boost" / "seed_3"
  )  # a run still going: no file yet, nothing to say
  for frac, seeds in BLEND.items():
    for seed, macro in seeds.items():
      _write(
        wd / "blend" / f"frac_{frac:g}" / f"seed_{seed}" / "metrics.json",
        json.dumps(_metrics("blend", seed, macro, (macro, macro, macro), real_fraction=frac)),
      )
  return str(wd), bad


def test_collect_skips_bad_files_with_a_warning_naming_them(workdir):
  wd, bad = workdir
  with pytest.warns(runs.SkippedRunWarning) as record:
    found = runs.collect(wd, tstr.TSTR)
  messages = [str(w.message) for w in record]
  assert len(messages) == 2
  assert any(bad["corrupt"] in m for m in messages)
  assert any(bad["partial"] in m and "macro_auroc" in m for m in messages)
  assert len(found) == sum(len(s) for s in TSTR.values())
  assert {r["seed"] for r in found if r["policy"] == "rare_boost"} == {0}
  blend = runs.collect(wd, tstr.BLEND)
  assert sorted({r["real_fraction"] for r in blend}) == [0.0, 0.5, 1.0] and len(blend) == 6


def test_table1_means_std_and_seed_counts_match_numpy(workdir):
  with pytest.warns(runs.SkippedRunWarning):
    df = table1.table1(runs.collect(workdir[0], tstr.TSTR))
  assert list(df.columns) == [
    "group",
    "policy",
    "macro",
    "macro_std",
    "common",
    "moderate",
    "rare",
    "seeds",
  ]
  assert list(df["policy"]) == ORDER
  assert list(df["group"]) == ["Reference", "Reference", "Class", "Class", "Diversity", "Other"]
  for _, row in df.iterrows():
    seeds = TSTR[row["policy"]]
    values = np.array(
      [[np.nan if v is None else v for v in s] for s in seeds.values()], dtype=float
    )
    assert row["seeds"] == len(seeds)
    np.testing.assert_allclose(row["macro"], values[:, 0].mean(), rtol=0, atol=1e-12)
    if len(seeds) > 1:
      np.testing.assert_allclose(row["macro_std"], values[:, 0].std(ddof=1), rtol=0, atol=1e-12)
    else:
      assert np.isnan(row["macro_std"])
    for j, b in enumerate(table1.BUCKETS, start=1):
      np.testing.assert_allclose(row[b], np.nanmean(values[:, j]), rtol=0, atol=1e-12)
  rm = df.set_index("policy").loc["real_matched"]
  assert rm["macro_std"] == pytest.approx(np.std([0.8845, 0.8967, 0.872], ddof=1))
  assert df.set_index("policy").loc["prototype", "rare"] == pytest.approx(
    0.79
  )  # the null bucket is left out
  assert df.set_index("policy").loc["uniform_class", "seeds"] == 2  # seeds 0 and 2 only


def test_table1_all_null_bucket_is_nan():
  runs = [
    {
      "policy": "real_matched",
      "seed": s,
      "macro_auroc": 0.8,
      "buckets": {"common": 0.8, "moderate": None},
    }
    for s in (0, 1)
  ]
  row = table1.table1(runs).iloc[0]
  assert np.isnan(row["moderate"]) and np.isnan(row["rare"]) and row["macro_std"] == 0.0


def test_markdown_format_order_and_bold(workdir):
  with pytest.warns(runs.SkippedRunWarning):
    df = table1.table1(runs.collect(workdir[0], tstr.TSTR))
  md = table1.to_markdown(df)
  lines = md.strip().splitlines()
  body = {line.split("|")[2].strip().split()[0].strip("`"): line for line in lines[2:]}
  assert list(body) == ORDER
  for policy, seeds in TSTR.items():
    macro_cell = body[policy].split("|")[3]
    assert ("±" in macro_cell) == (len(seeds) > 1), body[policy]
  assert "| 0.9070 |" in body["real_subset"] and "(ceiling)" in body["real_subset"]
  mean, std = np.mean([0.8845, 0.8967, 0.872]), np.std([0.8845, 0.8967, 0.872], ddof=1)
  assert f"{mean:.4f}±{std:.3f}" in body["real_matched"]
  # Best synthetic-only macro is rare_boost (0.8816); the reference rows are never bold.
  assert "**0.8816**" in body["rare_boost"]
  assert "**" not in body["real_subset"] + body["real_matched"]
  assert body["real_matched"].rstrip().endswith("| 3 |")
  assert "**" not in table1.to_markdown(df, bold_best=False)


def test_format_macro():
  assert table1.format_macro(0.8845, 0.0123, 5) == "0.8845±0.012"
  assert table1.format_macro(0.907, float("nan"), 1) == "0.9070"
  assert table1.format_macro(float("nan"), float("nan"), 0) == "n/a"


def _assert_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_figures_and_csv(workdir, tmp_path):
  wd, _ = workdir
  with pytest.warns(runs.SkippedRunWarning):
    df = table1.table1(runs.collect(wd, tstr.TSTR))
  _assert_png(table1.figure1(df, str(tmp_path / "out" / "figure1.png")))
  _assert_png(table1.figure2(runs.collect(wd, tstr.BLEND), str(tmp_path / "out" / "figure2.png")))
  # No reference rows at all still draws (no baseline or ceiling line to place).
  _assert_png(
    table1.figure1(df[df["group"] != "Reference"].reset_index(drop=True), str(tmp_path / "f1b.png"))
  )
  back = pd.read_csv(render.to_csv(df, str(tmp_path / "out" / "table1.csv")))
  pd.testing.assert_frame_equal(back, df, check_dtype=False)
  assert sorted(os.listdir(tmp_path / "out")) == [
    "figure1.png",
    "figure2.png",
    "table1.csv",
  ]  # no temp files


def test_blend_table(workdir):
  bt = table1.blend_table(runs.collect(workdir[0], tstr.BLEND))
  assert list(bt["real_fraction"]) == [0.0, 0.5, 1.0] and list(bt["seeds"]) == [2, 3, 1]
  assert bt["macro"][1] == pytest.approx(np.mean([0.90, 0.91, 0.915]))
  assert bt["macro_std"][1] == pytest.approx(np.std([0.90, 0.91, 0.915], ddof=1))
  assert np.isnan(bt["macro_std"][2])


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  def fail(f):
    f.write("half")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    storage.atomic_write(str(tmp_path / "table1.md"), fail)
  assert os.listdir(tmp_path) == []


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "experiments.report", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_cli_writes_report_and_prints_table(workdir):
  wd, bad = workdir
  proc = _cli(f"--workdir={wd}")
  assert proc.returncode == 0, proc.stderr
  assert "| Reference | `real_subset` (ceiling) | 0.9070 |" in proc.stdout
  assert bad["corrupt"] in proc.stderr and bad["partial"] in proc.stderr
  out = os.path.join(wd, "report")
  assert sorted(os.listdir(out)) == [
    "blend.csv",
    "figure1.png",
    "figure2.png",
    "index.html",
    "index.md",
    "table1.csv",
    "table1.md",
  ]
  with open(os.path.join(out, "table1.md")) as f:
    assert f.read() in proc.stdout
  _assert_png(os.path.join(out, "figure1.png"))


def test_cli_empty_workdir_exits_1_with_one_line(tmp_path):
  empty = str(tmp_path / "nothing_here")
  os.makedirs(empty)
  proc = _cli(f"--workdir={empty}")
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and empty in lines[0], proc.stderr
  assert not os.path.exists(os.path.join(empty, "report"))


def _bash(*args, env=None):
  return subprocess.run(
    ["bash", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
    env={**os.environ, **(env or {})},
  )


@pytest.mark.parametrize("script", ["launch/sweep.sh", "launch/tpu_vm.sh", "launch/bench_gpu.sh"])
def test_launch_scripts_parse(script):
  assert _bash("-n", script).returncode == 0
  assert _bash(script, "--help").returncode == 0
  if shutil.which("shellcheck"):
    proc = subprocess.run(["shellcheck", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_gpu_bench_installs_carried_wheels_and_fits_in_eight_minutes(tmp_path):
  """launch/bench_gpu.sh in dry mode: the carried wheels go in without dependencies or an
  index, then the three benchmarks at the paper's sizes, their limits adding up to 8 min."""
  wheels = tmp_path / "wheels"
  wheels.mkdir()
  for name in ("wfdb-4.3.1-py3-none-any.whl", "grain-0.2.18-cp312-cp312-any.whl"):
    (wheels / name).touch()
  proc = _bash(
    "launch/bench_gpu.sh", str(tmp_path / "out"), env={"DRY_RUN": "1", "WHEELS": str(wheels)}
  )
  assert proc.returncode == 0, proc.stderr
  cmds = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
  install = cmds[0]
  assert install[1:4] == ["-m", "pip", "install"] and {"--no-deps", "--no-index"} <= set(install)
  assert sorted(os.path.basename(w) for w in install if w.endswith(".whl")) == sorted(
    os.listdir(wheels)
  )
  benches = [c for c in cmds if c[0] == "timeout"]
  assert [c[4] for c in benches] == [
    "experiments.bench_sampler", "experiments.bench_generator_train", "experiments.bench_xresnet"
  ]  # fmt: skip
  assert all("--preset=paper" in c for c in benches[:2])
  assert sum(int(c[1]) for c in benches) <= 8 * 60


def test_sweep_runs_every_policy_in_table1_order_then_the_report():
  proc = _bash("launch/sweep.sh", "--dry_run", "--workdir=w d", "--", "--config.x=1")
  assert proc.returncode == 0, proc.stderr
  cmds = [shlex.split(line) for line in proc.stdout.strip().splitlines()]
  assert [c[3] for c in cmds[:-1]] == [f"--policy={p}" for p in table1.POLICY_ORDER]
  assert cmds[0] == [
    "python",
    "-m",
    "experiments.tstr",
    "--policy=real_subset",
    "--seeds=0,1,2",
    "--preset=mini",
    "--workdir=w d",
    "--config.x=1",
  ]
  assert cmds[-1] == ["python", "-m", "experiments.report", "--workdir=w d"]
  assert _bash("launch/sweep.sh", "--seeds=zero").returncode == 1


def test_tpu_vm_on_a_v5e_16_slice_keeps_its_workdir_and_data_in_a_bucket(tmp_path):
  """A v5e-16 slice (4 hosts, no shared filesystem): refused without a bucket before any
  command; with BUCKET the workdir is gs://<bucket>/ecgjax/<TPU_NAME> on every worker, the
  data are read from their bucket (no copy step), the sweep runs on every worker and the
  report on worker 0, and fetch copies the results from the bucket (no ssh). A single host
  keeps its local default."""
  base = {"DRY_RUN": "1", "TPU_NAME": "t", "ACCELERATOR_TYPE": "v5litepod-16",
          "LOCAL_OUT": str(tmp_path / "out")}  # fmt: skip
  for sub in ("create", "install", "train", "sweep", "fetch"):
    proc = _bash("launch/tpu_vm.sh", sub, env=base)
    assert proc.returncode == 1 and proc.stdout == "", (sub, proc.stdout)
    assert proc.stderr.strip() == (
      "error: ACCELERATOR_TYPE=v5litepod-16 is a slice of 4 hosts, which share no filesystem: "
      "set BUCKET=gs://your-bucket (or WORKDIR=gs://...) for the workdir (launch/README.md)"
    )
  assert _bash("launch/tpu_vm.sh", "delete", env=base).returncode == 0

  env = {**base, "BUCKET": "gs://b", "DATA_GCS": "gs://d/ptb-xl/1.0.3/"}
  run = lambda *args, **more: [
    shlex.split(line)
    for line in _bash("launch/tpu_vm.sh", *args, env={**env, **more}).stdout.strip().splitlines()
  ]
  (create,) = run("create")
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "t"]
  assert "--accelerator-type=v5litepod-16" in create
  assert not any("ptb-xl" in " ".join(c) for c in run("install"))  # no copy step
  (train,) = run("train")
  remote = shlex.split(train[-1].removeprefix("--command="))
  assert "--worker=all" in train and "experiments.train_generator" in remote
  assert "--workdir=gs://b/ecgjax/t" in remote and "--data_dir=gs://d/ptb-xl/1.0.3" in remote
  sweep, rep = run("sweep", "--seeds=0")
  assert sweep[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in sweep
  remote = shlex.split(sweep[-1].removeprefix("--command="))
  assert "launch/sweep.sh" in remote and "--no_report" in remote and "--distributed=on" in remote
  assert "--workdir=gs://b/ecgjax/t" in remote
  assert "--worker=0" in rep and "experiments.report" in rep[-1]
  assert "--workdir=gs://b/ecgjax/t" in rep[-1]
  out = str(tmp_path / "out")
  assert run("fetch") == [
    ["gcloud", "storage", "rsync", "-r", f"gs://b/ecgjax/t/{part}", f"{out}/{part}"]
    for part in ("tstr", "blend", "report")
  ]
  # The copy step on request; a single host without a bucket: the local default.
  (copy,) = [c for c in run("install", COPY_DATA="1") if "ptb-xl" in c[-1]]
  assert "gcloud storage cp -r gs://d/ptb-xl/1.0.3/'*' ~/ptb-xl/" in copy[-1]
  (train,) = run("train", ACCELERATOR_TYPE="v5litepod-8", BUCKET="", DATA_GCS="")
  assert "--workdir=workdir" in shlex.split(train[-1].removeprefix("--command="))
  assert "--worker=0" in run("fetch", ACCELERATOR_TYPE="v5litepod-8", BUCKET="")[0]
