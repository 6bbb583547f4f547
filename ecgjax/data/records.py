"""Reading and validating PTB-XL WFDB records (`records100`), in parallel.

Every record must be 100 Hz, 12 leads in the standard order, 1000 samples, in
mV and finite; anything else is a DataError naming the record.

Records in PTB-XL's own 100 Hz form (a 13-line header as wfdb writes it: format
16, 12 signals of 1000 samples in one .dat, gain(baseline)/mV, no skew, offset
or NaN sample) are decoded directly, (digital - baseline) / gain in float64
exactly as `wfdb.rdsamp` computes it; wfdb's header parser spends ~10 ms per
record in pandas, 95 % of a cold load of the full dataset. Any other record
goes through `wfdb.rdsamp`, so its values and its errors are wfdb's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re
from collections.abc import Sequence

import numpy as np
import wfdb
from tqdm.auto import tqdm

from ecgjax.data.table import DataError

SAMPLING_RATE = 100
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
NUM_SAMPLES = 1000
# Below this many records a pool costs more to start than it saves.
_MIN_RECORDS_FOR_POOL = 1000
_CHUNK = 64
_IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker thread


# One signal line of a PTB-XL 100 Hz header: file, format 16, gain(baseline)/mV,
# ADC resolution 16, ADC zero 0, initial value, checksum, block size 0, lead name.
_SIGNAL_LINE = re.compile(
  r"(?P<file>\S+) 16 (?P<gain>\d+(?:\.\d*)?)\((?P<baseline>-?\d+)\)/mV 16 0 -?\d+ -?\d+ 0 (?P<lead>\S+)"
)
_FORMAT16_NAN = -32768


def read_ptbxl_fast(path: str) -> np.ndarray | None:
  """(1000, 12) float64 mV of a record in PTB-XL's own 100 Hz form, as `wfdb.rdsamp` would
  return it; None for any record not in exactly that form (wfdb then reads it)."""
  try:
    with open(path + ".hea", "rb") as f:
      lines = f.read().decode("ascii").split("\n")
  except (OSError, UnicodeDecodeError):
    return None
  if lines[-1] == "":
    lines.pop()
  name = os.path.basename(path)
  if (
    len(lines) != 1 + len(LEADS) or lines[0] != f"{name} {len(LEADS)} {SAMPLING_RATE} {NUM_SAMPLES}"
  ):
    return None
  gain, baseline = np.empty(len(LEADS)), np.empty(len(LEADS))
  for k, (line, lead) in enumerate(zip(lines[1:], LEADS)):
    m = _SIGNAL_LINE.fullmatch(line)
    if m is None or m["file"] != name + ".dat" or m["lead"].upper() != lead.upper():
      return None
    gain[k], baseline[k] = float(m["gain"]), int(m["baseline"])
  if not (gain > 0).all():
    return None
  try:
    digital = np.fromfile(path + ".dat", dtype="<i2")
  except OSError:
    return None
  if digital.size != NUM_SAMPLES * len(LEADS) or (digital == _FORMAT16_NAN).any():
    return None
  signal = digital.reshape(NUM_SAMPLES, len(LEADS)).astype(np.float64)
  np.subtract(signal, baseline, signal)  # the operations of wfdb's dac(), in its order
  np.divide(signal, gain, signal)
  return signal


def read_record(root: str, rel_path: str) -> np.ndarray:
  """One record as (12, 1000) float32 in mV, leads first, after validation."""
  path = os.path.join(root, rel_path)
  for ext in (".hea", ".dat"):
    if not os.path.isfile(path + ext):
      raise DataError(f"record {rel_path}: missing file {path + ext}")
  fast = read_ptbxl_fast(path)
  if fast is not None:
    return np.ascontiguousarray(fast.T, dtype=np.float32)
  try:
    signal, fields = wfdb.rdsamp(path)
  except Exception as e:  # wfdb raises many types for corrupt files.
    raise DataError(
      f"record {rel_path}: cannot be read by wfdb ({e.__class__.__name__}: {e})"
    ) from None
  if fields["fs"] != SAMPLING_RATE:
    raise DataError(
      f"record {rel_path}: sampling rate {fields['fs']} Hz, expected {SAMPLING_RATE} Hz"
    )
  names = [n.upper() for n in fields["sig_name"]]
  if names != [n.upper() for n in LEADS]:
    raise DataError(
      f"record {rel_path}: leads {fields['sig_name']} ({len(names)}), expected the 12 standard leads {list(LEADS)}"
    )
  if signal.shape != (NUM_SAMPLES, len(LEADS)):
    raise DataError(f"record {rel_path}: {signal.shape[0]} samples, expected {NUM_SAMPLES}")
  units = [u.lower() for u in fields["units"]]
  if any(u != "mv" for u in units):
    raise DataError(f"record {rel_path}: units {fields['units']}, expected mV")
  if not np.isfinite(signal).all():
    lead = LEADS[int(np.flatnonzero(~np.isfinite(signal).all(axis=0))[0])]
    raise DataError(f"record {rel_path}: non-finite values (NaN) in lead {lead}")
  return np.ascontiguousarray(signal.T, dtype=np.float32)


def _read_chunk(args):
  root, rel_paths = args
  return np.stack([read_record(root, p) for p in rel_paths])


def read_records(
  root: str,
  rel_paths: Sequence[str],
  *,
  out: np.ndarray,
  num_workers: int | None = None,
  progress: bool = True,
) -> np.ndarray:
  """Reads all records into `out` (N, 12, 1000), with a thread pool and a progress bar.

  `out` may be a writable memmap, so the full dataset never needs to sit in
  memory twice. Threads, not processes: a record in PTB-XL's own form is read
  and decoded in ~0.3 ms (the full 21,799 records in seconds, once per content
  key), and a process pool's workers (forkserver or spawn) re-import the
  caller's main module, which kills a plain script that calls `load_ptbxl`
  without `if __name__ == "__main__":` (BrokenProcessPool).
  """
  n = len(rel_paths)
  workers = num_workers or os.cpu_count() or 1
  chunks = [(root, list(rel_paths[i : i + _CHUNK])) for i in range(0, n, _CHUNK)]
  bar = tqdm(total=n, desc="reading records100", unit="rec", disable=not progress)
  try:
    if workers <= 1 or n < _MIN_RECORDS_FOR_POOL:
      results = map(_read_chunk, chunks)
      for i, block in enumerate(results):
        out[i * _CHUNK : i * _CHUNK + len(block)] = block
        bar.update(len(block))
    else:
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        # A bounded window of chunks in flight: decoded blocks never pile up in memory
        # while the writer catches up (pool.map would queue every chunk at once).
        window = _IN_FLIGHT_PER_WORKER * workers
        futures = collections.deque()
        start = 0  # first record of the oldest chunk in flight
        for k in range(len(chunks) + window):
          if k < len(chunks):
            futures.append(pool.submit(_read_chunk, chunks[k]))
          if futures and (len(futures) > window or k >= len(chunks)):
            block = futures.popleft().result()
            out[start : start + len(block)] = block
            start += len(block)
            bar.update(len(block))
  finally:
    bar.close()
  return out
