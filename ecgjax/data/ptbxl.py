"""PTB-XL in its official layout -> signals and the condition table (docs/design.md §2, §8).

`load_ptbxl(None)` reads the real 400-record slice embedded in the package;
`load_ptbxl(path)` reads any PTB-XL v1.0.x root, e.g. the full 21,799 records,
on local disk or in a bucket (`gs://bucket/ptb-xl/1.0.3`: the files it reads are
downloaded in parallel into a local mirror first, `storage.local_mirror`).
Decoded signals are cached as one memory-mappable .npy keyed by a hash of the
dataset's bytes (CSVs, headers and signal files), written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import os

import numpy as np
import pandas as pd

from ecgjax import storage
from ecgjax.data import pipeline
from ecgjax.data import records as records_lib
from ecgjax.data import signals as signals_lib
from ecgjax.data import table as T
from ecgjax.data.table import DataError
from ecgjax.errors import StorageError

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
_REQUIRED_COLUMNS = (
  "ecg_id",
  "patient_id",
  "age",
  "sex",
  "height",
  "weight",
  "scp_codes",
  "strat_fold",
  "filename_lr",
)
_CACHE_FORMAT = b"ecgjax-signals-v1"


def embedded_data_dir() -> str:
  """Path of the vendored 400-record PTB-XL slice (CC BY 4.0, see its README)."""
  return str(importlib.resources.files("ecgjax.data") / "ptbxl_mini")


default_cache_dir = storage.default_cache_dir


@dataclasses.dataclass(frozen=True)
class PTBXL:
  """The dataset: one row per record, arrays aligned on the first axis."""

  signals: np.ndarray  # (N, 12, 1000) float32, mV (read-only memmap when cached)
  labels: np.ndarray  # (N, 71) bool, codes in scp_statements.csv order
  demo: np.ndarray  # (N, 5) float64: age, sex, height, weight, bmi after imputation
  demo_z: np.ndarray  # (N, 5) float32, z-scored with train-fold mean/std
  demo_mean: np.ndarray  # (5,)
  demo_std: np.ndarray  # (5,)
  cond: np.ndarray  # (N, 76) float32 = concat(labels, demo_z)
  age: np.ndarray  # (N,) float, after the age-300 rule and imputation
  sex: np.ndarray  # (N,) int, 0 male / 1 female as in PTB-XL
  fold: np.ndarray  # (N,) int strat_fold 1..10
  ecg_id: np.ndarray  # (N,) int
  patient_id: np.ndarray  # (N,) int
  codes: tuple[str, ...]  # the 71 statements
  data_dir: str
  content_key: str  # hash of the dataset bytes; ties checkpoints to their data

  @property
  def train_mask(self) -> np.ndarray:
    return T.fold_masks(self.fold)[0]

  @property
  def val_mask(self) -> np.ndarray:
    return T.fold_masks(self.fold)[1]

  @property
  def test_mask(self) -> np.ndarray:
    return T.fold_masks(self.fold)[2]

  @property
  def train_prevalence(self) -> np.ndarray:
    return T.prevalence(self.labels, self.train_mask)

  @property
  def buckets(self) -> np.ndarray:
    """(71,) 'common' / 'moderate' / 'rare' by train-fold prevalence."""
    return T.bucket_of(self.train_prevalence)

  def evaluable(self, min_test_positives: int = 1) -> np.ndarray:
    return T.evaluable_codes(
      self.labels[self.train_mask], self.labels[self.test_mask], min_test_positives
    )

  def signal_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and std (12,) over the train folds, for standardisation."""
    return signals_lib.lead_stats(self.signals, np.flatnonzero(self.train_mask))

  def __len__(self) -> int:
    return self.labels.shape[0]


def _read_csvs(root: str, shown: str | None = None) -> tuple[pd.DataFrame, list[str]]:
  """The database (sorted by ecg_id) and the statement codes; `shown`: the root as the
  user gave it (a URL whose local mirror `root` is), for messages."""
  shown = shown or root
  if not os.path.isdir(root):
    raise DataError(f"PTB-XL root not found: {shown} is not a directory")
  db_path = os.path.join(root, DATABASE_CSV)
  st_path = os.path.join(root, STATEMENTS_CSV)
  for path in (db_path, st_path):
    if not os.path.isfile(path):
      raise DataError(f"PTB-XL root {shown}: missing {os.path.basename(path)}")
  try:
    db = pd.read_csv(db_path)
    statements = pd.read_csv(st_path, index_col=0)
  except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
    raise DataError(f"{db_path} or {st_path}: not a readable CSV ({e})") from None
  missing = [c for c in _REQUIRED_COLUMNS if c not in db.columns]
  if missing:
    raise DataError(f"{db_path}: missing columns {missing}")
  if db.empty:
    raise DataError(f"{db_path}: no records")
  codes = [str(c) for c in statements.index]
  if len(set(codes)) != len(codes):
    raise DataError(f"{st_path}: duplicate statement codes")
  bad_fold = ~db["strat_fold"].isin(range(1, 11))
  if bad_fold.any():
    row = db[bad_fold].iloc[0]
    raise DataError(
      f"{db_path}: ecg_id {row['ecg_id']}: strat_fold {row['strat_fold']!r} not in 1..10"
    )
  return db.sort_values("ecg_id", kind="stable").reset_index(drop=True), codes


