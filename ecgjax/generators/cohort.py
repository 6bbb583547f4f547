"""Writing a synthetic cohort as .npz shards with a manifest, resumably (docs/design.md §7).

Sample i is generated from `fold_in(PRNGKey(seed), i)` and its conditioning
vector, so whichever run, batch size or device count produces a shard, its
content is the same. Each shard is written whole or not at all (`ecgjax.storage`:
a renamed temp file locally, one upload in a bucket); the manifest, written
last, lists the finished ones, so a killed run resumes with no sample lost or
duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile

import jax
import numpy as np
from tqdm.auto import tqdm

from ecgjax import fingerprints, storage
from ecgjax.data import pipeline, shards
from ecgjax.errors import ConfigError
from ecgjax.models.embeddings import check_cond

MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1024  # samples per .npz shard, the unit of resumption


def _digest(*arrays) -> str:
  h = hashlib.blake2b(digest_size=12)
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def read_manifest(out_dir: str) -> dict | None:
  path = os.path.join(out_dir, MANIFEST)
  if not storage.isfile(path):
    return None
  try:
    return storage.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: corrupt manifest ({e}); remove {out_dir} to start again") from None


def write_cohort(
  generate_fn,
  cond: np.ndarray,
  labels: np.ndarray,
  rows: np.ndarray,
  out_dir: str,
  *,
  seed: int,
  shard_size: int,
  identity: dict,
  notes: dict | None = None,
  stop_after_shards: int | None = None,
  progress: bool = True,
) -> dict:
  """Generates what is missing of the cohort in `out_dir`; returns the manifest.

  generate_fn(cond_block, start) -> signals (k, 12, T), for samples
  start .. start + k - 1. `identity` (generator fingerprint, sampler settings)
  must match a manifest already there, as must the cohort's conditioning;
  `notes` (what the generator renders, and how) are stored but not compared.
  stop_after_shards: write at most this many new shards (simulates a kill).
  """
  n = len(cond)
  if n <= 0:
    raise ConfigError(f"--n must be positive, got {n}")
  if shard_size <= 0:
    raise ConfigError(f"shard size must be positive, got {shard_size}")
  # Process 0 writes the shards and the manifest; under several processes the others read
  # them back (a judge's pool), so the directory must be one they all see.
  pipeline.check_shared_directory(out_dir, "the cohort directory")
  storage.makedirs(out_dir)
  want = {
    "n": n,
    "seed": seed,
    "shard_size": shard_size,
    "cond_digest": _digest(cond, labels, rows),
    **identity,
  }
  manifest = _manifest_for(out_dir, want)
  if notes is not None:
    manifest["notes"] = notes
  todo = _missing_shards(manifest, out_dir, n, shard_size)
  bar = tqdm(
    total=n,
    initial=n - sum(min(shard_size, n - s) for s in todo),
    unit="ecg",
    desc=f"generating {os.path.basename(out_dir)}",
    disable=not progress or jax.process_index() != 0,
  )
  t0, made = time.perf_counter(), 0
  try:
    for i, start in enumerate(todo):
      if stop_after_shards is not None and i >= stop_after_shards:
        break
      stop = min(n, start + shard_size)
      signals = np.asarray(generate_fn(cond[start:stop], start), np.float32)
      payload = dict(
        signals=signals,
        cond=cond[start:stop],
        labels=labels[start:stop],
        rows=rows[start:stop],
        index=np.arange(start, stop),
      )
      _add_shard(manifest, out_dir, start, payload)
      made += stop - start
      bar.update(stop - start)
  finally:
    bar.close()
  # The others may read the cohort next: wait until process 0 has written all of it.
  pipeline.barrier(f"cohort {out_dir} written")
  elapsed = time.perf_counter() - t0
  manifest["last_run"] = {
    "generated": made,
    "seconds": elapsed,
    "samples_per_s": made / elapsed if made else None,
  }
  return manifest


def _manifest_for(out_dir: str, want: dict) -> dict:
  """The manifest in out_dir (a new one when there is none), provided it is the cohort
  `want` describes: every field that decides its content must agree, or a ConfigError
  names the fields and nothing on disk is touched."""
  manifest = read_manifest(out_dir)
  if manifest is None:
    return {**want, "shards": [], "complete": False}
  missing = sorted(k for k in want if k not in manifest)
  differing = fingerprints.differences({k: manifest[k] for k in want if k in manifest},
                                       {k: v for k, v in want.items() if k in manifest})  # fmt: skip
  if missing or differing:
    what = []
    if differing:
      what.append("differs in " + ", ".join(differing))
    if missing:
      what.append(f"its manifest lacks {', '.join(missing)} (written by an older ecgjax)")
    raise ConfigError(
      f"{out_dir} holds a different cohort: {'; '.join(what)}; use another --out or remove it"
    )
  return manifest


def _missing_shards(manifest: dict, out_dir: str, n: int, shard_size: int) -> list[int]:
  """The starts of the shards still to make; the manifest keeps only the shards on disk.
  Process 0's view decides, and every process keeps the same manifest in memory (so all
  of them return the same `complete`), though only process 0 writes it."""
  on_disk = {
    s["start"] for s in manifest["shards"] if storage.isfile(os.path.join(out_dir, s["file"]))
  }
  starts = np.arange(0, n, shard_size)
  missing = pipeline.process0_decides(np.array([s not in on_disk for s in starts]))
  done = {int(s) for s in starts[~missing]}
  manifest["shards"] = [s for s in manifest["shards"] if s["start"] in done]
  return [int(s) for s in starts[missing]]


def _add_shard(manifest: dict, out_dir: str, start: int, payload: dict) -> None:
  """Writes one shard, then the manifest that lists it (process 0, each atomically)."""
  name = f"shard_{start:08d}.npz"
  if jax.process_index() == 0:
    storage.atomic_write(os.path.join(out_dir, name), lambda f: np.savez(f, **payload), mode="wb")
  count = len(payload["index"])
  manifest["shards"] = sorted(
    manifest["shards"] + [{"file": name, "start": start, "count": count}],
    key=lambda s: s["start"],
  )
  manifest["complete"] = sum(s["count"] for s in manifest["shards"]) == manifest["n"]
  if jax.process_index() == 0:
    storage.atomic_write(
      os.path.join(out_dir, MANIFEST), lambda f: json.dump(manifest, f, indent=1)
    )


def generate_cohort(
  gen,
  mesh,
  cond,
  labels,
  rows,
  out_dir: str,
  *,
  seed: int,
  shard_size: int | None = None,
  stop_after_shards: int | None = None,
  progress: bool = True,
) -> dict:
  """`write_cohort` with any generator (ecgjax/generators/base.py): sample i keyed by
  fold_in(fold_in(PRNGKey(seed), 1), i); the generator's identity names the cohort."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  cond = check_cond(cond)
  return write_cohort(
    lambda c, start: gen.generate(c, key, mesh=mesh, start=start),
    cond,
    np.asarray(labels),
    np.asarray(rows),
    out_dir,
    seed=seed,
    shard_size=shard_size or DEFAULT_SHARD_SIZE,
    identity=dict(gen.identity),
    notes=gen.cohort_notes(cond),
    stop_after_shards=stop_after_shards,
    progress=progress,
  )


