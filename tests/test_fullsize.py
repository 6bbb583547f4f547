"""The full-size PTB-XL-shaped writer (ecgjax/data/fullsize.py), at small size.

The plan (metadata) is checked at the full 21,799 records, where it costs a
tenth of a second; the files at 60 records.
"""

import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgjax.data import DataError, embedded_data_dir, fullsize, load_ptbxl, ptbxl
from ecgjax.data import table as T

N = 60


@pytest.fixture(scope="session")
def source():
  db, codes = ptbxl._read_csvs(embedded_data_dir())
  return db, codes


@pytest.fixture(scope="session")
def written(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("fullsize") / "ptbxl")
  summary = fullsize.write_fullsize(out, num_records=N, seed=0, progress=False)
  return out, summary


def _tree(root):
  files = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, root)] = f.read()
  return files


def test_encoder_writes_the_real_files_byte_for_byte():
  root = embedded_data_dir()
  for ecg_id in (1, 57, 400):
    rel = fullsize.record_path(ecg_id)
    digital = wfdb.rdrecord(os.path.join(root, rel), physical=False).d_signal
    header, data = fullsize.encode_record(digital.astype(np.int16), os.path.basename(rel))
    with open(os.path.join(root, rel + ".hea"), "rb") as f:
      assert header == f.read(), rel
    with open(os.path.join(root, rel + ".dat"), "rb") as f:
      assert data == f.read(), rel