def _content_key(root: str, rel_paths: list[str]) -> str:
  """Hash of every byte the loader reads, so a changed dataset never hits a stale cache."""
  h = hashlib.blake2b(_CACHE_FORMAT, digest_size=16)
  for name in (DATABASE_CSV, STATEMENTS_CSV):
    with open(os.path.join(root, name), "rb") as f:
      h.update(f.read())
  for rel in rel_paths:
    h.update(rel.encode())
    for ext in (".hea", ".dat"):
      path = os.path.join(root, rel + ext)
      try:
        with open(path, "rb") as f:
          data = f.read()
      except FileNotFoundError:
        raise DataError(f"record {rel}: missing file {path}") from None
      h.update(len(data).to_bytes(8, "little"))
      h.update(data)
  return h.hexdigest()


def _load_signals(root, rel_paths, key, cache_dir, num_workers, progress) -> np.ndarray:
  n = len(rel_paths)
  shape = (n, len(records_lib.LEADS), records_lib.NUM_SAMPLES)
  if cache_dir is None:
    out = np.empty(shape, np.float32)
    return records_lib.read_records(
      root, rel_paths, out=out, num_workers=num_workers, progress=progress
    )
  path = os.path.join(cache_dir, f"ptbxl-signals-{key}.npy")
  if os.path.isfile(path):
    cached = np.load(path, mmap_mode="r")
    if cached.shape == shape and cached.dtype == np.float32:
      return cached
  with storage.atomic_path(path) as tmp:  # readers see the whole file or none
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    records_lib.read_records(root, rel_paths, out=out, num_workers=num_workers, progress=progress)
    out.flush()
    del out
  return np.load(path, mmap_mode="r")


def load_ptbxl(
  data_dir: str | None = None,
  *,
  cache_dir: str | None | bool = True,
  num_workers: int | None = None,
  progress: bool = True,
) -> PTBXL:
  """Loads a PTB-XL root (None: the embedded 400-record slice).

  cache_dir: True for the default cache (`$ECGJAX_CACHE_DIR` or
  ~/.cache/ecgjax), a path, or None/False to decode without caching.
  Raises DataError naming the file, record, field or value at fault.
  """
  shown = storage.normalize(data_dir if data_dir is not None else embedded_data_dir())
  if cache_dir is True:
    cache_dir = default_cache_dir()
  elif cache_dir is False:
    cache_dir = None
  root = shown
  if storage.is_url(shown):
    storage.check(shown, "--data_dir")
    root = storage.local_mirror(shown, [DATABASE_CSV, STATEMENTS_CSV], cache_dir=cache_dir)
  db, codes = _read_csvs(root, shown)
  ecg_id = db["ecg_id"].to_numpy(np.int64)
  scp = [T.parse_scp_codes(text, i) for text, i in zip(db["scp_codes"], ecg_id)]
  labels = T.label_matrix(scp, codes, ecg_id)
  fold = db["strat_fold"].to_numpy(np.int64)
  train, _, _ = T.fold_masks(fold)
  if not train.any():
    raise DataError(f"{root}: no records in the train folds 1-8")
  sex = db["sex"].to_numpy(np.float64)
  demo, mean, std = T.demographics(
    db["age"].to_numpy(np.float64),
    sex,
    db["height"].to_numpy(np.float64),
    db["weight"].to_numpy(np.float64),
    train,
  )
  demo_z = T.zscore(demo, mean, std)
  rel_paths = [str(p) for p in db["filename_lr"]]
  if storage.is_url(shown):
    files = [rel + ext for rel in rel_paths for ext in (".hea", ".dat")]
    try:
      storage.local_mirror(shown, files, cache_dir=cache_dir)
    except StorageError as e:
      raise DataError(f"PTB-XL root {shown}: {e}") from None
  key = _content_key(root, rel_paths)
  # Several processes may read host-local copies, but they must be the same bytes.
  pipeline.check_same_on_processes(key, f"the data at {shown} (--data_dir)")
  signals = _load_signals(root, rel_paths, key, cache_dir, num_workers, progress)
  return PTBXL(
    signals=signals,
    labels=labels,
    demo=demo,
    demo_z=demo_z,
    demo_mean=mean,
    demo_std=std,
    cond=T.make_cond(labels, demo_z),
    age=demo[:, 0],
    sex=sex.astype(np.int64),
    fold=fold,
    ecg_id=ecg_id,
    patient_id=db["patient_id"].to_numpy(np.float64).astype(np.int64),
    codes=tuple(codes),
    data_dir=shown,
    content_key=key,
  )
