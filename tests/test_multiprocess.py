"""Real multi-process runs: the entry points under launch/multiprocess.sh (2 processes x 2 CPU
devices, cross-process gloo collectives) against one process with 4 devices; a process killed
mid-run; layouts that would diverge are refused."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import (
  TEST_XLA_FLAGS,
  TRAINED_DEVICES,
  as_flags,
  make_ptbxl_root,
  trained,
  trained_cfg,
  workdir_from,
)

from ecgjax import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch", "multiprocess.sh")

POLICY = "qfilter_matched"  # judge-driven: a generated pool of 2n, scored by the judge


def _env(tmp_path) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(
    XLA_FLAGS=TEST_XLA_FLAGS,  # compiled as this process compiles (the launcher adds devices)
    ECGJAX_CACHE_DIR=str(tmp_path / "cache"),
    ECGJAX_JAX_CACHE_DIR=os.environ.get("ECGJAX_TEST_JAX_CACHE", "/tmp/ecgjax-test-jax-cache"),
    JAX_PLATFORMS="cpu",
    PYTHON=sys.executable,
  )
  return env


def _run(cmd, env, timeout=900) -> subprocess.CompletedProcess:
  """Runs cmd in a session of its own, so that on a timeout every process it started goes."""
  proc = subprocess.Popen(
    cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    start_new_session=True,
  )  # fmt: skip
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    raise
  return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _launch(env, nproc, devices, *args, check=True, command=None) -> subprocess.CompletedProcess:
  """nproc processes x devices CPU devices through the launcher; nproc=None: one plain
  process (no coordinator) with `devices` devices. command: what each process runs
  (default: python -m args)."""
  cmd = command or [sys.executable, "-m", *args]
  if nproc is None:
    env = {**env, "XLA_FLAGS": f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}"}
  else:
    cmd = ["bash", LAUNCH, str(nproc), str(devices), "--", *cmd]
  proc = _run(cmd, env)
  if check:
    what = args[0] if args else cmd[-1]
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  return proc


def _metrics(workdir, policy=POLICY, seed=0) -> dict:
  return storage.read_json(os.path.join(workdir, "tstr", policy, f"seed_{seed}", "metrics.json"))


def _losses(workdir) -> list[tuple]:
  with storage.open(os.path.join(workdir, "generator", "metrics.jsonl")) as f:
    return [(r["stage"], r["step"], r["loss"]) for r in map(json.loads, f)]


def _as_hosts(tmp_path, *args) -> list[str]:
  """`python -m args` for each process of a launch, as on a host of its own: a data cache
  of its own ($ECGJAX_CACHE_DIR, where PTB-XL is decoded and a bucket's files mirrored);
  what the processes share is the gs:// workdir (and XLA's compilation cache)."""
  cache = shlex.quote(str(tmp_path / "cache_host"))
  command = shlex.join([sys.executable, "-m", *args])
  return ["bash", "-c", f"ECGJAX_CACHE_DIR={cache}$JAX_PROCESS_ID exec {command}"]


def _finished_steps(ckpt) -> list[int]:
  """The checkpoint steps orbax has finished: in a bucket, those with commit_success.txt
  (a step's prefix appears with its first object)."""
  if not storage.is_url(ckpt):
    return sorted(int(d) for d in storage.listdir(ckpt) if d.isdigit())
  return sorted(
    int(d) for d in storage.listdir(ckpt)
    if d.isdigit() and storage.isfile(f"{ckpt}/{d}/commit_success.txt")
  )  # fmt: skip


def _same_metrics(a: dict, b: dict, tol: float) -> None:
  for k in ("n_train", "generator_budget", "n_evaluable", "codes", "best_epoch", "policy"):
    assert a[k] == b[k], k
  for k in ("macro_auroc", "val_macro_auroc"):
    assert a[k] == pytest.approx(b[k], abs=tol), k
  for k, v in a["buckets"].items():
    assert (v is None and b["buckets"][k] is None) or v == pytest.approx(b["buckets"][k], abs=tol)


def _descendants(root: int) -> list[int]:
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
      except OSError:
        pass
  out, frontier = [], [root]
  while frontier:
    kids = [p for p, pp in parents.items() if pp in frontier]
    out += kids
    frontier = kids
  return out


def _job_processes(launcher: subprocess.Popen) -> dict[int, int]:
  """The pids of the launcher's python processes, by JAX_PROCESS_ID."""
  out = {}
  for pid in _descendants(launcher.pid):
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
      exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
      continue
    if b"JAX_PROCESS_ID" in env and exe.startswith("python"):
      out[int(env[b"JAX_PROCESS_ID"])] = pid
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def _kill_one_process_once(cmd, env, ckpt, log_path) -> str:
  """Runs cmd (a launcher command line), SIGKILLs process 1 once the classifier's checkpoint
  directory `ckpt` holds a step, waits for the launcher; returns its output."""
  with open(log_path, "w+") as log:
    launcher = subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
      deadline = time.monotonic() + 900
      while not _finished_steps(ckpt):
        assert launcher.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no classifier checkpoint after 15 minutes"
        time.sleep(0.02)
      children = _job_processes(launcher)
      assert sorted(children) == [0, 1], children
      os.kill(children[1], signal.SIGKILL)
      rc = launcher.wait(timeout=120)
    finally:
      if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGKILL)
    log.seek(0)
    output = log.read()
  assert rc != 0, output[-3000:]
  assert "process 1" in output and "stopping the others" in output
  assert not any(_alive(pid) for pid in children.values())
  return output


