"""Writes a full-size PTB-XL-shaped dataset (21,799 records) resampled from a real PTB-XL root.

  python -m experiments.make_ptbxl_fullsize --out=/data/ptbxl-fullsize [--seed=0]
  python -m experiments.data_summary --data_dir=/data/ptbxl-fullsize

Official layout (ptbxl_database.csv, scp_statements.csv, records100/NNNNN/NNNNN_lr.{hea,dat},
WFDB format 16), real fold sizes and patient count, every record a shifted, scaled and
noised copy of a source record with that record's labels and (jittered) demographics
(ecgjax/data/fullsize.py; the output's README.txt and provenance.csv say how each record
was made). Deterministic for a seed; rerunning the same command finishes an interrupted
run, and the directory loads only once every record is written. Any entry point then
takes it as --data_dir.
"""

from absl import flags

from ecgjax import errors
from ecgjax.data import fullsize

_OUT = flags.DEFINE_string("out", None, "Output directory (created; empty or a previous run's).")
_SOURCE = flags.DEFINE_string(
  "source", None, "PTB-XL root the records are resampled from; default: the embedded slice."
)
_NUM_RECORDS = flags.DEFINE_integer(
  "num_records", fullsize.FULL_NUM_RECORDS, "Records to write (fold sizes scale with it)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the plan and of every record's noise.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Writer processes; default: all cores.")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  summary = fullsize.write_fullsize(
    _OUT.value,
    source=_SOURCE.value,
    num_records=_NUM_RECORDS.value,
    seed=_SEED.value,
    num_workers=_NUM_WORKERS.value,
  )
  print(
    f"{summary['out']}: {summary['num_records']} records ({summary['written_now']} written now, "
    f"{summary['seconds']:.1f} s), {summary['num_patients']} patients, "
    f"folds {' '.join(map(str, summary['fold_sizes']))}"
  )
  print(f"load it with: python -m experiments.data_summary --data_dir={summary['out']}")


if __name__ == "__main__":
  errors.run(main)
