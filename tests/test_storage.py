"""ecgjax.storage against a real Cloud Storage server (fake-gcs-server, conftest.gcs), in
memory:// and on local disk: one set of calls, the same answers; bad URLs refused."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from ecgjax import storage
from ecgjax.errors import StorageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def roots(gcs, tmp_path):
  return {
    "local": str(tmp_path / "local"),
    "gs": gcs("storage-test") + f"/{tmp_path.name}",
    "memory": f"memory://storage-test/{tmp_path.name}",
  }


def test_one_layer_for_local_paths_buckets_and_memory(roots, tmp_path):
  """Writes, reads, lists, appends, copies and removes through ecgjax.storage give the same
  answers on every kind of path; a failed atomic write leaves nothing behind; a remote
  file's local copy is fetched again once the object changes."""
  seen = {}
  for kind, root in roots.items():
    join = lambda *p, root=root: "/".join([root, *p])
    assert not storage.isdir(root) and storage.listdir(root) == []
    storage.write_json(join("a", "metrics.json"), {"auroc": 0.75})
    storage.atomic_write(join("a", "b", "x.npz"), lambda f: np.savez(f, x=np.arange(3)), "wb")
    storage.append_text(join("log.jsonl"), "1\n")
    storage.append_text(join("log.jsonl"), "2\n")
    with pytest.raises(RuntimeError):  # a writer that fails half-way writes nothing
      storage.atomic_write(join("a", "half.txt"), lambda f: (f.write("x"), _boom()))
    assert not storage.exists(join("a", "half.txt"))
    storage.copy(join("a", "metrics.json"), join("c", "copy.json"))
    with np.load(storage.local_copy(join("a", "b", "x.npz"))) as z:
      np.testing.assert_array_equal(z["x"], np.arange(3))
    walked = sorted(
      (d[len(root) :], sorted(dirs), sorted(files)) for d, dirs, files in storage.walk(root)
    )
    seen[kind] = {
      "json": storage.read_json(join("c", "copy.json")),
      "log": _read(join("log.jsonl")),
      "listdir": storage.listdir(root),
      "isdir": (storage.isdir(join("a")), storage.isfile(join("a")), storage.isdir(join("z"))),
      "walk": walked,
    }
    storage.remove(join("log.jsonl"))
    storage.remove(join("log.jsonl"))  # a missing file is no error
    storage.rmtree(join("a"))
    assert storage.listdir(root) == ["c"]
    storage.rmtree(root)
    assert not storage.exists(join("c", "copy.json"))
  assert seen["gs"] == seen["local"] == seen["memory"], seen
  assert seen["gs"]["listdir"] == ["a", "c", "log.jsonl"] and seen["gs"]["log"] == "1\n2\n"

  # A local copy follows the object: rewritten, it is downloaded again.
  url = roots["gs"] + "/v.txt"
  cache = str(tmp_path / "cache")
  storage.atomic_write(url, lambda f: f.write("one"))
  first = storage.local_copy(url, cache_dir=cache)
  assert pathlib.Path(first).read_text() == "one" and first.startswith(cache)
  storage.atomic_write(url, lambda f: f.write("two!"))
  assert pathlib.Path(storage.local_copy(url, cache_dir=cache)).read_text() == "two!"
  with pytest.raises(StorageError, match="/missing.txt: no such object"):
    storage.local_copy(roots["gs"] + "/missing.txt", cache_dir=cache)


def _read(path):
  with storage.open(path) as f:
    return f.read()


def _boom():
  raise RuntimeError("the writer failed")


