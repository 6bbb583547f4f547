"""Rows of arrays stored in many files, read lazily: a cohort larger than memory.

A `ShardedArray` is the concatenation along axis 0 of arrays stored in `.npy`
files or as members of uncompressed `.npz` files (what `np.savez` writes: each
member is a plain `.npy` stored in the zip without compression, so its rows sit
at a fixed byte offset). Indexing reads only the rows asked for, with
positioned reads (`os.pread`) into fresh buffers, so memory stays flat in the
number of rows: nothing is memory-mapped (pages of a mapping count towards the
process's resident set once touched) and nothing is cached beyond the file
layouts. It behaves like a read-only numpy array for what the pipelines use:
`len`, `shape`, `dtype`, `ndim`, integer / slice / integer-array / boolean row
indexing (with further axes after a comma) and `np.asarray` (which reads
everything). It is a grain random-access source's backing store
(`pipeline.ArraySource`), and it is safe to index from several threads.

A member stored compressed (`np.savez_compressed`) or in Fortran order cannot
be read in place; that part is loaded whole the first time it is touched.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import zipfile

import numpy as np

_ZIP_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_ZIP_LOCAL_MAGIC = 0x04034B50


@dataclasses.dataclass(frozen=True)
class Part:
  """One file's rows: C-ordered data of `shape` and `dtype` at byte `offset` of `path`."""

  path: str
  offset: int
  shape: tuple[int, ...]
  dtype: np.dtype
  member: str | None = None  # the .npz member, for messages and the eager fallback
  in_place: bool = True  # False: compressed or Fortran-ordered, loaded whole when read


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(f)
  if version == (2, 0):
    return np.lib.format.read_array_header_2_0(f)
  raise ValueError(f"unsupported .npy format version {version}")


def npy_part(path: str) -> Part:
  """The layout of a `.npy` file."""
  with open(path, "rb") as f:
    shape, fortran, dtype = _read_npy_header(f)
    offset = f.tell()
  return Part(path, offset, tuple(shape), np.dtype(dtype), in_place=not fortran)


def npz_part(path: str, name: str) -> Part:
  """The layout of member `name` (without `.npy`) of an `.npz` file."""
  member = f"{name}.npy"
  with zipfile.ZipFile(path) as z:
    try:
      info = z.getinfo(member)
    except KeyError:
      raise KeyError(f"{path} has no array {name!r}") from None
    if info.compress_type != zipfile.ZIP_STORED:
      with z.open(member) as f:
        shape, _, dtype = _read_npy_header(f)
      return Part(path, -1, tuple(shape), np.dtype(dtype), name, in_place=False)
  with open(path, "rb") as f:
    f.seek(info.header_offset)
    fields = _ZIP_LOCAL_HEADER.unpack(f.read(_ZIP_LOCAL_HEADER.size))
    if fields[0] != _ZIP_LOCAL_MAGIC:
      raise ValueError(f"{path}: corrupt zip header for {member}")
    name_len, extra_len = fields[-2], fields[-1]
    f.seek(info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len)
    shape, fortran, dtype = _read_npy_header(f)
    offset = f.tell()
  return Part(path, offset, tuple(shape), np.dtype(dtype), name, in_place=not fortran)


