"""The TSTR protocol (paper 000 section 3, docs/design.md §5): draw, generate, train, score.

For a policy and seed s: draw with PRNGKey(s), generate the cohort (resumably,
in <run>/cohort), train the classifier on it, select the epoch on real fold 9,
score on real fold 10, and write <run>/metrics.json atomically. A run whose
metrics.json exists is skipped. Two evaluations (ecgjax/eval/runs.py) use it:
`tstr` (<root>/tstr/<policy>/seed_<s>/) and `blend` (section 6;
<root>/blend/frac_<f>/seed_<s>/); other evaluations reuse the `Harness`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from ecgjax import fingerprints, generators, metrics
from ecgjax import policies as policies_lib
from ecgjax.data.records import SAMPLING_RATE
from ecgjax.errors import ConfigError
from ecgjax.eval import judge as judge_lib
from ecgjax.eval import runs, salts, table1
from ecgjax.generators import cohort
from ecgjax.train import classifier as clf_lib

_SCORED = {"policy": str, "seed": int, "macro_auroc": (int, float), "buckets": dict}


def _check_fraction(record: dict) -> None:
  if not 0.0 <= record["real_fraction"] <= 1.0:
    raise ValueError(f"real_fraction {record['real_fraction']} is outside [0, 1]")


def config(preset: str) -> ConfigDict:
  """cfg.tstr: the cohort size `n`, the test positives a code needs to be scored
  (`min_test_positives`) and the bootstrap resamples of the confidence intervals."""
  paper = preset == "paper"
  return ConfigDict(
    dict(n=8000 if paper else 1024, min_test_positives=1, n_boot=1000 if paper else 200)
  )


TSTR = runs.Evaluation(
  name="tstr",
  title="TSTR by sampling policy (Table 1, Figure 1)",
  summary="train on a policy's synthetic cohort, test on real fold 10 (experiments.tstr)",
  keys=("policy", "seed"),
  subdir=lambda k: os.path.join(k["policy"], f"seed_{k['seed']}"),
  required=_SCORED,
  render=table1.render_tstr,
  config=config,
)
BLEND = runs.Evaluation(
  name="blend",
  title="Real + synthetic blend (Figure 2)",
  summary="a fraction of n real records, the rest real_matched synthetic (experiments.blend)",
  keys=("real_fraction", "seed"),
  subdir=lambda k: os.path.join(f"frac_{k['real_fraction']:g}", f"seed_{k['seed']}"),
  required={**_SCORED, "real_fraction": (int, float)},
  render=table1.render_blend,
  validate=_check_fraction,
)


def covered_columns(codes, generator_codes) -> np.ndarray:
  """Indices of the label columns a generator renders (all of them when it says None)."""
  if generator_codes is None:
    return np.arange(len(codes))
  missing = [c for c in generator_codes if c not in codes]
  if missing:
    raise ConfigError(f"the dataset's label set lacks {', '.join(missing)}")
  return np.array([list(codes).index(c) for c in generator_codes])


def policy_cohort(
  policy: str,
  key,
  n: int,
  out_dir: str,
  seed: int,
  *,
  gen,
  table,
  mesh,
  judge=None,
  shard_size: int | None = None,
  stop_after_shards: int | None = None,
  progress: bool = True,
) -> dict:
  """Writes (or finishes) the synthetic cohort a policy draws to `out_dir`, resumably, and
  returns its manifest; `cohort.read_cohort(out_dir)` then gives its signals, labels,
  cond and (dataset) rows. A judge policy's pool goes to out_dir/pool.

  Generated policies: one ECG per drawn tuple. Judge policies: a pool of
  `pool_factor x n` tuples is generated and scored by the judge (a
  (classifier, thresholds) pair), and the policy selects n of them; the
  selection is written as a cohort too, so `out_dir` always ends up holding
  the policy's cohort.
  """
  spec = policies_lib.get(policy)
  if spec.source == policies_lib.REAL:
    raise ConfigError(
      f"--policy={policy} trains on real records, not on generated signals: there is no cohort "
      f"to generate (use a policy with generated signals, e.g. real_matched)"
    )
  ds_rows = np.asarray(table.ds_rows)
  if spec.source == policies_lib.JUDGE_POOL:
    if judge is None:
      raise ConfigError(f"--policy={policy} needs the judge to score its pool")
    pool = spec.draw_pool(jax.random.fold_in(key, salts.JUDGE_POOL), table, n)
    pool_dir = os.path.join(out_dir, "pool")
    made = cohort.generate_cohort(
      gen, mesh, pool.cond, pool.labels, ds_rows[np.asarray(pool.rows)], pool_dir,
      seed=seed, shard_size=shard_size, stop_after_shards=stop_after_shards, progress=progress,
    )  # fmt: skip
    if not made["complete"]:
      return made
    # Read lazily: the judge and the selection touch one batch of rows at a time.
    pool_signals = cohort.read_cohort(pool_dir, lazy=True)["signals"]
    clf, thresholds = judge
    logits = clf.predict(pool_signals, mesh, logits=True)
    draw = spec.fn(
      key, table, n, pool=pool, judge_logits=logits, judge_probs=clf_lib.sigmoid(logits),
      thresholds=thresholds,
    )  # fmt: skip
    pick = np.asarray(draw.pool_index)
    cond = np.asarray(pool.cond)[pick]
    # The selection, as a cohort of its own: the pool's signals, the policy's labels.
    return cohort.write_cohort(
      lambda c, start: pool_signals[pick[start : start + len(c)]],
      cond,
      np.asarray(draw.labels),
      ds_rows[np.asarray(pool.rows)][pick],
      out_dir,
      seed=seed,
      shard_size=shard_size or cohort.DEFAULT_SHARD_SIZE,
      identity={**gen.identity, "policy": policy, "selected_from": "pool"},
      notes=gen.cohort_notes(cond),
      progress=progress,
    )
  draw = spec.fn(key, table, n)
  return cohort.generate_cohort(
    gen, mesh, draw.cond, draw.labels, ds_rows[np.asarray(draw.rows)], out_dir,
    seed=seed, shard_size=shard_size, stop_after_shards=stop_after_shards, progress=progress,
  )  # fmt: skip


class Harness:
  """Everything a TSTR run needs, loaded once per process and shared by seeds.

  The generator is `cfg.generator.kind`'s (docs/design.md §9); a generator
  that renders only some codes (the simulator) restricts training and scoring
  to those codes, for every policy of its runs.
  """

  def __init__(self, cfg, mesh, ds, workdir, *, progress=True):
    self.cfg, self.mesh, self.ds, self.workdir, self.progress = cfg, mesh, ds, workdir, progress
    self.kind = generators.for_config(cfg)
    self.root = runs.results_root(workdir, self.kind.name)
    self.table = policies_lib.make_table(ds)
    self.columns = covered_columns(ds.codes, self.kind.codes)
    self.codes = [ds.codes[i] for i in self.columns]
    self._gen = None
    self._judge = None

  @property
  def generator(self):
    if self._gen is None:
      self._gen = self.kind.load(self.cfg, self.ds, self.workdir)
      if self._gen.sampling_rate != SAMPLING_RATE:
        raise ConfigError(
          f"the {self.kind.name} generator makes {self._gen.sampling_rate} Hz signals; the "
          f"classifier and the real folds are {SAMPLING_RATE} Hz"
        )
    return self._gen

  @property
  def judge(self):
    if self._judge is None:
      self._judge = judge_lib.load(self.workdir, self.cfg)
    return self._judge

  def draw_signals(self, policy: str, key, n: int, run_dir: str, seed: int):
    """(signals, labels (n, 71), generator budget) of the training cohort of a policy;
    generated signals are a lazily read `ShardedArray` (index it, or np.asarray it whole).

    Dispatches on the registry's `source`: real signals, one generated ECG per
    drawn tuple, or a judge-scored generated pool the policy selects from.
    """
    spec = policies_lib.get(policy)
    if spec.source == policies_lib.REAL:
      draw = spec.fn(key, self.table, n)
      rows = np.asarray(self.table.ds_rows)[np.asarray(draw.rows)]
      return np.asarray(self.ds.signals[rows]), np.asarray(draw.labels), spec.generator_budget(n)
    out = os.path.join(run_dir, "cohort")
    policy_cohort(
      policy,
      key,
      n,
      out,
      seed,
      gen=self.generator,
      table=self.table,
      mesh=self.mesh,
      judge=self.judge if spec.source == policies_lib.JUDGE_POOL else None,
      progress=self.progress,
    )
    # The signals stay on disk (a ShardedArray read batch by batch by the classifier's grain
    # pipeline), so a cohort larger than memory trains; the labels are small.
    made = cohort.read_cohort(out, lazy=True)
    return made["signals"], np.asarray(made["labels"]), spec.generator_budget(n)

  def fit(
    self, signals, labels, seed, run_dir, *, val=None, classifier=None, init=None,
    pos_weight=None, desc: str = "classifier",
  ):  # fmt: skip
    """The one classifier path of the evaluations: trains on (signals, labels) with its
    epoch picked on `val` = (signals, labels), checkpoints under run_dir/classifier.

    classifier: the classifier config (default: the classifier section); init: start from
    these weights (fine-tuning); pos_weight: per-label weight of the positives."""
    return clf_lib.train_classifier(
      self.cfg.classifier if classifier is None else classifier,
      signals,
      labels,
      *val,
      mesh=self.mesh,
      ckpt_dir=os.path.join(run_dir, "classifier"),
      seed=seed,
      progress=self.progress,
      desc=desc,
      pos_weight=pos_weight,
      init_variables=init,
    )

  def fit_and_score(self, signals, labels, seed, run_dir, *, columns=None, init=None):
    """Trains the classifier on (signals, labels[:, columns]) with its epoch picked on real
    fold 9, scores it on real fold 10; returns (classifier, metrics.summarize's dict).

    columns: the label columns it learns and is scored on (default: the generator's
    codes); init: start from these weights (fine-tuning) instead of a fresh model.
    """
    ds = self.ds
    va, te = np.flatnonzero(ds.val_mask), np.flatnonzero(ds.test_mask)
    val_signals, test_signals = np.asarray(ds.signals[va]), np.asarray(ds.signals[te])
    cols = self.columns if columns is None else np.asarray(columns)
    clf = self.fit(
      signals, np.asarray(labels)[:, cols], seed, run_dir,
      val=(val_signals, ds.labels[va][:, cols]), init=init,
    )  # fmt: skip
    summary = metrics.summarize(
      ds.labels[te][:, cols],
      clf.predict(test_signals, self.mesh),
      ds.labels[va][:, cols],
      clf.predict(val_signals, self.mesh),
      ds.labels[ds.train_mask][:, cols],
      [ds.codes[i] for i in cols],
      min_test_positives=self.cfg.tstr.min_test_positives,
      n_boot=self.cfg.tstr.n_boot,
      seed=seed,
    )
    return clf, summary

  def run(
    self,
    policy: str,
    seed: int,
    *,
    n: int | None = None,
    real_fraction: float | None = None,
  ) -> tuple[dict, bool]:
    """One TSTR run (or, with real_fraction, one blend run); returns (metrics, skipped)."""
    n = self.cohort_size(n)
    if real_fraction is not None:
      run = BLEND.run(self.root, real_fraction=real_fraction, seed=seed)
    else:
      run = TSTR.run(self.root, policy=policy, seed=seed)

    def make(run: runs.Run) -> dict:
      run.scratch("cohort")  # with the classifier's checkpoints: only for resumption
      t0 = time.perf_counter()
      if real_fraction is not None:
        n_real = int(round(real_fraction * n))
        parts = []
        if n_real:
          key = salts.key(seed, salts.BLEND_REAL)
          parts.append(self.draw_signals("real_subset", key, n_real, run.dir, seed))
        if n - n_real:
          key = salts.key(seed, salts.BLEND_SYNTHETIC)
          parts.append(self.draw_signals("real_matched", key, n - n_real, run.dir, seed))
        signals = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        budget = sum(p[2] for p in parts)
      else:
        signals, labels, budget = self.draw_signals(policy, salts.key(seed), n, run.dir, seed)
      t1 = time.perf_counter()
      clf, summary = self.fit_and_score(signals, labels, seed, run.dir)
      t2 = time.perf_counter()
      record = {
        "policy": policy,
        "seed": seed,
        "generator": self.kind.name,
        "codes": self.codes,
        "n_train": int(len(signals)),
        "generator_budget": int(budget),
        **self.scored(summary, clf),
        "metrics": summary,
        "data_key": self.ds.content_key,
        "timings": {"draw_and_generate_s": t1 - t0, "classifier_s": t2 - t1, "total_s": t2 - t0},
      }
      if real_fraction is not None:
        record["real_fraction"] = real_fraction
      elif policies_lib.get(policy).report is not None:
        record["policy_report"] = policies_lib.get(policy).report(self.table, list(self.ds.codes))
      return record

    return run.execute(self.identity(policy, seed, n, real_fraction), make, config=self.cfg)

  def cohort_size(self, n: int | None = None) -> int:
    """The training set's size of a run: n, or the config's tstr.n."""
    return int(n or self.cfg.tstr.n)

  @staticmethod
  def scored(summary: dict, clf) -> dict:
    """The fields every classifier-scoring record carries (metrics.summarize's headline
    figures and the epoch the classifier kept)."""
    return {
      "macro_auroc": summary["macro_auroc"],
      "buckets": summary["buckets"],
      "per_code": summary["per_code"],
      "n_evaluable": summary["n_evaluable"],
      "best_epoch": clf.best_epoch,
      "val_macro_auroc": clf.val_auroc,
    }

  def identity(self, policy: str, seed: int, n: int, real_fraction=None) -> dict:
    """What decides a TSTR or blend run's metrics (a finished run is reused only when it
    agrees): the policy, seed and n, and `settings` with the generator where it makes
    signals and the judge where a judge policy uses it."""
    source = policies_lib.get(policy).source if real_fraction is None else None
    generated = (real_fraction is not None and real_fraction < 1) or source not in (
      None,
      policies_lib.REAL,
    )
    ident = {
      "policy": policy,
      "seed": int(seed),
      "n": int(n),
      **self.settings(generator=generated, judge=source == policies_lib.JUDGE_POOL),
    }
    if real_fraction is not None:
      ident["real_fraction"] = float(real_fraction)
    return ident

  def settings(self, *, generator: bool = False, judge: bool = False) -> dict:
    """The settings every evaluation on this harness is made with: the classifier, the
    scoring, the data and codes, and (when asked) the generator's identity (weights,
    sampler settings) and the judge's. Progress bars and logging are not part of it."""
    c = self.cfg
    out = {
      "classifier": fingerprints.describe(c.classifier),
      "tstr": {"min_test_positives": c.tstr.min_test_positives, "n_boot": c.tstr.n_boot},
      "data_key": self.ds.content_key,
      "codes": list(self.codes),
    }
    if generator:
      out["generator"] = self.generator.identity
    if judge:
      clf, thresholds = self.judge
      out["judge"] = {
        "best_epoch": clf.best_epoch,
        "val_auroc": clf.val_auroc,
        "thresholds": fingerprints.fingerprint(np.asarray(thresholds).tolist()),
      }
    return out


def parse_seeds(text: str) -> list[int]:
  return runs.parse_list(
    text, int, flag="--seeds", expected="comma-separated non-negative integers, e.g. 0,1,2",
    ok=lambda s: s >= 0,
  )  # fmt: skip


def check_n(n):
  if n is not None and n <= 0:
    raise ConfigError(f"--n must be a positive integer, got {n}")
  return n


def print_table(rows):
  print(
    f"{'policy':22s} {'seed':>4s} {'n':>6s} {'macro':>7s} {'common':>7s} {'moderate':>8s} {'rare':>7s}  codes"
  )
  fmt = lambda v: f"{v:.4f}" if v is not None else "   -  "
  for r, skipped in rows:
    b = r["buckets"]
    print(
      f"{r['policy']:22s} {r['seed']:4d} {r['n_train']:6d} {fmt(r['macro_auroc']):>7s} "
      f"{fmt(b['common']):>7s} {fmt(b['moderate']):>8s} {fmt(b['rare']):>7s}  {r['n_evaluable']}"
      + ("  (finished earlier)" if skipped else "")
    )
