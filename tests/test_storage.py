"""ecgjax.storage against a real Cloud Storage server (fake-gcs-server, conftest.gcs), in
memory:// and on local disk: one set of calls, the same answers; bad URLs refused."""

import os
import pathlib
import subprocess
import sys

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


def test_bad_urls_are_refused_with_one_line(gcs, tmp_path):
  """In the library, then from the entry points (exit 1, one line naming the path, nothing
  written): a bucket that does not exist, a scheme without a backend, gs:// without
  credentials (no emulator, no application-default credentials, not on a GCE VM)."""
  gcs("exists")
  assert storage.check("gs://exists/w", "--workdir") == "gs://exists/w"
  with pytest.raises(StorageError) as e:
    storage.check("gs://no-such-bucket/w", "--workdir")
  assert str(e.value) == "--workdir=gs://no-such-bucket/w: bucket no-such-bucket does not exist"
  with pytest.raises(StorageError, match=r"^--out=nope://x/y: no file-system backend for nope://"):
    storage.check("nope://x/y", "--out")

  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {**os.environ, "ECGJAX_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": REPO}
  no_credentials = {
    k: v
    for k, v in env.items()
    if k not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
  }
  no_credentials.update(HOME=str(tmp_path / "home"), NO_GCE_CHECK="true",
                        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))  # fmt: skip
  cases = [
    (["experiments.tstr", "--workdir=gs://no-such-bucket/w"], env,
     "error: --workdir=gs://no-such-bucket/w: bucket no-such-bucket does not exist"),
    (["experiments.report", "--workdir=nope://bucket/w"], env,
     "error: --workdir=nope://bucket/w: no file-system backend for nope://"),
    (["experiments.report", "--workdir=gs://exists/w"], no_credentials,
     "error: --workdir=gs://exists/w: no Google Cloud credentials"),
  ]  # fmt: skip
  procs = [
    subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=e, text=True,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for args, e, _ in cases
  ]  # fmt: skip
  for proc, (args, _, needle) in zip(procs, cases):
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, (args, err[-2000:])
    assert lines[0].startswith(needle) and "Traceback" not in err, (lines, needle)
  assert os.listdir(cwd) == []  # no local directory named after a URL
  assert storage.listdir("gs://exists") == []
