"""Prints the condition table of a PTB-XL root: shape, folds, buckets, evaluable codes.

python -m experiments.data_summary                      # the embedded slice
python -m experiments.data_summary --data_dir=/path/to/ptb-xl/1.0.3
"""

import numpy as np
from absl import flags

from ecgjax import errors
from ecgjax.data import load_ptbxl
from ecgjax.data.table import BUCKETS

_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "PTB-XL root (official layout); default: the embedded 400-record slice."
)
_MIN_TEST_POSITIVES = flags.DEFINE_integer(
  "min_test_positives", 1, "Test-fold positives a code needs to be evaluable."
)


def main(argv):
  del argv
  ds = load_ptbxl(_DATA_DIR.value)
  print(f"data_dir: {ds.data_dir}")
  print(f"records: {len(ds)}  signals {ds.signals.shape} {ds.signals.dtype}  cond {ds.cond.shape}")
  sizes = np.bincount(ds.fold, minlength=11)[1:]
  print("folds: " + " ".join(f"{k + 1}:{s}" for k, s in enumerate(sizes)))
  print(
    f"train (1-8): {ds.train_mask.sum()}  val (9): {ds.val_mask.sum()}  test (10): {ds.test_mask.sum()}"
  )
  evaluable = ds.evaluable(_MIN_TEST_POSITIVES.value)
  present = ds.labels[ds.train_mask].sum(0) > 0
  print(f"codes: {len(ds.codes)}  present in train: {present.sum()}  evaluable: {evaluable.sum()}")
  for b in BUCKETS:
    in_bucket = ds.buckets == b
    print(
      f"  {b:9s} {in_bucket.sum():3d} codes ({(in_bucket & present).sum()} present in train, "
      f"{(in_bucket & evaluable).sum()} evaluable)"
    )
  names = [c for c, e in zip(ds.codes, evaluable) if e]
  print("evaluable: " + ", ".join(names))


if __name__ == "__main__":
  errors.run(main)
