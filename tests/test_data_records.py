"""The loader against independent parses of the same files (wfdb, pandas + ast)."""

import ast
import os
import pathlib

import numpy as np
import pandas as pd
import wfdb

from ecgjax.data import embedded_data_dir


def test_signals_equal_wfdb_rdsamp_for_all_400_records(ptbxl):
  root = embedded_data_dir()
  db = pd.read_csv(os.path.join(root, "ptbxl_database.csv")).sort_values("ecg_id")
  assert ptbxl.signals.shape == (400, 12, 1000) and ptbxl.signals.dtype == np.float32
  for i, rel in enumerate(db["filename_lr"]):
    reference, fields = wfdb.rdsamp(os.path.join(root, rel))
    assert fields["fs"] == 100
    np.testing.assert_array_equal(ptbxl.signals[i], reference.T.astype(np.float32), err_msg=rel)


def test_labels_and_raw_demographics_match_an_independent_parse(ptbxl):
  root = embedded_data_dir()
  db = pd.read_csv(os.path.join(root, "ptbxl_database.csv")).sort_values("ecg_id")
  codes = list(pd.read_csv(os.path.join(root, "scp_statements.csv"), index_col=0).index)
  assert list(ptbxl.codes) == codes and len(codes) == 71
  np.testing.assert_array_equal(ptbxl.ecg_id, db["ecg_id"].to_numpy())
  np.testing.assert_array_equal(ptbxl.patient_id, db["patient_id"].to_numpy().astype(int))
  np.testing.assert_array_equal(ptbxl.fold, db["strat_fold"].to_numpy())
  np.testing.assert_array_equal(ptbxl.sex, db["sex"].to_numpy())
  for i, (_, row) in enumerate(db.iterrows()):
    present = set(ast.literal_eval(row["scp_codes"]))
    assert {codes[k] for k in np.flatnonzero(ptbxl.labels[i])} == present, row["ecg_id"]
    for axis, column in ((0, "age"), (2, "height"), (3, "weight")):
      raw = row[column]
      if not np.isnan(raw):  # observed values pass through unchanged (no ages of 300 here)
        assert ptbxl.demo[i, axis] == raw, (row["ecg_id"], column)
  assert np.isfinite(ptbxl.demo).all()
  assert ptbxl.cond.shape == (400, 76)
  np.testing.assert_array_equal(ptbxl.cond[:, :71], ptbxl.labels.astype(np.float32))
  np.testing.assert_array_equal(ptbxl.cond[:, 71:], ptbxl.demo_z)


def test_fold_sizes_match_the_slice_readme(ptbxl):
  # ../shared/ptbxl-mini/README.md: folds 1:37 2:40 3:30 4:35 5:36 6:28 7:35 8:35 9:70 10:54
  sizes = np.bincount(ptbxl.fold, minlength=11)[1:]
  assert sizes.tolist() == [37, 40, 30, 35, 36, 28, 35, 35, 70, 54]
  assert (
    ptbxl.train_mask.sum() == 276 and ptbxl.val_mask.sum() == 70 and ptbxl.test_mask.sum() == 54
  )
  # The slice's README says 57 statements occur; its CSV has 53 (parsed with ast above).
  assert int((ptbxl.labels.sum(0) > 0).sum()) == 53


def test_cache_is_keyed_by_content(small_root, tmp_path):
  from ecgjax.data import load_ptbxl

  cache = tmp_path / "cache"
  first = load_ptbxl(small_root, cache_dir=str(cache), progress=False)
  assert len(os.listdir(cache)) == 1
  again = load_ptbxl(small_root, cache_dir=str(cache), progress=False)
  assert isinstance(again.signals, np.memmap) and again.content_key == first.content_key
  # Change one sample of one record: the key changes and the new value is served.
  rel = pd.read_csv(os.path.join(small_root, "ptbxl_database.csv"))["filename_lr"].iloc[0]
  path = os.path.join(small_root, rel + ".dat")
  raw = bytearray(pathlib.Path(path).read_bytes())
  raw[0:2] = (1234).to_bytes(2, "little", signed=True)
  pathlib.Path(path).write_bytes(bytes(raw))
  changed = load_ptbxl(small_root, cache_dir=str(cache), progress=False)
  assert changed.content_key != first.content_key
  reference, _ = wfdb.rdsamp(os.path.join(small_root, rel))
  np.testing.assert_array_equal(changed.signals[0], reference.T.astype(np.float32))
  assert changed.signals[0, 0, 0] != first.signals[0, 0, 0]
  assert len([f for f in os.listdir(cache) if f.endswith(".npy")]) == 2