def test_a_resampled_record_is_what_wfdb_writes_and_reads(tmp_path):
  src = wfdb.rdrecord(os.path.join(embedded_data_dir(), fullsize.record_path(3)), physical=False)
  digital = fullsize.resample_signal(src.d_signal, shift=123, scale=1.1, seed=5, ecg_id=7)
  header, data = fullsize.encode_record(digital, "00007_lr")
  wfdb.wrsamp(
    "00007_lr", fs=100, units=["mV"] * 12, sig_name=list(fullsize.HEADER_LEADS),
    d_signal=digital.astype(np.int64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
    baseline=[0] * 12, write_dir=str(tmp_path),
  )  # fmt: skip
  assert (tmp_path / "00007_lr.hea").read_bytes() == header
  assert (tmp_path / "00007_lr.dat").read_bytes() == data
  signal, fields = wfdb.rdsamp(str(tmp_path / "00007_lr"))
  np.testing.assert_array_equal(signal, digital / 1000.0)
  assert fields["fs"] == 100 and fields["units"] == ["mV"] * 12


def test_resampling_is_a_shifted_scaled_copy_with_small_noise():
  src = wfdb.rdrecord(os.path.join(embedded_data_dir(), fullsize.record_path(9)), physical=False)
  d = src.d_signal.astype(np.float64)
  out = fullsize.resample_signal(src.d_signal, shift=250, scale=0.9, seed=0, ecg_id=1)
  residual = (out - np.roll(d, 250, axis=0) * 0.9) / fullsize.ADC_GAIN  # mV
  assert 0.003 < residual[:, 6:].std() < 0.007  # N(0, 5 uV) plus rounding
  # the limb-lead identities hold for the noise: III = II - I exactly, up to rounding
  einthoven = residual[:, 0] + residual[:, 2] - residual[:, 1]
  assert np.abs(einthoven).max() <= 0.0016
  np.testing.assert_array_equal(
    out, fullsize.resample_signal(src.d_signal, shift=250, scale=0.9, seed=0, ecg_id=1)
  )
  assert not np.array_equal(
    out, fullsize.resample_signal(src.d_signal, shift=250, scale=0.9, seed=0, ecg_id=2)
  )


def test_fold_sizes_are_the_real_ones_and_scale():
  sizes = fullsize.fold_sizes(fullsize.FULL_NUM_RECORDS)
  assert tuple(sizes) == fullsize.FULL_FOLD_SIZES
  assert sizes[:8].sum() == 17418 and sizes.sum() == 21799
  assert fullsize.fold_sizes(60).tolist() == [6] * 10
  assert fullsize.fold_sizes(1000).sum() == 1000
  with pytest.raises(DataError, match="one record per fold"):
    fullsize.fold_sizes(9)


def test_plan_at_full_size_follows_the_source(source):
  db, codes = source
  plan = fullsize.make_plan(db, fullsize.FULL_NUM_RECORDS, seed=0)
  out = plan.db
  assert list(out.columns) == list(db.columns)
  assert out["ecg_id"].tolist() == list(range(1, 21800))
  assert tuple(np.bincount(out["strat_fold"], minlength=11)[1:]) == fullsize.FULL_FOLD_SIZES
  assert out["filename_lr"].iloc[1233] == "records100/01000/01234_lr"
  assert out["filename_hr"].iloc[1233] == "records500/01000/01234_hr"
  by_patient = out.groupby("patient_id")
  assert len(by_patient) == fullsize.FULL_NUM_PATIENTS
  assert (by_patient["strat_fold"].nunique() == 1).all() and (
    by_patient["sex"].nunique() == 1
  ).all()
  # a record's labels and sex are its source row's
  np.testing.assert_array_equal(out["scp_codes"], db["scp_codes"].to_numpy()[plan.source])
  np.testing.assert_array_equal(out["sex"], db["sex"].to_numpy()[plan.source])
  src_split = fullsize._split_of(db["strat_fold"].to_numpy())
  out_split = fullsize._split_of(out["strat_fold"].to_numpy())
  np.testing.assert_array_equal(src_split[plan.source], out_split)  # no split crosses over

  def labels(frame):
    scp = [T.parse_scp_codes(t, i) for t, i in zip(frame["scp_codes"], frame["ecg_id"])]
    return T.label_matrix(scp, codes, frame["ecg_id"])

  src_labels, out_labels = labels(db), labels(out)
  for split in range(3):
    p = src_labels[src_split == split].mean(0)
    q = out_labels[out_split == split].mean(0)
    m = (out_split == split).sum()
    # within 5 binomial standard deviations of the source split's prevalence
    assert np.all(np.abs(q - p) <= 5 * np.sqrt(p * (1 - p) / m) + 1e-12), split
    for column, tol in (("sex", 0.04), ("age", 2.5)):
      src = db[column][src_split == split].mean()
      assert abs(out[column][out_split == split].mean() - src) < tol, (split, column)
  assert abs(out["height"].isna().mean() - db["height"].isna().mean()) < 0.05
  # jitter: within the stated bounds of the source values
  age_diff = out["age"].to_numpy() - db["age"].to_numpy()[plan.source]
  assert np.nanmax(np.abs(age_diff)) <= fullsize.AGE_JITTER_YEARS
  assert out["age"].isna().sum() == db["age"].isna().to_numpy()[plan.source].sum()
  assert fullsize.make_plan(db, 21799, seed=0).db.equals(out)
  assert not fullsize.make_plan(db, 21799, seed=1).db.equals(out)


def test_written_dataset_loads_and_matches_its_plan(written, source):
  out, summary = written
  assert summary["complete"] and summary["written_now"] == N
  ds = load_ptbxl(out, cache_dir=None, progress=False)
  assert ds.signals.shape == (N, 12, 1000) and len(ds.codes) == 71
  assert ds.ecg_id.tolist() == list(range(1, N + 1))
  assert np.bincount(ds.fold, minlength=11)[1:].tolist() == [6] * 10
  db, _ = source
  prov = pd.read_csv(os.path.join(out, fullsize.PROVENANCE_CSV))
  src = load_ptbxl(cache_dir=None, progress=False)
  row = {e: i for i, e in enumerate(src.ecg_id)}
  src_rows = np.array([row[e] for e in prov["source_ecg_id"]])
  np.testing.assert_array_equal(ds.labels, src.labels[src_rows])
  np.testing.assert_array_equal(ds.sex, src.sex[src_rows])
  for i in range(N):
    expected = np.roll(src.signals[src_rows[i]], prov["shift"][i], axis=-1) * prov["scale"][i]
    assert np.abs(ds.signals[i] - expected).max() < 0.05, i  # noise: 5 uV std
  readme = pathlib.Path(out, fullsize.README).read_text()
  assert "resampled" in readme and "seed: 0" in readme


def test_deterministic_and_an_interrupted_run_resumes_to_the_same_bytes(written, tmp_path):
  out, _ = written
  part = str(tmp_path / "part")
  first = fullsize.write_fullsize(part, num_records=N, seed=0, progress=False, stop_after=25)
  assert not first["complete"] and first["written_now"] == 25
  with pytest.raises(DataError, match="missing ptbxl_database.csv"):
    load_ptbxl(part, cache_dir=None, progress=False)  # nothing half-written is loadable
  # what a kill leaves: a temporary file, and a record whose header was not yet renamed
  folder = os.path.join(part, "records100", "00000")
  pathlib.Path(folder, ".00030_lr.dat.abc.tmp").write_bytes(b"partial")
  os.remove(os.path.join(folder, "00003_lr.hea"))
  second = fullsize.write_fullsize(part, num_records=N, seed=0, progress=False)
  assert second["complete"] and second["written_now"] == N - 24
  assert _tree(part) == _tree(out)
  again = fullsize.write_fullsize(part, num_records=N, seed=0, progress=False)
  assert again["written_now"] == 0 and _tree(part) == _tree(out)

  other = str(tmp_path / "seed1")
  fullsize.write_fullsize(other, num_records=N, seed=1, progress=False)
  a, b = _tree(out), _tree(other)
  assert a.keys() == b.keys() and a["ptbxl_database.csv"] != b["ptbxl_database.csv"]
  assert a["records100/00000/00001_lr.dat"] != b["records100/00000/00001_lr.dat"]
  with pytest.raises(DataError, match="seed=0, not 1"):
    fullsize.write_fullsize(out, num_records=N, seed=1, progress=False)


def test_refuses_a_directory_it_did_not_write(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(DataError, match="not empty"):
    fullsize.write_fullsize(str(tmp_path), num_records=N, progress=False)


def test_worker_processes_write_the_same_bytes(written, tmp_path, monkeypatch):
  out, _ = written
  monkeypatch.setattr(fullsize, "_MIN_RECORDS_FOR_POOL", 0)
  monkeypatch.setattr(fullsize, "_CHUNK", 16)
  pooled = str(tmp_path / "pooled")
  fullsize.write_fullsize(pooled, num_records=N, seed=0, num_workers=2, progress=False)
  assert _tree(pooled) == _tree(out)
