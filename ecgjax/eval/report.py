"""The workdir report: every registered evaluation's section, one index (docs/design.md §10).

  report.make_report(workdir)  ->  <workdir>/report/index.md, index.html and each section's files

For the default generator's root (the workdir) and each other generator
kind's root (<workdir>/<kind>/), every evaluation of the registry
(ecgjax/eval/registry.py) whose runs are found is rendered by its own
`render` (TSTR: Table 1 and Figure 1; blend: Figure 2; TRTS; Syn-to-Real;
audits, linked; augmentation; transfer; convergence). Unreadable result
files are skipped with a warning naming them (printed on stderr), so one bad
file never costs the report of a sweep. Nothing here runs a model: a report
is made on a laptop from a copied workdir, while the sweep goes on.
"""

from __future__ import annotations

import os
import sys
import warnings

from ecgjax import generators, storage
from ecgjax.errors import ConfigError
from ecgjax.eval import registry, runs
from ecgjax.eval.render import html_page, write_text

tstr_eval = registry.get("tstr")


def roots(workdir: str) -> list[tuple[str, str]]:
  """(generator kind, results root) for every kind whose root exists, the default first."""
  found = [(generators.DEFAULT, workdir)]
  for kind in generators.names():
    if kind != generators.DEFAULT:
      root = runs.results_root(workdir, kind)
      if storage.isdir(root):
        found.append((kind, root))
  return found


def collect_all(workdir: str) -> tuple[dict[tuple[str, str], list[dict]], int]:
  """{(kind, evaluation name): runs} for whatever is found, and the number of files skipped;
  each skipped file is printed to stderr as one line naming it and why."""
  found: dict[tuple[str, str], list[dict]] = {}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", runs.SkippedRunWarning)
    for kind, root in roots(workdir):
      for evaluation in registry.EVALUATIONS.values():
        got = runs.collect(root, evaluation)
        if got:
          found[(kind, evaluation.name)] = got
  for w in caught:
    print(f"warning: {w.message}", file=sys.stderr)
  return found, len(caught)


def make_report(workdir: str, out: str | None = None, bold_best: bool = True) -> dict[str, str]:
  """Renders every evaluation found into `out` (default <workdir>/report); returns
  {relative name: path} of every file written, index.md and index.html included.

  Raises ConfigError naming the workdir and the layouts it looked for when
  there is nothing to report: an empty report would look like a finished one.
  """
  found, skipped = collect_all(workdir)
  if not found:
    where = f"{workdir} does not exist" if not storage.isdir(workdir) else f"no runs in {workdir}"
    also = f" ({skipped} file(s) skipped, see the warnings above)" if skipped else ""
    layouts = ", ".join(
      os.path.join(workdir, e.name, "...", e.result) for e in registry.EVALUATIONS.values()
    )
    raise ConfigError(f"{where}{also}: expected any of {layouts}")
  out = out or os.path.join(workdir, runs.REPORT_DIR)
  written: dict[str, str] = {}
  md = [f"# ecgjax report: {storage.normalize(workdir)}", ""]
  md.append("Sections: " + ", ".join(f"{e.name}" for (_, e) in _order(found)) + ".")
  md.append("")
  for kind, evaluation in _order(found):
    section_out = out if kind == generators.DEFAULT else os.path.join(out, kind)
    rel = os.path.relpath(section_out, out)
    options = {"bold_best": bold_best} if evaluation is tstr_eval else {}
    text, files = evaluation.render(found[(kind, evaluation.name)], section_out, **options)
    for name, path in files.items():
      written[os.path.normpath(os.path.join(rel, name))] = path
    if rel != ".":
      text = _relink(text, rel)
    heading = evaluation.title + ("" if kind == generators.DEFAULT else f" [generator: {kind}]")
    md += [f"## {heading}", "", text.rstrip(), ""]
    print(f"== {heading} ==\n{text.rstrip()}\n")
  text = "\n".join(md) + "\n"
  written["index.md"] = write_text(os.path.join(out, "index.md"), text)
  written["index.html"] = write_text(
    os.path.join(out, "index.html"), html_page(f"ecgjax report: {workdir}", text)
  )
  return written


def _order(found):
  """(kind, evaluation) pairs in registry order, the default generator's first."""
  kinds = list(dict.fromkeys(k for k, _ in found))
  return [(k, e) for k in kinds for e in registry.EVALUATIONS.values() if (k, e.name) in found]


def _relink(text: str, rel: str) -> str:
  """Image and file links of a section written into a subdirectory of the report."""
  import re

  return re.sub(
    r"(!?\[[^\]]*\]\()(?!https?:|/|\.\./)([^)]+)\)", lambda m: f"{m[1]}{rel}/{m[2]})", text
  )
