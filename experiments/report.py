"""Turns a workdir of TSTR runs into Table 1 and Figures 1-2 (docs/design.md §5).

  python -m experiments.report --workdir=workdir

Reads `<workdir>/tstr/<policy>/seed_<s>/metrics.json` and, when the blend
experiment ran, `<workdir>/blend/frac_<f>/seed_<s>/metrics.json`; writes
`table1.md`, `table1.csv`, `figure1.png` and (with blend runs) `blend.csv` and
`figure2.png` to `<workdir>/report/`, each atomically, and prints the table.
Rows average over the seeds present (mean ± sample std, ddof=1); unreadable
files are skipped with a warning naming them. Needs no accelerator and no jax,
so it can run on a copy of a pod's workdir while the sweep goes on.
"""

from absl import flags

from ecgjax import errors
from ecgjax.errors import ConfigError
from ecgjax.eval import report

_WORKDIR = flags.DEFINE_string(
  "workdir", "workdir", "Workdir whose tstr/ (and blend/) runs are reported."
)
_OUT = flags.DEFINE_string("out", None, "Output directory; default <workdir>/report.")
_BOLD_BEST = flags.DEFINE_bool(
  "bold_best", True, "Bold the best synthetic-only mean of each Table 1 column, as the paper does."
)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags are --workdir, --out, --bold_best")
  for path in report.make_report(_WORKDIR.value, _OUT.value, _BOLD_BEST.value).values():
    print(f"wrote {path}")


if __name__ == "__main__":
  errors.run(main)
