"""Paper 002's Syn-to-Real experiments on real PTB-XL folds (docs/design.md §9).

For each class (AFIB, AFLT, PVC, WPW) against NORM and each lead setting (lead
II alone, all 12 leads), three regimes train a binary classifier:

  real      on the real train folds (1-8): positives have the class, negatives
            are NORM records without it; positives weighted n_neg / n_pos;
  syn       on the simulator's cohort only (n_syn recordings, half positive);
  syn_real  the `syn` model fine-tuned on the real train folds, as `real`.

Every model picks its epoch on the real validation fold (9) and is scored on
the real test fold (10): F1 at threshold 0.5 and AUPRC (scikit-learn), mean
+- sample std over seeds, and the relative gain of syn_real over real. The
reduced-positives sweep caps the real train positives at each count of
`caps` (a seeded random subset; all negatives kept) for real and syn_real.

A run (the `syn2real` evaluation, ecgjax/eval/runs.py) writes
<root>/syn2real/lead_<L>/<code>/<regime>/[cap_<k>/]seed_<s>/metrics.json
atomically and is skipped when that exists; a `syn` run also exports its model
(`model/`), which the syn_real runs of every cap fine-tune. A metric the test
fold cannot define (no positive there) is None, and a regime that has no real
positive to learn from is recorded as not run, with the reason.
"""

from __future__ import annotations

import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score  # noqa: E402

from ecgjax import fingerprints, generators, storage  # noqa: E402
from ecgjax.errors import ConfigError  # noqa: E402
from ecgjax.eval import runs, salts  # noqa: E402
from ecgjax.eval.render import markdown  # noqa: E402
from ecgjax.eval.tstr import Harness  # noqa: E402
from ecgjax.models.embeddings import NUM_LABELS  # noqa: E402
from ecgjax.train import classifier as clf_lib  # noqa: E402

CLASSES = ("AFIB", "AFLT", "PVC", "WPW")
NEGATIVE = "NORM"
LEAD_SETTINGS = {"II": (1,), "12": tuple(range(12))}
REGIMES = ("real", "syn", "syn_real")
ALL = "all"


def _subdir(k) -> str:
  parts = [f"lead_{k['leads']}", k["class"], k["regime"]]
  if k["regime"] != "syn":
    parts.append(f"cap_{k['cap']}")
  return os.path.join(*parts, f"seed_{k['seed']}")


def parse_caps(text: str) -> list[int | str]:
  """'5,10,20,50,all' -> [5, 10, 20, 50, 'all']."""
  return runs.parse_list(
    text, lambda p: p if p == ALL else int(p), flag="--config.syn2real.caps",
    expected="positive integers or 'all', comma-separated", ok=lambda c: c == ALL or c > 0,
  )  # fmt: skip


def check_choice(name: str, values, allowed) -> list[str]:
  return runs.parse_list(
    values, flag=f"--config.syn2real.{name}", expected=f"some of {', '.join(allowed)}",
    ok=lambda v: v in allowed,
  )  # fmt: skip