def test_bad_urls_are_refused_with_one_line(gcs, tmp_path, monkeypatch):
  """A bucket that does not exist, a scheme without a backend, gs:// without credentials
  (no emulator, no application-default credentials): one line naming the flag and the
  path. From an entry point (experiments.tstr, in cli.start): exit 1, that line alone,
  nothing written, no local directory named after the URL."""
  gcs("exists")
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {**os.environ, "ECGJAX_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": REPO}
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.tstr", "--workdir=gs://no-such-bucket/w"], cwd=cwd,
    env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
  )  # fmt: skip

  assert storage.check("gs://exists/w", "--workdir") == "gs://exists/w"
  with pytest.raises(StorageError) as e:
    storage.check("gs://no-such-bucket/w", "--workdir")
  assert str(e.value) == "--workdir=gs://no-such-bucket/w: bucket no-such-bucket does not exist"
  with pytest.raises(StorageError) as e:
    storage.check("nope://x/y", "--out")
  assert str(e.value).startswith("--out=nope://x/y: no file-system backend for nope:// (")
  with monkeypatch.context() as m:
    m.delenv("STORAGE_EMULATOR_HOST")
    m.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(StorageError) as e:
      storage.check("gs://exists/w", "--data_dir")
  assert str(e.value).startswith("--data_dir=gs://exists/w: no Google Cloud credentials (")
  assert "\n" not in str(e.value)

  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 1, err[-2000:]
  assert err.strip().splitlines()[-1] == (
    "error: --workdir=gs://no-such-bucket/w: bucket no-such-bucket does not exist"
  )
  assert "Traceback" not in err and os.listdir(cwd) == []
  assert storage.listdir("gs://exists") == []


_PLAIN_SCRIPT = """
import sys

import numpy as np

from ecgjax.data import load_ptbxl, records

records._MIN_RECORDS_FOR_POOL = 0  # the parallel reader, even for a handful of records
ds = load_ptbxl(sys.argv[1], num_workers=2, progress=False)
np.save(sys.argv[2], np.asarray(ds.signals))
print(ds.content_key, ds.data_dir)
"""


def test_ptbxl_from_a_bucket_is_the_local_copy(gcs, tmp_path):
  """--data_dir=gs://... holding a PTB-XL root loads the arrays and content key of the local
  copy, read by the parallel reader from a plain script without `if __name__ ==
  "__main__":` (a forkserver pool re-imported it and died); a reload downloads nothing, an
  object changed in the bucket is fetched again and changes the key."""
  import fsspec
  from conftest import make_ptbxl_root

  from ecgjax.data import load_ptbxl

  local_root = make_ptbxl_root(tmp_path / "local")  # 48 records
  url = gcs("ptbxl") + f"/{tmp_path.name}/ptb-xl/1.0.3"
  fs = fsspec.filesystem("gs")
  fs.put(local_root + "/", url, recursive=True)
  ref = load_ptbxl(local_root, cache_dir=str(tmp_path / "c0"), progress=False)

  script = tmp_path / "plain.py"
  script.write_text(_PLAIN_SCRIPT)
  cache = tmp_path / "c1"
  env = {**os.environ, "ECGJAX_CACHE_DIR": str(cache), "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, str(script), url, str(tmp_path / "s.npy")],
                        capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [ref.content_key, url]
  np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), ref.signals)

  mirrored = list((cache / "remote").glob("*/records100/*/*.dat"))
  assert len(mirrored) == len(ref)
  stamps = {p: p.stat().st_mtime_ns for p in mirrored}
  again = load_ptbxl(url, cache_dir=str(cache), progress=False)
  assert again.content_key == ref.content_key and again.data_dir == url
  np.testing.assert_array_equal(again.signals, ref.signals)
  assert {p: p.stat().st_mtime_ns for p in mirrored} == stamps  # nothing downloaded again

  with open(os.path.join(local_root, "ptbxl_database.csv"), "a") as f:
    f.write("\n")  # no value changes, but the bytes do
  fs.put_file(os.path.join(local_root, "ptbxl_database.csv"), f"{url}/ptbxl_database.csv")
  changed = load_ptbxl(url, cache_dir=str(cache), progress=False)
  assert changed.content_key == load_ptbxl(local_root, cache_dir=False, progress=False).content_key
  assert changed.content_key != ref.content_key