@pytest.mark.slow
def test_two_processes_match_one_process_and_a_killed_process_resumes(tmp_path, ptbxl, gcs):
  """tstr for a judge policy in an empty gs:// workdir (a bucket of the fake GCS server,
  conftest.gcs: two processes that share no directory, as two hosts of a slice, each with
  a data cache of its own), which under `mini` first trains the tiny
  generator (train_generator's path: VAE, U-Net, export, figures) and the judge
  (train_judge's path), under 2 processes x 2 devices, with one process SIGKILLed once the
  classifier has a checkpoint: the launcher stops the other and fails, and the same command
  resumes (the cohort and pool from their shards, the classifier from its orbax checkpoint
  and grain state) and ends with the metrics of an uninterrupted 2 x 2 run from the same
  generator, judge and cohort, to the last digit. That uninterrupted run, against the same
  on one process with 4 devices: the shared trained artefact (conftest.trained: the same
  config, the same pipeline_setup path on a 4-device mesh) and the TSTR harness on that
  mesh. The same losses, judge and metrics.

  Across layouts not bit for bit: the gradient all-reduce adds the devices' partial
  gradients in another order across processes (gloo) than within one, so from the third
  step on the losses differ in the sixth digit, and Adam, which divides by the gradient's
  magnitude, turns such differences on near-zero gradients into steps of up to the
  learning rate. The classifiers therefore train here at learning rate 1e-4
  (conftest.trained_cfg), where that stays below what the metrics resolve; data order,
  crops, dropout masks, BatchNorm statistics, the pool and the judge's selection are all
  compared as they are.
  """
  from ecgjax.data import pipeline
  from ecgjax.eval import judge as judge_lib
  from ecgjax.eval import tstr

  env = _env(tmp_path)
  cfg = trained_cfg()
  flags = as_flags(cfg)
  mesh = pipeline.make_mesh(TRAINED_DEVICES)
  va = np.flatnonzero(ptbxl.val_mask)
  run = lambda wd: ["experiments.tstr", f"--workdir={wd}", f"--policy={POLICY}", "--n=16", *flags]
  seed_dir = os.path.join("tstr", POLICY, "seed_0")

  # From an empty workdir under 2 x 2, killed once the classifier has a checkpoint.
  bucket = gcs("multiprocess") + f"/{tmp_path.name}"
  wd = f"{bucket}/2x2"
  ckpt = os.path.join(wd, seed_dir, "classifier")
  cmd = ["bash", LAUNCH, "2", "2", "--", *_as_hosts(tmp_path, *run(wd))]
  output = _kill_one_process_once(cmd, env, ckpt, tmp_path / "killed.log")
  assert "training the mini generator first" in output
  assert "training the mini judge first" in output
  assert storage.isfile(os.path.join(wd, "generator", "ecg_comparison.png"))
  assert not storage.exists(os.path.join(wd, seed_dir, "metrics.json"))
  steps = _finished_steps(ckpt)
  assert steps and steps[-1] < 3, steps  # killed before the last epoch
  # The uninterrupted run's workdir: the killed run's generator, judge and cohort (the
  # pool and the judge's selection; the classifier's checkpoints stay behind).
  import fsspec

  straight = f"{bucket}/straight"
  fs = fsspec.filesystem("gs")
  for part in ("generator", "judge", os.path.join(seed_dir, "cohort")):
    fs.copy(os.path.join(wd, part), os.path.join(straight, part), recursive=True)

  # Resumed by the same command.
  proc = _launch(env, 2, 2, command=_as_hosts(tmp_path, *run(wd)))
  assert "training the mini" not in proc.stdout  # the killed run's generator and judge
  resumed = _metrics(wd)

  # Uninterrupted under 2 x 2. Both processes printed the table; process 0 alone wrote files.
  proc = _launch(env, 2, 2, command=_as_hosts(tmp_path, *run(straight)))
  assert "training the mini" not in proc.stdout  # the copied generator and judge were used
  assert proc.stdout.count(f"{POLICY}           0     16") == 2
  for workdir in (wd, straight):
    assert not any("shared_check" in f for f in storage.listdir(workdir))
  assert not os.path.exists(os.path.join(REPO, "gs:"))  # no local directory named after a URL
  ma = _metrics(straight)
  _same_metrics(resumed, ma, tol=1e-6)
  assert resumed["per_code"].keys() == ma["per_code"].keys()
  for code, auc in ma["per_code"].items():
    got = resumed["per_code"][code]
    assert got == auc if auc is None else got == pytest.approx(auc, abs=1e-6), code

  # The 2 x 2 runs against one process with 4 devices. The shared artefact is asked for only
  # now (not as a fixture), so that the launches above need not wait for its build.
  ref = workdir_from(tmp_path / "1x4", trained(ptbxl))
  mb, skipped = tstr.Harness(cfg, mesh, ptbxl, ref, progress=False).run(POLICY, 0, n=16)
  assert not skipped
  results = {}
  for name, workdir, metrics in (("2x2", wd, ma), ("1x4", ref, mb)):
    judge, _ = judge_lib.load(workdir, cfg)
    results[name] = (_losses(workdir), metrics, judge.predict(np.asarray(ptbxl.signals[va]), mesh))
  (la, ma, pa), (lb, mb, pb) = results["2x2"], results["1x4"]
  assert [x[:2] for x in la] == [x[:2] for x in lb] and len(la) == 2 + 3
  np.testing.assert_allclose([x[2] for x in la], [x[2] for x in lb], rtol=1e-5)
  print("judge on fold 9: largest probability difference", np.abs(pa - pb).max())
  np.testing.assert_allclose(pa, pb, atol=1e-5)  # measured: 6e-7
  print("macro AUROC", ma["macro_auroc"], mb["macro_auroc"], "fold 9", ma["val_macro_auroc"],
        mb["val_macro_auroc"])  # fmt: skip
  _same_metrics(ma, mb, tol=1e-4)  # measured: equal to the last digit


