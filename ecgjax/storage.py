"""Every file ecgjax reads or writes, on a local disk or in object storage (docs/design.md §7).

A path is a local path or a URL that fsspec has a backend for: `gs://bucket/dir`
(gcsfs; what a slice of several hosts shares, since its hosts share no
filesystem), `memory://` (tests), or any other installed fsspec backend. Local
paths go through `os` exactly as before; URLs through fsspec. Orbax checkpoints
take the same URLs (orbax lists and creates through etils.epath, which uses
gcsfs too, and writes arrays through tensorstore's own GCS driver).

Atomic writes: a reader sees a whole file or none of it. Locally a file is
written to a temp file in its directory and renamed into place; in object
storage an object appears only when its upload completes, so the file is
written to a local temp file and uploaded once, under its final name (no
rename: object stores have none). Directories are prefixes there: `makedirs`
is a no-op and a directory exists once something is under it.

Emulators: `STORAGE_EMULATOR_HOST` (e.g. http://127.0.0.1:4443, a fake-gcs-server),
which Google's clients and gcsfs read, points every gs:// URL at it; ecgjax sets
tensorstore's `TENSORSTORE_GCS_HTTP_URL` from it (and a dummy token), so orbax's
arrays go there too.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from ecgjax.errors import StorageError

_LOCAL_PROTOCOLS = ("file", "local")
_builtin_open = builtins.open


def _use_emulator() -> str:
  """`$STORAGE_EMULATOR_HOST` as a URL ('' when unset), passed on to tensorstore; read at
  import and again before each remote access, so a test may set it later."""
  host = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if host:
    url = host if "://" in host else "http://" + host
    os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
    # An emulator takes any token: without one tensorstore logs an error for the missing
    # application-default credentials on every process before going on anonymously.
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    # An emulator serves the JSON API only: skip gcsfs's bucket-layout lookup, which asks
    # Google's storage-control service (and warns on every call when it cannot). gcsfs
    # reads this when it is imported.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
  return host


_use_emulator()


def _no_listings_cache() -> None:
  """Several processes (hosts) decide from listings of what the others wrote (finished
  shards, the latest checkpoint): no gcsfs instance answers from a cached listing, ours
  or the one orbax lists checkpoints with (etils.epath), so this is set at import."""
  import fsspec

  fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


_no_listings_cache()


def default_cache_dir() -> str:
  """`$ECGJAX_CACHE_DIR` or ~/.cache/ecgjax: the decoded-signal cache, XLA's cache and
  local copies of remote files (always on local disk)."""
  return os.environ.get("ECGJAX_CACHE_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "ecgjax"
  )


def protocol(path: str) -> str | None:
  """The URL scheme of `path` ('gs', 'memory', ...), None for a local path."""
  path = os.fspath(path)
  if "://" not in path:
    return None
  scheme = path.split("://", 1)[0]
  return None if scheme in _LOCAL_PROTOCOLS else scheme


def is_url(path: str) -> bool:
  """True for object storage (any URL but file://)."""
  return protocol(path) is not None


def _fs(path: str):
  """(fsspec filesystem, its path) for a URL."""
  import fsspec

  _use_emulator()
  fs, p = fsspec.core.url_to_fs(path)
  return fs, p


def normalize(path: str) -> str:
  """An absolute local path, or the URL without a trailing slash."""
  path = os.fspath(path)
  if is_url(path):
    return path.rstrip("/")
  if path.startswith("file://"):
    path = path[len("file://") :]
  return os.path.abspath(path)


def check(path: str, what: str) -> str:
  """Refuses, with a one-line StorageError naming `what`=`path`, a URL that cannot work
  before anything is written: a scheme without an installed backend, gs:// without
  credentials (and no emulator), a bucket that does not exist. Returns `path`."""
  scheme = protocol(path)
  if scheme is None:
    return path
  import fsspec

  try:
    fsspec.get_filesystem_class(scheme)
  except (ValueError, ImportError) as e:
    reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    raise StorageError(
      f"{what}={path}: no file-system backend for {scheme}:// ({reason}); use a local path "
      f"or gs://bucket/dir"
    ) from None
  if scheme in ("gs", "gcs") and not _use_emulator():
    import google.auth
    import google.auth.exceptions

    try:
      google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
      raise StorageError(
        f"{what}={path}: no Google Cloud credentials (run `gcloud auth application-default "
        f"login`, set GOOGLE_APPLICATION_CREDENTIALS, or run on a VM with a service account)"
      ) from None
  if scheme in ("memory",):
    return path
  bucket = path.split("://", 1)[1].split("/", 1)[0]
  try:
    fs, _ = _fs(path)
    found = fs.exists(bucket)
  except Exception as e:  # the backends raise many types (HTTP, auth, connection)
    reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    raise StorageError(f"{what}={path}: cannot reach bucket {bucket} ({reason})") from None
  if not found:
    raise StorageError(f"{what}={path}: bucket {bucket} does not exist")
  return path


def open(path: str, mode: str = "r", **kwargs):  # noqa: A001 (the file-system verb)
  """A file object, local or remote. Writing a remote file directly uploads when it is
  closed; use `atomic_write` for anything a reader may see half-written."""
  if not is_url(path):
    return _builtin_open(path, mode, **kwargs)
  fs, p = _fs(path)
  return fs.open(p, mode, **kwargs)


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  fs, p = _fs(path)
  return fs.exists(p)


def isfile(path: str) -> bool:
  if not is_url(path):
    return os.path.isfile(path)
  fs, p = _fs(path)
  return fs.isfile(p)


def isdir(path: str) -> bool:
  """A local directory, or a prefix with at least one object under it."""
  if not is_url(path):
    return os.path.isdir(path)
  fs, p = _fs(path)
  return fs.isdir(p)


def makedirs(path: str) -> None:
  """Creates a local directory (and its parents); nothing to do in object storage."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """Sorted names (not paths) of the entries of a directory; [] when there is none."""
  if not is_url(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
  fs, p = _fs(path)
  try:
    entries = fs.ls(p, detail=False)
  except FileNotFoundError:
    return []
  return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != p})


def walk(path: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """`os.walk` for either kind of path (top-down; prune `dirnames` in place)."""
  if not is_url(path):
    yield from os.walk(path)
    return
  fs, p = _fs(path)
  scheme = protocol(path)
  for dirpath, dirnames, filenames in fs.walk(p):
    yield f"{scheme}://{dirpath.split('://', 1)[-1].lstrip('/')}", dirnames, filenames


def remove(path: str) -> None:
  """Removes a file; a missing one is not an error."""
  if not is_url(path):
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    return
  fs, p = _fs(path)
  with contextlib.suppress(FileNotFoundError):
    fs.rm_file(p)


def rmtree(path: str) -> None:
  """Removes a directory and everything under it; a missing one is not an error."""
  if not is_url(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  fs, p = _fs(path)
  with contextlib.suppress(FileNotFoundError):
    fs.rm(p, recursive=True)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """A local temp file name that becomes `path` when the block ends.

  For writers that need a file name rather than an open file (e.g. a numpy
  memmap). Locally the temp file sits in `path`'s directory and is renamed onto
  `path`; for a URL it is uploaded to `path` in one piece. If the block raises
  (or the process is killed), the destination is untouched and the temp file is
  removed.
  """
  remote = is_url(path)
  if remote:
    directory = None
  else:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
  )
  os.close(fd)
  try:
    yield tmp
    if remote:
      fs, p = _fs(path)
      fs.put_file(tmp, p)
      os.remove(tmp)
    else:
      os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write(path: str, write, mode: str = "w") -> str:
  """Writes a file whole or not at all (see `atomic_path`); `write(f)` fills the open file."""
  encoding = {"encoding": "utf-8"} if "b" not in mode else {}
  with atomic_path(path) as tmp, _builtin_open(tmp, mode, **encoding) as f:
    write(f)
  return path


def write_json(path: str, obj) -> str:
  return atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=float))


def read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def append_text(path: str, text: str) -> None:
  """Appends to a text file. Objects cannot be appended to: a remote file is rewritten
  whole (atomically), which suits the small logs this is for (metrics.jsonl)."""
  if not is_url(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _builtin_open(path, "a", encoding="utf-8") as f:
      f.write(text)
    return
  old = ""
  if isfile(path):
    with open(path, encoding="utf-8") as f:
      old = f.read()
  atomic_write(path, lambda f: f.write(old + text))


def copy(src: str, dst: str) -> str:
  """Copies a file (either side local or remote); `dst` appears whole or not at all."""
  if not is_url(src):
    with atomic_path(dst) as tmp:
      shutil.copyfile(src, tmp)
    return dst
  fs, p = _fs(src)
  with atomic_path(dst) as tmp:
    fs.get_file(p, tmp)
  return dst


def _version(info: dict) -> str:
  """What changes when an object is rewritten: its generation or checksum, and its size."""
  for k in ("generation", "md5Hash", "crc32c", "etag", "ETag", "mtime", "created", "LastModified"):
    if info.get(k) is not None:
      return f"{k}={info[k]} size={info.get('size')}"
  return json.dumps(info, sort_keys=True, default=str)


def _mirror_dir(root: str, cache_dir: str | None) -> str:
  key = hashlib.blake2b(normalize(root).encode(), digest_size=10).hexdigest()
  return os.path.join(cache_dir or default_cache_dir(), "remote", key)


def local_mirror(root: str, rel_paths: Iterable[str], *, cache_dir: str | None = None) -> str:
  """A local directory holding `root`/rel for each of `rel_paths`; `root` itself when local.

  For readers that need local files (memory maps, positioned reads, wfdb): remote
  files are downloaded concurrently (gcsfs fetches a list of objects in parallel)
  into `cache_dir` (default: `default_cache_dir()`)/remote/<hash of root>/, each
  renamed into place whole, and kept with the object's version (generation or
  checksum, size): a later call lists the objects and downloads only those that
  changed. A missing object is a StorageError naming its URL.
  """
  if not is_url(root):
    return root
  root = normalize(root)
  rel_paths = list(dict.fromkeys(rel_paths))
  fs, base = _fs(root)
  base = base.rstrip("/")
  listing: dict[str, dict] = {}
  tops = {rel.split("/", 1)[0] for rel in rel_paths if "/" in rel}
  for top in sorted(tops):
    with contextlib.suppress(FileNotFoundError):
      listing.update(fs.find(f"{base}/{top}", detail=True))
  for rel in rel_paths:
    if "/" not in rel:
      with contextlib.suppress(FileNotFoundError):
        listing[f"{base}/{rel}"] = fs.info(f"{base}/{rel}")
  want = {}
  for rel in rel_paths:
    info = listing.get(f"{base}/{rel}")
    if info is None or info.get("type") == "directory":
      raise StorageError(f"{root}/{rel}: no such object")
    want[rel] = _version(info)
  local = _mirror_dir(root, cache_dir)
  index_path = os.path.join(local, ".versions.json")
  try:
    have = read_json(index_path)
  except (OSError, ValueError):
    have = {}
  todo = [
    rel for rel in rel_paths if have.get(rel) != want[rel] or not os.path.isfile(f"{local}/{rel}")
  ]
  if todo:
    staging = tempfile.mkdtemp(prefix=".download.", dir=_makedirs(local))
    try:
      tmps = [os.path.join(staging, str(i)) for i in range(len(todo))]
      fs.get([f"{base}/{rel}" for rel in todo], tmps)
      for rel, tmp in zip(todo, tmps):
        dest = os.path.join(local, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(tmp, dest)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
    write_json(index_path, {**have, **want})
  return local


def local_copy(path: str, *, cache_dir: str | None = None) -> str:
  """A local file with `path`'s content: `path` itself when local, else a cached
  download (see `local_mirror`)."""
  if not is_url(path):
    return path
  root, name = normalize(path).rsplit("/", 1)
  return os.path.join(local_mirror(root, [name], cache_dir=cache_dir), name)


def _makedirs(path: str) -> str:
  os.makedirs(path, exist_ok=True)
  return path