def test_tstr_and_report_in_a_bucket_match_a_local_workdir(gcs, tmp_path, ptbxl):
  """experiments.tstr (real_matched: a generated cohort, a classifier, metrics.json) with
  --workdir=gs://..., from the shared trained generator and judge uploaded to the bucket,
  then experiments.report of that workdir, give the metrics and the report tables of the same run
  on a local workdir (the harness on the same 4-device mesh, in this process); nothing of
  the workdir is written on local disk. (Generator and judge training into a gs://
  workdir: tests/test_multiprocess.py.)"""
  import fsspec
  from conftest import TRAINED_DEVICES, as_flags, read_scalars, trained, trained_cfg, workdir_from

  from ecgjax.data import pipeline
  from ecgjax.eval import report, tstr

  cfg = trained_cfg()
  cfg.classifier.epochs = 1  # what is compared is where files go, not how well it learns
  artefact = trained(ptbxl)
  wd = gcs("workdirs") + f"/{tmp_path.name}/w"
  fsspec.filesystem("gs").put(artefact + "/", wd, recursive=True)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {
    **os.environ,  # 8 CPU devices (conftest), of which --num_devices uses 4, as here
    "ECGJAX_CACHE_DIR": str(tmp_path / "cache"),
    "ECGJAX_JAX_CACHE_DIR": os.environ.get("ECGJAX_TEST_JAX_CACHE", "/tmp/ecgjax-test-jax-cache"),
    "PYTHONPATH": REPO,
  }
  args = ["experiments.tstr", f"--workdir={wd}", "--policy=real_matched", "--n=16",
          f"--num_devices={TRAINED_DEVICES}", *as_flags(cfg)]  # fmt: skip
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "training the mini" not in proc.stdout  # the uploaded generator was used
  t1 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--workdir={wd}"], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert os.listdir(cwd) == []

  t2 = time.perf_counter()
  local = workdir_from(tmp_path / "local", artefact)
  mesh = pipeline.make_mesh(TRAINED_DEVICES)
  want, _ = tstr.Harness(cfg, mesh, ptbxl, local, progress=False).run("real_matched", 0, n=16)
  report.make_report(local)
  print(f"seconds: tstr in the bucket {t1 - t0:.1f}, its report {t2 - t1:.1f}, "
        f"locally both {time.perf_counter() - t2:.1f}")  # fmt: skip
  got = storage.read_json(f"{wd}/tstr/real_matched/seed_0/metrics.json")
  print("macro AUROC: bucket", got["macro_auroc"], "local", want["macro_auroc"])
  for k in ("macro_auroc", "val_macro_auroc", "buckets", "per_code", "best_epoch", "n_train"):
    assert got[k] == want[k], k
  run_dir = f"{wd}/tstr/real_matched/seed_0"
  assert storage.listdir(run_dir) == ["metrics.json", "tensorboard"]  # scratch gone
  # The classifier's TensorBoard events, written whole into the bucket: the local run's losses.
  tb, tb_local = f"{run_dir}/tensorboard/classifier", tmp_path / "tb"
  tb_local.mkdir()
  for name in storage.listdir(tb):
    with storage.open(f"{tb}/{name}", "rb") as f:
      (tb_local / name).write_bytes(f.read())
  losses = read_scalars(tb_local)["train/loss"]
  assert (
    losses
    and losses
    == read_scalars(
      os.path.join(local, "tstr", "real_matched", "seed_0", "tensorboard", "classifier")
    )["train/loss"]
  )
  for name in ("table1.csv", "table1.md"):
    with storage.open(f"{wd}/report/{name}") as f:
      assert f.read() == pathlib.Path(local, "report", name).read_text(), name
  assert storage.isfile(f"{wd}/report/index.html") and storage.isfile(f"{wd}/report/figure1.png")