FIELDS = ("signals", "cond", "labels", "rows", "index")


def read_cohort(out_dir: str, *, lazy: bool = False) -> dict:
  """All shards of a complete cohort in sample order: concatenated arrays, or with
  lazy=True one `ShardedArray` per field, which reads only the rows it is indexed with
  (so a cohort larger than memory can be trained on; ecgjax/data/shards.py). Both give
  the same values, for cohorts written by any version of the writer."""
  manifest = read_manifest(out_dir)
  if manifest is None or not manifest.get("complete"):
    raise ConfigError(
      f"{out_dir}: no complete cohort (manifest missing or unfinished); "
      f"rerun the generation to finish it"
    )
  if lazy:
    return _open_lazily(out_dir, manifest)
  parts = []
  for s in manifest["shards"]:
    path = os.path.join(out_dir, s["file"])
    try:
      with np.load(storage.local_copy(path)) as z:
        parts.append({k: z[k] for k in ("signals", "cond", "labels", "rows", "index")})
    except (OSError, ValueError, KeyError) as e:
      raise ConfigError(f"{path}: unreadable shard ({e})") from None
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if not np.array_equal(out["index"], np.arange(manifest["n"])):
    raise ConfigError(f"{out_dir}: shards do not cover samples 0..{manifest['n'] - 1} exactly once")
  return out


def _open_lazily(out_dir: str, manifest: dict) -> dict[str, shards.ShardedArray]:
  layouts = {k: [] for k in FIELDS}
  for s in manifest["shards"]:
    path = os.path.join(out_dir, s["file"])
    try:
      local = storage.local_copy(path)
      for k in FIELDS:
        layouts[k].append(shards.npz_part(local, k))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
      raise ConfigError(f"{path}: unreadable shard ({e})") from None
  try:
    out = {k: shards.ShardedArray(v) for k, v in layouts.items()}
  except ValueError as e:
    raise ConfigError(f"{out_dir}: shards do not fit together ({e})") from None
  # The sample indices are small (8 bytes a sample); checking them reads no signal.
  index = out["index"]
  covered = len(index) == manifest["n"] and all(
    np.array_equal(index[a : a + 65536], np.arange(a, min(a + 65536, len(index))))
    for a in range(0, len(index), 65536)
  )
  if not covered or any(len(v) != len(index) for v in out.values()):
    raise ConfigError(f"{out_dir}: shards do not cover samples 0..{manifest['n'] - 1} exactly once")
  return out