def binary_rows(ds, code: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(rows, y) of a split: records with `code` (y = 1) or NORM without it (y = 0)."""
  codes = list(ds.codes)
  pos = ds.labels[:, codes.index(code)]
  neg = ds.labels[:, codes.index(NEGATIVE)] & ~pos
  rows = np.flatnonzero(mask & (pos | neg))
  return rows, pos[rows].astype(np.float32)


def cap_positives(rows, y, cap, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """All negatives and at most `cap` positives (a random subset, seeded)."""
  pos = np.flatnonzero(y > 0.5)
  if cap == ALL or cap >= len(pos):
    return rows, y
  keep_pos = np.random.default_rng(seed).choice(pos, size=cap, replace=False)
  keep = np.sort(np.concatenate([np.flatnonzero(y < 0.5), keep_pos]))
  return rows[keep], y[keep]


def scores(y_true, prob) -> dict:
  """F1 at 0.5 and AUPRC on the test fold; None where the fold has no positive."""
  y_true = np.asarray(y_true) > 0.5
  prob = np.asarray(prob).reshape(-1)
  if not y_true.any():
    return {"f1": None, "auprc": None, "n_pos": 0, "n": int(len(y_true))}
  return {
    "f1": float(f1_score(y_true, prob >= 0.5, zero_division=0)),
    "auprc": float(average_precision_score(y_true, prob)),
    "n_pos": int(y_true.sum()),
    "n": int(len(y_true)),
  }


def synthetic_cond(ds, code: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(cond (n, 76), y (n,)): n // 2 positives labelled `code`, the rest NORM + SR, with
  demographics of random train-fold records."""
  codes = list(ds.codes)
  rng = np.random.default_rng(seed)
  n_pos = n // 2
  y = np.concatenate([np.ones(n_pos), np.zeros(n - n_pos)]).astype(np.float32)
  labels = np.zeros((n, NUM_LABELS), np.float32)
  labels[:n_pos, codes.index(code)] = 1
  labels[n_pos:, codes.index(NEGATIVE)] = 1
  labels[n_pos:, codes.index("SR")] = 1
  demo = ds.demo_z[rng.choice(np.flatnonzero(ds.train_mask), size=n)]
  return np.concatenate([labels, demo], axis=1), y


class Syn2Real:
  """The Syn-to-Real runs on one shared context: the TSTR harness's classifier path
  (`Harness.fit`, the same training and prediction as TSTR), the simulator, and the
  binary splits of each class."""

  def __init__(self, cfg, mesh, ds, workdir: str, *, progress: bool = True):
    self.cfg, self.mesh, self.ds = cfg, mesh, ds
    self.h = Harness(cfg, mesh, ds, workdir, progress=progress)
    # The classifier every run trains: the classifier section, with syn2real.epochs when
    # it is set (> 0).
    self.ccfg = cfg.classifier.copy_and_resolve_references()
    if int(cfg.syn2real.get("epochs", 0) or 0) > 0:
      self.ccfg.epochs = int(cfg.syn2real.epochs)
    self.root = workdir
    self.sim = generators.get("simulator").load(cfg, ds, workdir)
    if self.sim.sampling_rate != 100:
      raise ConfigError("syn2real trains on 100 Hz signals: use the simulator's sampling_rate=100")
    self.splits = {
      code: {
        name: binary_rows(ds, code, mask)
        for name, mask in (("train", ds.train_mask), ("val", ds.val_mask), ("test", ds.test_mask))
      }
      for code in CLASSES
    }

  def counts(self) -> pd.DataFrame:
    """Positives and negatives per class and split (what the figures rest on)."""
    rows = []
    for code, splits in self.splits.items():
      row = {"class": code}
      for name, (_, y) in splits.items():
        row[f"{name}_pos"] = int(y.sum())
        row[f"{name}_neg"] = int(len(y) - y.sum())
      rows.append(row)
    return pd.DataFrame(rows)

  def _run(self, leads: str, code: str, regime: str, seed: int, cap=None) -> runs.Run:
    return SYN2REAL.run(
      self.root, leads=leads, **{"class": code}, regime=regime, cap=cap, seed=seed
    )

  def _signals(self, rows, leads):
    return np.asarray(self.ds.signals[rows])[:, list(LEAD_SETTINGS[leads])]

  def _fit(self, run, x, y, seed, leads: str, code: str, *, init=None, desc=""):
    """A binary classifier of `code` against NORM on (x, y), its epoch picked on the real
    validation fold of the same leads; positives weighted n_neg / n_pos."""
    va_rows, va_y = self.splits[code]["val"]
    n_pos = float(y.sum())
    pos_weight = np.array([(len(y) - n_pos) / n_pos], np.float32) if n_pos else None
    return self.h.fit(
      x, y[:, None], seed, run.dir, val=(self._signals(va_rows, leads), va_y[:, None]),
      classifier=self.ccfg, init=init, pos_weight=pos_weight, desc=desc,
    )  # fmt: skip

  def identity(self) -> dict:
    """What decides a run's record besides its keys (the run's directory): a finished run
    is reused only when this agrees (runs.Run.execute)."""
    return {
      "classifier": fingerprints.describe(self.ccfg),
      "n_syn": int(self.cfg.syn2real.n_syn),
      "simulator": self.sim.identity,
      "data_key": self.ds.content_key,
    }

  def syn_model(self, leads: str, code: str, seed: int):
    """The `syn` run: (its record, finished earlier, model()) where model() gives its
    classifier (trained and exported once; loaded from the export afterwards)."""
    run = self._run(leads, code, "syn", seed)
    model_dir = os.path.join(run.dir, "model")
    trained = {}

    def make(run: runs.Run) -> dict:
      n = int(self.cfg.syn2real.n_syn)
      cond, y = synthetic_cond(self.ds, code, n, seed)
      key = salts.key(seed, salts.SYN2REAL_CLASS + CLASSES.index(code))
      signals = self.sim.generate(cond, key, mesh=self.mesh)[:, list(LEAD_SETTINGS[leads])]
      clf = self._fit(run, signals, y, seed, leads, code, desc=f"syn {code} lead {leads}")
      if jax.process_index() == 0:
        clf_lib.export(model_dir, clf, self.ccfg)
      trained["clf"] = clf
      return self._record(leads, code, "syn", seed, None, clf, n_train=n, n_train_pos=n // 2)

    record, skipped = run.execute(self.identity(), make, config=self.cfg)
    return record, skipped, lambda: trained.get("clf") or clf_lib.load(model_dir, self.ccfg)[0]

  def _record(self, leads, code, regime, seed, cap, clf, *, n_train, n_train_pos, note=None):
    te_rows, te_y = self.splits[code]["test"]
    result = (
      scores(te_y, clf.predict(self._signals(te_rows, leads), self.mesh))
      if clf is not None
      else {"f1": None, "auprc": None, "n_pos": int(te_y.sum()), "n": int(len(te_y))}
    )
    return {
      "leads": leads,
      "class": code,
      "regime": regime,
      "seed": seed,
      "cap": cap,
      "n_train": int(n_train),
      "n_train_pos": int(n_train_pos),
      "test": result,
      "best_epoch": None if clf is None else clf.best_epoch,
      "note": note,
      "arch": self.ccfg.arch,
    }

  def run(self, leads: str, code: str, regime: str, seed: int, cap=ALL) -> tuple[dict, bool]:
    """One run; returns (record, finished earlier)."""
    if regime == "syn":
      return self.syn_model(leads, code, seed)[:2]
    tr_rows, tr_y = self.splits[code]["train"]
    rows, y = cap_positives(tr_rows, tr_y, cap, seed)
    # A cap at or above the available positives is the `all` run: reuse it.
    effective = ALL if cap == ALL or cap >= int(tr_y.sum()) else cap

    def make(run: runs.Run) -> dict:
      n_pos = int(y.sum())
      if n_pos == 0:
        note = "not run: no real positive in the train folds"
        return self._record(
          leads, code, regime, seed, effective, None, n_train=len(y), n_train_pos=0, note=note
        )
      init = None
      if regime == "syn_real":
        init = self.syn_model(leads, code, seed)[2]().variables
      x = self._signals(rows, leads)
      clf = self._fit(run, x, y, seed, leads, code, init=init, desc=f"{regime} {code} lead {leads}")
      return self._record(
        leads, code, regime, seed, effective, clf, n_train=len(y), n_train_pos=n_pos
      )

    run = self._run(leads, code, regime, seed, effective)
    record, skipped = run.execute(self.identity(), make, config=self.cfg)
    return {**record, "cap": cap}, skipped


def _mean(values) -> float | None:
  """The mean of the defined values (None where there is none)."""
  m, _, n = runs.mean_std(values)
  return m if n else None


def _fmt(values) -> str:
  return runs.fmt_mean_std(*runs.mean_std(values))


def _gain(synreal, real):
  if synreal is None or real is None or real == 0:
    return None
  return (synreal - real) / real


def summary(records: list[dict]) -> pd.DataFrame:
  """Main table: one row per lead setting and class; F1 and AUPRC per regime (all real
  positives) and the relative gain of syn_real over real."""
  rows = []
  key = lambda r: (r["leads"], r["class"])
  for leads, code in sorted(
    {key(r) for r in records}, key=lambda k: (k[0] != "II", CLASSES.index(k[1]))
  ):
    row = {"leads": leads, "class": code}
    means = {}
    for regime in REGIMES:
      sel = [
        r for r in records
        if key(r) == (leads, code) and r["regime"] == regime and r["cap"] in (None, ALL)
      ]  # fmt: skip
      for metric in ("f1", "auprc"):
        values = [r["test"][metric] for r in sel]
        means[(regime, metric)] = _mean(values)
        row[f"{regime} {metric}"] = _fmt(values)
      notes = {r["note"] for r in sel if r.get("note")}
      if notes:
        row[f"{regime} note"] = "; ".join(sorted(notes))
    for metric in ("f1", "auprc"):
      g = _gain(means[("syn_real", metric)], means[("real", metric)])
      row[f"gain {metric}"] = "n/a" if g is None else f"{100 * g:+.1f} %"
    rows.append(row)
  return pd.DataFrame(rows)


def sweep(records: list[dict], caps) -> pd.DataFrame:
  """Reduced-positives table: one row per lead setting, class and run actually made (a cap
  at or above the positives available is the `all` run; `caps` lists the requested caps
  it serves), with the positives used, mean F1 and AUPRC of real and syn_real, and the
  relative gains in %."""
  rows = []
  runs = [r for r in records if r["regime"] in ("real", "syn_real")]
  order = lambda c: (c == ALL, 0 if c == ALL else c)
  for leads in sorted({r["leads"] for r in runs}, key=lambda s: s != "II"):
    for code in CLASSES:
      for cap in sorted(
        {r["cap"] for r in runs if (r["leads"], r["class"]) == (leads, code)}, key=order
      ):
        sel = {
          regime: [
            r for r in runs
            if (r["leads"], r["class"], r["regime"], r["cap"]) == (leads, code, regime, cap)
          ]
          for regime in ("real", "syn_real")
        }  # fmt: skip
        if not sel["real"]:
          continue
        n_pos = sel["real"][0]["n_train_pos"]
        served = [c for c in caps if c == cap or (cap == ALL and (c == ALL or c >= n_pos))]
        row = {
          "leads": leads,
          "class": code,
          "caps": ", ".join(map(str, served)),
          "positives": n_pos,
          "seeds": len(sel["real"]),
        }
        for metric in ("f1", "auprc"):
          real = _mean(r["test"][metric] for r in sel["real"])
          synreal = _mean(r["test"][metric] for r in sel["syn_real"])
          gain = _gain(synreal, real)
          row[f"real {metric}"], row[f"syn_real {metric}"] = real, synreal
          row[f"gain {metric} %"] = None if gain is None else 100 * gain
        rows.append(row)
  return pd.DataFrame(rows)


def plot_sweep(df: pd.DataFrame, path: str) -> str:
  """Relative F1 gain of syn_real over real against the real positives used, per class;
  one panel per lead setting. Points without a defined gain are left out (and said so)."""
  settings = list(dict.fromkeys(df["leads"])) if len(df) else ["II"]
  fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
  for ax, leads in zip(axes[0], settings):
    sub = df[df["leads"] == leads] if len(df) else df
    plotted = 0
    xs = set()
    for code in CLASSES:
      c = sub[(sub["class"] == code) & sub["gain f1 %"].notna()] if len(sub) else sub
      if len(c):
        ax.plot(c["positives"], c["gain f1 %"].astype(float), "o-", label=code)
        xs.update(int(x) for x in c["positives"])
        plotted += 1
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    if xs:
      ax.set_xticks(sorted(xs), [str(x) for x in sorted(xs)])
      ax.minorticks_off()
    ax.set_xlabel("real positives in training")
    ax.set_ylabel("F1 gain of Syn→Real over Real (%)")
    ax.set_title(f"lead {leads}" if leads == "II" else f"{leads} leads")
    if plotted:
      ax.legend()
    else:
      ax.text(0.5, 0.5, "no class has a defined gain\n(test positives or F1 = 0)", ha="center",
              va="center", transform=ax.transAxes)  # fmt: skip
  fig.tight_layout()
  with storage.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=90, format="png")
  plt.close(fig)
  return path


def collect(root: str) -> list[dict]:
  """Every finished syn2real run below a results root."""
  return runs.collect(root, SYN2REAL)


def write_report(
  records: list[dict], counts: pd.DataFrame | None, caps, out_dir: str
) -> dict[str, str]:
  """syn2real.md / .csv (main table), sweep.csv and gain_vs_positives.png, atomically;
  counts: positives per class and split (None: that table is left out)."""
  main = summary(records)
  sw = sweep(records, caps)
  written = {}
  md = [
    "# Syn→Real (paper 002) on real PTB-XL folds",
    "",
    "Test fold 10; F1 at 0.5 and AUPRC, mean ± sample std over seeds; gain = "
    "(Syn→Real − Real) / Real. n/a: undefined (no positive in the test fold, or none "
    "in the train folds to learn from).",
    "",
    *(
      [
        "## Records per class and split (positives: the class; negatives: NORM without it)",
        "",
        markdown(counts),
        "",
      ]
      if counts is not None
      else []
    ),
    "## All real positives",
    "",
    markdown(main),
    "",
    "## Reduced positives (the plot: gain_vs_positives.png)",
    "",
    markdown(sw) if len(sw) else "(no runs)",
    "",
  ]
  written["syn2real.md"] = storage.atomic_write(
    os.path.join(out_dir, "syn2real.md"), lambda f: f.write("\n".join(md))
  )
  written["syn2real.csv"] = storage.atomic_write(
    os.path.join(out_dir, "syn2real.csv"), lambda f: main.to_csv(f, index=False)
  )
  written["sweep.csv"] = storage.atomic_write(
    os.path.join(out_dir, "sweep.csv"), lambda f: sw.to_csv(f, index=False)
  )
  written["gain_vs_positives.png"] = plot_sweep(sw, os.path.join(out_dir, "gain_vs_positives.png"))
  return written


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  """The report's Syn-to-Real section, from the runs alone (the split counts need the data)."""
  caps = sorted(
    {r["cap"] for r in records if r["cap"] is not None},
    key=lambda c: (c == ALL, c if c != ALL else 0),
  )
  written = write_report(records, None, caps, out)
  main = summary(records)
  md = (
    "Paper 002's simulated pre-training, binary classifiers on real fold 10 (F1 at 0.5, AUPRC; "
    "mean ± std over seeds).\n\n" + markdown(main) + "\n![gain](gain_vs_positives.png)\n"
  )
  return md, written


def config(preset: str) -> ConfigDict:
  """cfg.syn2real. mini: the two classes with real train positives in the embedded slice
  (AFIB 6, PVC 7; AFLT and WPW have none, so only their syn regime could run), lead II,
  caps 5 and all (the others equal `all` there), 4 epochs: 10 classifier runs per seed
  instead of 64."""
  paper = preset == "paper"
  return ConfigDict(
    dict(
      classes="AFIB,AFLT,PVC,WPW" if paper else "AFIB,PVC",  # each against NORM
      leads="II,12" if paper else "II",  # lead II alone (the paper's setting), all 12 leads
      n_syn=10_000 if paper else 256,  # simulated training recordings, half positive
      caps="5,10,20,50,all" if paper else "5,all",  # the reduced-positives sweep's counts
      epochs=0 if paper else 4,  # each binary classifier's epochs; 0: classifier.epochs
    )
  )


SYN2REAL = runs.Evaluation(
  name="syn2real",
  title="Syn-to-Real (paper 002)",
  summary="simulated pre-training for AFIB, AFLT, PVC and WPW against NORM (experiments.syn2real)",
  keys=("leads", "class", "regime", "cap", "seed"),
  subdir=_subdir,
  required={"leads": str, "class": str, "regime": str, "seed": int, "test": dict},
  render=render,
  config=config,
)
