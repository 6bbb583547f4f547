"""Turns a workdir into one report: every evaluation found, rendered (docs/design.md §10).

  python -m experiments.report --workdir=workdir

Finds the runs of every registered evaluation (ecgjax/eval/registry.py) below
the workdir and below each other generator's root (<workdir>/<kind>/): TSTR
(Table 1, Figure 1), the blend (Figure 2), TRTS, Syn-to-Real, the fidelity and
privacy audits (linked), augmentation, transfer and convergence. Writes each
section's tables (Markdown, CSV) and figures (PNG) to `<workdir>/report/`,
each atomically, with `index.md` and `index.html` (the same content, for a
browser) holding every section, and prints them. Tables average over the
seeds present (mean ± sample std, ddof=1); unreadable files are skipped with
a warning naming them. Needs no accelerator and runs no model, so it can run
on a copy of a pod's workdir while the sweep goes on.
"""

from absl import flags

from ecgjax import errors, storage
from ecgjax.errors import ConfigError
from ecgjax.eval import report

_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Workdir whose runs are reported.")
_OUT = flags.DEFINE_string("out", None, "Output directory; default <workdir>/report.")
_BOLD_BEST = flags.DEFINE_bool(
  "bold_best", True, "Bold the best synthetic-only mean of each Table 1 column, as the paper does."
)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags are --workdir, --out, --bold_best")
  storage.check(_WORKDIR.value, "--workdir")
  if _OUT.value is not None:
    storage.check(_OUT.value, "--out")
  for path in report.make_report(_WORKDIR.value, _OUT.value, _BOLD_BEST.value).values():
    print(f"wrote {path}")


if __name__ == "__main__":
  errors.run(main)