class ShardedArray:
  """Read-only rows of several `Part`s, concatenated along axis 0 (see the module doc)."""

  def __init__(self, parts: list[Part]):
    if not parts:
      raise ValueError("ShardedArray needs at least one part")
    row_shapes = {p.shape[1:] for p in parts}
    dtypes = {p.dtype for p in parts}
    if len(row_shapes) != 1 or len(dtypes) != 1:
      where = ", ".join(f"{p.path}: {p.shape} {p.dtype}" for p in parts[:4])
      raise ValueError(f"parts differ in row shape or dtype ({where}, ...)")
    if any(p.dtype.hasobject for p in parts):
      raise ValueError("object arrays cannot be read in place")
    self.parts = list(parts)
    self.dtype = parts[0].dtype
    self._row_shape = parts[0].shape[1:]
    self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * self.dtype.itemsize
    counts = np.array([p.shape[0] for p in parts], np.int64)
    self._starts = np.concatenate([[0], np.cumsum(counts)])
    self.shape = (int(self._starts[-1]),) + self._row_shape
    self._loaded: dict[int, np.ndarray] = {}  # parts that cannot be read in place
    self._lock = threading.Lock()

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def nbytes(self) -> int:
    return self.shape[0] * self._row_bytes

  def __len__(self) -> int:
    return self.shape[0]

  def __repr__(self) -> str:
    return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, parts={len(self.parts)})"

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_lock")
    state["_loaded"] = {}
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __array__(self, dtype=None, copy=None):
    out = self._take(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype, copy=False)

  def __getitem__(self, key):
    rest = ()
    if isinstance(key, tuple):
      key, rest = (key[0] if key else slice(None)), key[1:]
    if isinstance(key, (int, np.integer)):
      i = int(key)
      if not -len(self) <= i < len(self):
        raise IndexError(f"row {i} is out of range for {len(self)} rows")
      row = self._take(np.array([i % len(self)]))[0]
      return row[rest] if rest else row
    if isinstance(key, slice):
      rows = np.arange(*key.indices(len(self)))
    else:
      rows = np.asarray(key)
      if rows.dtype == bool:
        if rows.shape != (len(self),):
          raise IndexError(f"boolean index of shape {rows.shape} for {len(self)} rows")
        rows = np.flatnonzero(rows)
      elif not np.issubdtype(rows.dtype, np.integer):
        raise IndexError(f"rows must be integers, a slice or a boolean mask, got {rows.dtype}")
      if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
        raise IndexError(f"row index out of range for {len(self)} rows")
      rows = rows % max(len(self), 1)
    out = self._take(rows.reshape(-1)).reshape(rows.shape + self._row_shape)
    return out[(slice(None),) * rows.ndim + rest] if rest else out

  def _take(self, rows: np.ndarray) -> np.ndarray:
    """Rows (non-negative, any order, repeats allowed) as a new array."""
    out = np.empty((len(rows),) + self._row_shape, self.dtype)
    if not len(rows):
      return out
    which = np.searchsorted(self._starts, rows, side="right") - 1
    for k in np.unique(which):
      at = np.flatnonzero(which == k)
      local = rows[at] - self._starts[k]
      out[at] = self._read_part(int(k), local)
    return out

  def _read_part(self, k: int, local: np.ndarray) -> np.ndarray:
    part = self.parts[k]
    if not part.in_place:
      return self._load(k)[local]
    out = np.empty((len(local),) + self._row_shape, self.dtype)
    flat = out.reshape(len(local), -1).view(np.uint8).reshape(len(local), self._row_bytes)
    # Runs of consecutive rows are one read each (a chunked scan reads whole blocks).
    breaks = np.flatnonzero(np.diff(local) != 1) + 1
    fd = os.open(part.path, os.O_RDONLY)
    try:
      for run in np.split(np.arange(len(local)), breaks):
        first, count = int(local[run[0]]), len(run)
        size = count * self._row_bytes
        data = os.pread(fd, size, part.offset + first * self._row_bytes)
        if len(data) != size:
          raise OSError(f"{part.path}: truncated (rows {first}..{first + count - 1} missing)")
        flat[run[0] : run[0] + count] = np.frombuffer(data, np.uint8).reshape(count, -1)
    finally:
      os.close(fd)
    return out

  def _load(self, k: int) -> np.ndarray:
    with self._lock:
      if k not in self._loaded:
        part = self.parts[k]
        if part.member is None:
          data = np.load(part.path)
        else:
          with np.load(part.path) as z:
            data = z[part.member]
        self._loaded = {k: np.ascontiguousarray(data)}  # one part at a time
      return self._loaded[k]
