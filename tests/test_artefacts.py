"""The tests' shared artefacts (conftest.py): each is built once for its recipe, whichever
worker asks first, and the others reuse it."""

import multiprocessing
import os

from conftest import (
  _generator_recipe,
  builds,
  cached_artefact,
  tiny_cfg,
  trained_recipe,
)

from ecgjax import fingerprints


def test_the_shared_artefacts_were_built_once(
  ptbxl, trained_dir, random_generator_dir, random_judge_dir
):
  """Whatever the number of xdist workers and the modules that use them: one build each of
  the trained tiny generator and judge, the random generator and the random judge."""
  assert builds("trained", trained_recipe(ptbxl)) == 1
  assert builds("random_generator", _generator_recipe(tiny_cfg(), ptbxl)) == 1
  assert builds("random_judge", fingerprints.describe(tiny_cfg().classifier)) == 1
  for d in (trained_dir, random_generator_dir, random_judge_dir):
    assert os.path.isdir(d) and not os.path.basename(d).startswith(".")
  assert os.path.isdir(os.path.join(trained_dir, "generator", "export"))
  assert os.path.isdir(os.path.join(trained_dir, "judge"))


def _slow_build(d):
  import time

  time.sleep(0.5)
  with open(os.path.join(d, "made_by"), "w") as f:
    f.write(str(os.getpid()))


def _ask(root, recipe, queue):
  queue.put(cached_artefact("toy", recipe, _slow_build, root=root))


def test_concurrent_requests_build_once_and_a_failed_build_leaves_nothing(tmp_path):
  root = str(tmp_path / "artefacts")
  ctx = multiprocessing.get_context("spawn")
  queue = ctx.Queue()
  procs = [ctx.Process(target=_ask, args=(root, {"n": 1}, queue)) for _ in range(3)]
  for p in procs:
    p.start()
  paths = {queue.get(timeout=120) for _ in procs}
  for p in procs:
    p.join(timeout=60)
  assert len(paths) == 1 and builds("toy", {"n": 1}, root=root) == 1
  (path,) = paths
  assert os.listdir(path) == ["made_by"]

  # Another recipe is another artefact; a build that fails leaves no directory behind.
  def fail(d):
    raise RuntimeError("broken recipe")

  try:
    cached_artefact("toy", {"n": 2}, fail, root=root)
  except RuntimeError:
    pass
  else:
    raise AssertionError("the failing build did not raise")
  assert builds("toy", {"n": 2}, root=root) == 0
  left = sorted(f for f in os.listdir(root) if not f.endswith(".lock"))
  assert left == sorted([os.path.basename(path), "builds.jsonl"])
