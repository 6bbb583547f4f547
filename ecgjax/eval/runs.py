"""The evaluation interface: one way to lay out, skip, write and find runs (docs/design.md §10).

An *evaluation* (TSTR, blend, TRTS, audit, Syn-to-Real, augmentation,
transfer, convergence) is an `Evaluation`: a name, the record fields that
identify one run (its `keys`) and the directory they map to, the fields a
finished record must carry, and how the report renders its runs. A *run* is
one directory under the results root,

  <root>/<evaluation name>/<evaluation.subdir(keys)>/<evaluation.result>

where root is the workdir for the default generator and <workdir>/<kind>/ for
the others (`results_root`). `Run` is the contract every evaluation follows:

- `run.done()`: the finished record, or None. Process 0 decides (it reads the
  file system); every process gets the same answer, so the processes of a
  multi-host job never diverge.
- `run.scratch(name)`: a directory inside the run for what only serves
  resumption (a cohort, classifier checkpoints); removed once the run is written.
- `run.write(record)`: process 0 writes the record atomically, with the
  evaluation's name and the run's keys added, then removes the scratch.
- `run.execute(identity, make, config=cfg)`: the one sequence every evaluation's
  run step goes through: the finished record if one was made with `identity`
  (an error if it was made otherwise), else the scratch directories, `make(run)`
  for the evaluation's own fields, then the config, code version and seconds
  added and the record written. Evaluations differ only in `make`.

An evaluation may carry its config section (`config(preset)`, added to every
preset by ecgjax/configs.py under the evaluation's name) and the optional
packages it needs (`requires`; `require()` refuses before any work).

`collect(root, evaluation)` finds every finished run of an evaluation below a
root; a file that is not JSON, lacks a required field or sits in a directory
its keys do not name (a copy in the wrong place) is skipped with a
`SkippedRunWarning` naming it, so one bad file never costs a whole report.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

import ecgjax
from ecgjax import fingerprints, generators, storage
from ecgjax.data import pipeline

RESULT = "metrics.json"
IDENTITY = "identity"  # the settings a record was made with (Run.done, Run.write)
REPORT_DIR = "report"  # <root>/report/ (and <root>/<evaluation>/report/): rendered output


def code_version() -> str:
  try:
    rev = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(__file__),
      timeout=5,
    )
    if rev.returncode == 0:
      return f"{ecgjax.__version__}+g{rev.stdout.strip()}"
  except (OSError, subprocess.SubprocessError):
    pass
  return ecgjax.__version__


def results_root(workdir: str, generator_kind: str) -> str:
  """Where a generator kind's runs live: the workdir itself for the default generator
  (so existing workdirs keep their layout), <workdir>/<kind>/ for the others."""
  return workdir if generator_kind == generators.DEFAULT else os.path.join(workdir, generator_kind)


class SkippedRunWarning(UserWarning):
  """A result file that could not be used; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What one kind of evaluation is to the run layout and the report.

  subdir(keys) -> the run's directory below <root>/<name>/ (a relative path);
  required: result fields the report reads, with their types (bool is never a
  number); render(runs, out_dir) -> (Markdown section, {file name: path written})
  turns the collected runs into the report's section, or None when it has none.
  """

  name: str
  title: str
  summary: str
  keys: tuple[str, ...]
  subdir: Callable[[Mapping[str, Any]], str]
  required: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  result: str = RESULT
  render: Callable[[list[dict], str], tuple[str, dict[str, str]]] | None = None
  # Extra checks of a record read back (raise ValueError naming the problem).
  validate: Callable[[dict], None] | None = None
  # config(preset) -> the evaluation's config section (cfg.<name>), or None for none.
  config: Callable[[str], Any] | None = None
  # Optional packages the evaluation needs: {import name: what installs it}.
  requires: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def require(self) -> None:
    """Raises ConfigError (one line) when a package the evaluation needs is missing."""
    from ecgjax.errors import ConfigError

    missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
    if missing:
      how = "; ".join(sorted({self.requires[m] for m in missing}))
      raise ConfigError(
        f"the {self.name} evaluation needs {', '.join(missing)}, which is not installed: {how}"
      )

  def run(self, root: str, **keys) -> Run:
    missing = [k for k in self.keys if k not in keys]
    if missing:
      raise ValueError(f"{self.name} run needs {', '.join(missing)}")
    return Run(self, root, {k: keys[k] for k in self.keys})

  def directory(self, root: str) -> str:
    return os.path.join(root, self.name)


class Run:
  """One run directory of an evaluation (see the module docstring)."""

  def __init__(self, evaluation: Evaluation, root: str, keys: dict):
    self.evaluation, self.root, self.keys = evaluation, root, keys
    self.dir = os.path.join(evaluation.directory(root), evaluation.subdir(keys))
    self.path = os.path.join(self.dir, evaluation.result)
    self._scratch: list[str] = []

  def done(self, identity: dict | None = None) -> dict | None:
    """The finished record (read by every process once process 0 has seen it), or None.

    identity: the settings that decide the record's content (stored under "identity" by
    `write`). A finished record made with other settings, or one without them (an older
    ecgjax), is not reused: a ConfigError names the file and each differing field.
    """
    if not pipeline.process0_decides(np.bool_(storage.isfile(self.path))):
      return None
    record = storage.read_json(self.path)
    if identity is not None:
      check_identity(self.path, record.get(IDENTITY), identity)
    return record

  def scratch(self, name: str) -> str:
    path = os.path.join(self.dir, name)
    self._scratch.append(path)
    return path

  def execute(
    self,
    identity: dict,
    make: Callable[[Run], dict],
    *,
    config=None,
    scratch: tuple[str, ...] = ("classifier",),
  ) -> tuple[dict, bool]:
    """The run step (module docstring): (the record, whether it was finished earlier).

    make(run) returns the evaluation's own fields; it may add scratch directories of its
    own (run.scratch). config: the ConfigDict the run was made with, recorded whole."""
    done = self.done(identity)
    if done is not None:
      return done, True
    for name in scratch:
      self.scratch(name)
    t0 = time.perf_counter()
    record = dict(make(self))
    record["config"] = None if config is None else config.to_dict()
    record["code_version"] = code_version()
    record.setdefault("seconds", time.perf_counter() - t0)
    return self.write(record, identity), False

  def write(self, record: dict, identity: dict | None = None) -> dict:
    """Writes the record (process 0, atomically) with its identity (see `done`) and
    removes the scratch; returns it."""
    record = {"evaluation": self.evaluation.name, **self.keys, **record}
    if identity is not None:
      record[IDENTITY] = _jsonable(identity)
    if jax.process_index() == 0:
      storage.write_json(self.path, record)
      for path in self._scratch:
        storage.rmtree(path)
    return record


def _jsonable(obj):
  return json.loads(json.dumps(obj, default=str))


def check_identity(path: str, stored: dict | None, asked: dict) -> None:
  """Raises ConfigError (one line) unless the record at `path` was made as `asked`."""
  from ecgjax.errors import ConfigError

  if stored is None:
    raise ConfigError(
      f"{path} records no settings (written by an older ecgjax), so it cannot be told "
      f"apart from a run with other settings; remove {os.path.dirname(path)} to redo it"
    )
  diff = fingerprints.differences(stored, asked)
  if diff:
    raise ConfigError(
      f"{path} was made with other settings: {'; '.join(diff)}; use another --workdir, "
      f"or remove {os.path.dirname(path)} to redo it"
    )


def _type_names(types) -> str:
  return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def read_run(evaluation: Evaluation, root: str, path: str) -> dict:
  """A result file, checked: JSON object, required fields and types, finite numbers,
  and a directory that its keys name. Raises ValueError saying what is wrong."""
  record = storage.read_json(path)
  if not isinstance(record, dict):
    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
  missing = [k for k in (*evaluation.keys, *evaluation.required) if k not in record]
  if missing:
    raise ValueError(f"partial file, missing {', '.join(missing)}")
  for k, types in evaluation.required.items():
    v = record[k]
    if types is None:
      continue
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _tuple(types)):
      raise ValueError(f"field {k!r} is {v!r}, not {_type_names(types)}")
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"{k} is {v}")
  expected = os.path.normpath(
    os.path.join(evaluation.directory(root), evaluation.subdir(record), evaluation.result)
  )
  if os.path.normpath(path) != expected:
    keys = ", ".join(f"{k}={record[k]!r}" for k in evaluation.keys)
    raise ValueError(f"its keys ({keys}) name {os.path.relpath(expected, root)}, not this place")
  if evaluation.validate is not None:
    evaluation.validate(record)
  return {**record, "path": path}


def _tuple(types) -> tuple:
  return types if isinstance(types, tuple) else (types,)


def collect(root: str, evaluation: Evaluation) -> list[dict]:
  """Every readable finished run of `evaluation` below `root`, in directory order."""
  base = evaluation.directory(root)
  runs = []
  for dirpath, dirnames, files in storage.walk(base):
    dirnames[:] = sorted(d for d in dirnames if d != REPORT_DIR)
    if evaluation.result not in files:
      continue
    path = os.path.join(dirpath, evaluation.result)
    try:
      runs.append(read_run(evaluation, root, path))
    except (OSError, ValueError, TypeError, KeyError) as e:
      warnings.warn(f"skipping {path}: {e}", SkippedRunWarning, stacklevel=2)
  return runs


def mean_std(values, ddof: int = 1) -> tuple[float, float, int]:
  """Mean, sample std (ddof=1; NaN below two values) and count of the finite values."""
  v = np.asarray(
    [float(x) for x in values if x is not None and math.isfinite(float(x))], np.float64
  )
  mean = float(v.mean()) if v.size else math.nan
  std = float(v.std(ddof=ddof)) if v.size > ddof else math.nan
  return mean, std, int(v.size)


def fmt_mean_std(
  mean: float, std: float, n: int, digits: int = 3, std_digits: int | None = None, sep=" ± "
) -> str:
  """`0.812 ± 0.010` over several values, a bare mean for one (its sd is NaN), n/a for
  none; the one mean ± sd formatter of every table."""
  if n == 0 or mean is None or not math.isfinite(mean):
    return "n/a"
  if n > 1 and std is not None and math.isfinite(std):
    return f"{mean:.{digits}f}{sep}{std:.{digits if std_digits is None else std_digits}f}"
  return f"{mean:.{digits}f}"


def auroc_cells(records: list[dict], digits: int = 4) -> dict:
  """Table cells of scored runs: macro AUROC and each prevalence bucket as mean ± sd over
  the records, and their count ("seeds")."""
  m = mean_std(r["macro_auroc"] for r in records)
  row = {"macro AUROC": fmt_mean_std(*m, digits=digits)}
  for b in ("common", "moderate", "rare"):
    row[b] = fmt_mean_std(*mean_std(r["buckets"].get(b) for r in records), digits=digits)
  row["seeds"] = m[2]
  return row


def parse_list(text, convert=str, *, flag: str, expected: str, ok=None) -> list:
  """The one comma-separated list parser: '0, 1,2' -> [convert(item), ...] (blank items
  dropped). An empty list, an item `convert` rejects or one `ok` refuses is a ConfigError
  naming the flag and what was expected."""
  from ecgjax.errors import ConfigError

  items = [p.strip() for p in str(text).split(",") if p.strip()]
  try:
    values = [convert(p) for p in items]
  except (TypeError, ValueError):
    values = None
  if not values or (ok is not None and not all(ok(v) for v in values)):
    raise ConfigError(f"{flag}={text!r}: expected {expected}")
  return values