@pytest.mark.slow
def test_generate_is_the_same_on_any_layout_and_diverging_layouts_are_refused(tmp_path, ptbxl):
  """experiments.generate (the simulator: no training) writes under 2 x 2 the shards that
  one process with 4 devices writes (here the same calls in this process, on a 4-device
  mesh); a workdir that is not shared, or data that differs between processes, is refused
  on every process with an error naming it."""
  from ecgjax import configs
  from ecgjax.data import pipeline
  from ecgjax.eval import cohorts as generate_main
  from ecgjax.generators import cohort

  env = _env(tmp_path)
  args = ["--config.generator.kind=simulator", "--n=40", "--shard_size=16"]
  out = str(tmp_path / "2x2" / "cohort")
  _launch(env, 2, 2, "experiments.generate", f"--workdir={tmp_path / '2x2'}", f"--out={out}", *args)
  assert os.path.isfile(os.path.join(out, "simulated_vs_real.png"))
  cfg = configs.get_config("mini")
  cfg.generator.kind = "simulator"
  ref = str(tmp_path / "1x4" / "cohort")
  mesh = pipeline.make_mesh(4)
  generate_main.make_cohort(cfg, mesh, ptbxl, str(tmp_path / "1x4"), 40, ref, 0, 16, progress=False)
  figure = generate_main.simulated_vs_real(cfg, mesh, ptbxl, os.path.join(ref, "sim.png"))
  assert os.path.isfile(figure)  # what experiments.generate draws next (test_generators.py)
  a, b = (cohort.read_cohort(c) for c in (out, ref))
  for k in cohort.FIELDS:
    np.testing.assert_array_equal(a[k], b[k])

  # The same path, different storage per process: simulated by a path naming the process.
  local = str(tmp_path / "local_$JAX_PROCESS_ID")
  cmd = ["bash", LAUNCH, "2", "1", "--", "bash", "-c",
         f"exec {sys.executable} -m experiments.generate --workdir={local} --out={local}/c "
         + " ".join(args)]  # fmt: skip
  proc = _run(cmd, env, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if "error: --workdir=" in line]
  assert len(errors) == 2 and all("process(es) 1 of 2 do not see" in e for e in errors), errors
  assert "shared filesystem" in errors[0] and str(tmp_path / "local_") in errors[0]

  # Host-local copies of the data are fine when they hold the same bytes; these differ by
  # one trailing newline, which changes no value but is not the same data.
  roots = [make_ptbxl_root(tmp_path / f"data_{i}") for i in (0, 1)]
  with open(os.path.join(roots[1], "ptbxl_database.csv"), "a") as f:
    f.write("\n")
  data = str(tmp_path / "data_$JAX_PROCESS_ID")
  cmd[-1] = (
    f"exec {sys.executable} -m experiments.generate --workdir={tmp_path / 'shared'} "
    f"--data_dir={data} --out={tmp_path / 'shared' / 'c'} " + " ".join(args)
  )
  proc = _run(cmd, env, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if "differs between processes" in line]
  assert len(errors) == 2, proc.stderr[-3000:]
  assert all(any(root in e for e in errors) for root in roots), errors


