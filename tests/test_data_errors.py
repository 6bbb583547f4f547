"""Bad input: a DataError naming the culprit, and no partial cache left behind (docs/design.md §7)."""

import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgjax.data import DataError, load_ptbxl
from ecgjax.data.records import LEADS


def _first_record(root):
  db = pd.read_csv(os.path.join(root, "ptbxl_database.csv"))
  return db["ecg_id"].iloc[0], db["filename_lr"].iloc[0]


def _load_expecting(root, cache, pattern):
  with pytest.raises(DataError, match=pattern):
    load_ptbxl(root, cache_dir=str(cache), progress=False)
  leftovers = os.listdir(cache) if os.path.isdir(cache) else []
  assert leftovers == [], f"partial cache left behind: {leftovers}"


def _rewrite_record(root, rel, signal, fs=100, names=LEADS):
  """Writes a valid WFDB record with the given content in place of `rel`."""
  directory, name = os.path.split(os.path.join(root, rel))
  wfdb.wrsamp(
    name,
    fs=fs,
    units=["mV"] * signal.shape[1],
    sig_name=list(names),
    p_signal=signal,
    fmt=["16"] * signal.shape[1],
    adc_gain=[1000.0] * signal.shape[1],
    baseline=[0] * signal.shape[1],
    write_dir=directory,
  )


def test_missing_data_dir(tmp_path):
  missing = tmp_path / "nowhere"
  _load_expecting(str(missing), tmp_path / "cache", f"not found: {missing}")


def test_missing_database_csv(small_root, tmp_path):
  os.remove(os.path.join(small_root, "ptbxl_database.csv"))
  _load_expecting(small_root, tmp_path / "cache", "missing ptbxl_database.csv")


def test_missing_record_file(small_root, tmp_path):
  _, rel = _first_record(small_root)
  os.remove(os.path.join(small_root, rel + ".dat"))
  _load_expecting(
    small_root, tmp_path / "cache", f"record {rel}: missing file .*{os.path.basename(rel)}.dat"
  )


def test_header_at_500_hz(small_root, tmp_path):
  _, rel = _first_record(small_root)
  hea = os.path.join(small_root, rel + ".hea")
  lines = pathlib.Path(hea).read_text().splitlines()
  name, n_sig, fs, length = lines[0].split()
  lines[0] = " ".join([name, n_sig, "500", length])
  pathlib.Path(hea).write_text("\n".join(lines) + "\n")
  _load_expecting(small_root, tmp_path / "cache", f"record {rel}: sampling rate 500 Hz")


def test_eleven_leads(small_root, tmp_path):
  _, rel = _first_record(small_root)
  _rewrite_record(small_root, rel, np.zeros((1000, 11)), names=LEADS[:11])
  _load_expecting(small_root, tmp_path / "cache", f"record {rel}: leads .*\\(11\\)")


def test_wrong_length(small_root, tmp_path):
  _, rel = _first_record(small_root)
  _rewrite_record(small_root, rel, np.zeros((900, 12)))
  _load_expecting(small_root, tmp_path / "cache", f"record {rel}: 900 samples, expected 1000")


def test_nan_in_a_signal(small_root, tmp_path):
  _, rel = _first_record(small_root)
  dat = os.path.join(small_root, rel + ".dat")
  raw = bytearray(pathlib.Path(dat).read_bytes())
  # Format 16, 12 interleaved leads: sample 10 of lead V2 (index 7). -32768 is WFDB's NaN.
  offset = (10 * 12 + 7) * 2
  raw[offset : offset + 2] = (-32768).to_bytes(2, "little", signed=True)
  pathlib.Path(dat).write_bytes(bytes(raw))
  _load_expecting(small_root, tmp_path / "cache", f"record {rel}: non-finite .* lead V2")


def _edit_scp_codes(root, value):
  path = os.path.join(root, "ptbxl_database.csv")
  db = pd.read_csv(path)
  db.loc[0, "scp_codes"] = value
  db.to_csv(path, index=False)
  return db["ecg_id"].iloc[0]


def test_unknown_scp_code(small_root, tmp_path):
  ecg_id = _edit_scp_codes(small_root, "{'NORM': 100.0, 'NOTACODE': 0.0}")
  _load_expecting(small_root, tmp_path / "cache", f"ecg_id {ecg_id}: unknown SCP code 'NOTACODE'")


@pytest.mark.parametrize("bad", ["{'NORM': 100.0", "NORM", "['NORM']"])
def test_malformed_scp_codes(small_root, tmp_path, bad):
  ecg_id = _edit_scp_codes(small_root, bad)
  _load_expecting(small_root, tmp_path / "cache", f"ecg_id {ecg_id}: malformed scp_codes")


def test_a_failed_load_keeps_an_earlier_good_cache(small_root, tmp_path):
  cache = tmp_path / "cache"
  load_ptbxl(small_root, cache_dir=str(cache), progress=False)
  before = sorted(os.listdir(cache))
  _, rel = _first_record(small_root)
  _rewrite_record(small_root, rel, np.zeros((900, 12)))
  with pytest.raises(DataError):
    load_ptbxl(small_root, cache_dir=str(cache), progress=False)
  assert sorted(os.listdir(cache)) == before