def test_fast_reader_equals_wfdb_and_leaves_other_records_to_it(tmp_path, monkeypatch):
  """PTB-XL's own 100 Hz records are decoded without wfdb, to wfdb's exact float64 values;
  a record in any other form returns None (wfdb reads it, with wfdb's values and errors)."""
  from ecgjax.data import records

  root = embedded_data_dir()
  db = pd.read_csv(os.path.join(root, "ptbxl_database.csv"))
  for rel in db["filename_lr"]:
    reference, _ = wfdb.rdsamp(os.path.join(root, rel))
    fast = records.read_ptbxl_fast(os.path.join(root, rel))
    assert fast is not None and fast.dtype == np.float64, rel
    np.testing.assert_array_equal(fast, reference, err_msg=rel)
  # the loader's reader takes the fast path: it works with wfdb.rdsamp out of order
  rel = db["filename_lr"].iloc[0]
  monkeypatch.setattr(records.wfdb, "rdsamp", lambda *a, **k: 1 / 0)
  np.testing.assert_array_equal(
    records.read_record(root, rel),
    wfdb.rdrecord(os.path.join(root, rel)).p_signal.T.astype(np.float32),
  )
  monkeypatch.undo()

  signal = wfdb.rdsamp(os.path.join(root, rel))[0]
  names = list(records.LEADS)

  def written(name, **kwargs):
    args = dict(fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12)
    wfdb.wrsamp(name, fs=100, units=["mV"] * 12, sig_name=names, p_signal=signal,
                write_dir=str(tmp_path), **{**args, **kwargs})  # fmt: skip
    return str(tmp_path / name)

  # another gain and baseline are still PTB-XL's form, decoded like wfdb does
  path = written("gain", adc_gain=[200.0] * 12, baseline=[5] * 12)
  np.testing.assert_array_equal(records.read_ptbxl_fast(path), wfdb.rdsamp(path)[0])
  # format 212, a comment line, or a NaN sample: not this form, so wfdb reads them
  assert records.read_ptbxl_fast(written("f212", fmt=["212"] * 12)) is None
  path = written("comment")
  hea = pathlib.Path(path + ".hea")
  hea.write_text(hea.read_text() + "# age: 56\n")
  assert records.read_ptbxl_fast(path) is None
  np.testing.assert_array_equal(
    records.read_record(str(tmp_path), "comment"), wfdb.rdsamp(path)[0].T.astype(np.float32)
  )
  path = written("nan")
  raw = bytearray(pathlib.Path(path + ".dat").read_bytes())
  raw[0:2] = (-32768).to_bytes(2, "little", signed=True)
  pathlib.Path(path + ".dat").write_bytes(bytes(raw))
  assert records.read_ptbxl_fast(path) is None


def test_the_thread_pool_reads_what_one_thread_reads(ptbxl, monkeypatch):
  """The pool path (used from 1,000 records) with a bounded window of chunks in flight."""
  from ecgjax.data import records

  root = embedded_data_dir()
  rels = list(pd.read_csv(os.path.join(root, "ptbxl_database.csv"))["filename_lr"])
  monkeypatch.setattr(records, "_MIN_RECORDS_FOR_POOL", 0)
  monkeypatch.setattr(records, "_CHUNK", 7)  # 58 chunks, the last one short; window 8
  out = np.full((len(rels), 12, 1000), np.nan, np.float32)
  records.read_records(root, rels, out=out, num_workers=2, progress=False)
  np.testing.assert_array_equal(out, ptbxl.signals)