def test_launcher_sets_the_job_up_and_stops_it_when_one_process_fails(tmp_path):
  """Without JAX: the environment each copy gets, and the exit status when one fails."""
  assert subprocess.run(["bash", "-n", LAUNCH]).returncode == 0
  env = {**os.environ, "XLA_FLAGS": "--xla_cpu_foo --xla_force_host_platform_device_count=8"}
  show = (
    'echo "$JAX_PROCESS_ID/$JAX_NUM_PROCESSES $JAX_COORDINATOR_ADDRESS $XLA_FLAGS $JAX_PLATFORMS"'
  )
  proc = _run(["bash", LAUNCH, "3", "2", "--", "bash", "-c", show], env)
  assert proc.returncode == 0, proc.stderr
  lines = sorted(proc.stdout.splitlines())
  assert [line.split()[:2] for line in lines] == [[f"[p{i}]", f"{i}/3"] for i in range(3)]
  assert len({line.split()[2] for line in lines}) == 1  # one coordinator
  assert all(
    line.endswith("--xla_cpu_foo --xla_force_host_platform_device_count=2 cpu") for line in lines
  ), lines
  # Process 1 fails while process 0 would run for a minute: the launcher stops it.
  t0 = time.monotonic()
  fail = 'if [ "$JAX_PROCESS_ID" = 1 ]; then exit 3; fi; exec sleep 60'
  proc = _run(["bash", LAUNCH, "2", "1", "--", "bash", "-c", fail], env)
  assert proc.returncode == 3 and "process 1" in proc.stderr and time.monotonic() - t0 < 50
  killed = 'if [ "$JAX_PROCESS_ID" = 0 ]; then kill -9 $$; fi; exec sleep 60'
  assert _run(["bash", LAUNCH, "2", "1", "--", "bash", "-c", killed], env).returncode == 137
  for bad in (["0", "1", "--", "true"], ["2", "x", "--", "true"], ["2", "1", "--"]):
    assert _run(["bash", LAUNCH, *bad], env).returncode == 2
  assert _run(["bash", LAUNCH, "--help"], env).returncode == 0
