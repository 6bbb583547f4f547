"""Fidelity and privacy audit of a synthetic cohort (docs/design.md §10).

A cohort is judged against real PTB-XL records in three ways, every figure
computed the same way for three candidate sets so each table reads against
its references:

  synthetic   the cohort (a random subset of `audit.max_records`);
  real train  real train-fold records (folds 1-8) treated as if they were the
              synthetic set: what perfect fidelity and no privacy look like;
  real held-out  the validation fold (9): real records the generator never saw,
              the target a generator should look like.

Fidelity compares each candidate with the comparison set, the test fold (10):

- lead consistency: the Einthoven and Goldberger residuals (ecgjax.fidelity.leads);
- amplitude: each lead's standard deviation over the candidate's records against
  the test fold's (ratio; 1 is the target);
- clinical measurements (neurokit2: heart rate, PR, QRS, QT, R amplitude per
  lead) on up to `audit.clinical_records` records per set, their distributions
  against the test fold's by Wasserstein distance, also per class where both
  sets have `audit.min_class_records` records of it;
- distances in the judge's penultimate-layer embedding (128 units): Frechet
  distance, MMD^2 (Gaussian kernel, median-heuristic bandwidth),
  precision/recall/density/coverage (k = `audit.prdc_k`) and the held-out
  AUROC of a logistic-regression detector of candidate vs real (0.5 is best).

Privacy compares each candidate with the training records, in the embedding
and in signal space (each lead standardised with the train folds' statistics,
flattened):

- memorisation: the fraction of candidates closer to their nearest training
  record than the `audit.memorisation_quantile` quantile of the test fold's
  nearest-training-record distances (about that quantile when nothing is
  memorised; 1 for copies), and the median distance ratio;
- membership inference: members (training records) against non-members (test
  records) scored by their distance to the nearest candidate; AUROC (0.5 means
  the candidate set does not tell them apart). The real-train row contains the
  members themselves: its AUROC of 1 is what a leak looks like.

All candidate sets have the same size (the smallest of the cohort, the train
folds, the held-out fold and `audit.max_records`), since the distances depend
on it. The audit writes <workdir>/audit/<name>/{audit.json, audit.md,
audit.html, *.png}, `audit.json` holding every figure; it is the `audit`
evaluation, so `experiments.report` finds and links it.
"""

from __future__ import annotations

import hashlib
import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ecgjax.data.signals import lead_stats, limb_residuals, standardise  # noqa: E402
from ecgjax.errors import ConfigError  # noqa: E402
from ecgjax.eval import runs  # noqa: E402
from ecgjax.eval.render import html_page, markdown, save_figure, write_text  # noqa: E402
from ecgjax.fidelity import clinical, distances, leads, privacy  # noqa: E402

RESULT = "audit.json"
SYNTHETIC, TRAIN, HELDOUT = "synthetic", "real train", "real held-out"
ROWS = (SYNTHETIC, TRAIN, HELDOUT)
TARGET = "real test"
LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _subset(rng, idx: np.ndarray, n: int) -> np.ndarray:
  return np.sort(rng.choice(idx, size=n, replace=False)) if len(idx) > n else np.asarray(idx)


class Audit:
  """The sets and models an audit compares; `run(name, signals, labels)` audits a cohort."""

  def __init__(self, cfg, mesh, ds, workdir: str, judge, *, progress: bool = True):
    self.cfg, self.mesh, self.ds, self.workdir, self.progress = cfg, mesh, ds, workdir, progress
    self.acfg = cfg.audit
    self.judge = judge
    self.train_rows = np.flatnonzero(ds.train_mask)
    self.heldout_rows = np.flatnonzero(ds.val_mask)
    self.test_rows = np.flatnonzero(ds.test_mask)
    if min(len(self.train_rows), len(self.heldout_rows), len(self.test_rows)) < 2:
      raise ConfigError(
        "the audit needs at least 2 records in each of the train, val and test folds"
      )
    self.mean, self.std = lead_stats(ds.signals, self.train_rows)

  def identity(self, signals, labels, about: dict) -> dict:
    """What decides an audit's record: the cohort (a digest of its signals and labels, and
    what the caller says it is), the audit settings, the judge and the data."""
    h = hashlib.blake2b(digest_size=12)
    for a in (np.asarray(signals, np.float32), np.asarray(labels, np.float32)):
      h.update(str(a.shape).encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return {
      "cohort": h.hexdigest(),
      "about": about,
      "audit": self.acfg.to_dict(),
      "judge": {"best_epoch": self.judge.best_epoch, "val_auroc": self.judge.val_auroc},
      "data_key": self.ds.content_key,
    }

  def _flat(self, signals) -> np.ndarray:
    """Signal space: each lead standardised with the train folds' statistics, flattened."""
    x = standardise(np.asarray(signals, np.float32), self.mean, self.std)
    return x.reshape(len(x), -1)

  def run(self, name: str, signals: np.ndarray, labels: np.ndarray, *, about: dict) -> dict:
    """Audits one cohort ((n, 12, 1000) signals, (n, 71) labels); writes and returns the record.
    A finished audit of `name` is returned only when it audited these records with these
    settings (runs.Run.execute)."""
    run = AUDIT.run(self.workdir, name=name)
    files: dict = {}
    record, skipped = run.execute(
      self.identity(signals, labels, about),
      lambda run: self._measure(run, name, signals, labels, about, files),
      config=self.acfg,
      scratch=(),
    )
    if not skipped and jax.process_index() == 0:
      text = to_markdown(record, files)
      write_text(os.path.join(run.dir, "audit.md"), text)
      write_text(os.path.join(run.dir, "audit.html"), html_page(f"audit: {name}", text))
    return record

  def _measure(self, run, name, signals, labels, about, files: dict) -> dict:
    """The audit's own fields (its five stages); `files` gets the figures written."""
    t0 = time.perf_counter()
    a, ds = self.acfg, self.ds
    if signals.shape[1:] != ds.signals.shape[1:]:
      raise ConfigError(
        f"audit {name}: cohort signals are {signals.shape[1:]}, the real records "
        f"{ds.signals.shape[1:]}"
      )
    rng = np.random.default_rng(a.seed)
    n = int(min(len(signals), len(self.train_rows), len(self.heldout_rows), a.max_records))
    pick = _subset(rng, np.arange(len(signals)), n)
    train_rows = _subset(rng, self.train_rows, n)
    heldout_rows = _subset(rng, self.heldout_rows, n)
    sets = {
      SYNTHETIC: (np.asarray(signals)[pick], np.asarray(labels)[pick] > 0.5),
      TRAIN: (np.asarray(ds.signals[train_rows]), ds.labels[train_rows]),
      HELDOUT: (np.asarray(ds.signals[heldout_rows]), ds.labels[heldout_rows]),
    }
    target = (np.asarray(ds.signals[self.test_rows]), ds.labels[self.test_rows])
    all_train = np.asarray(ds.signals[self.train_rows])
    steps = tqdm(total=5, desc=f"audit {name}", disable=not self.progress or jax.process_index())

    steps.set_postfix_str("lead consistency, amplitude")
    residuals = {k: leads.residual_summary(v[0]) for k, v in sets.items()}
    residuals[TARGET] = leads.residual_summary(target[0])
    amplitude = self._amplitude(sets, target[0])
    steps.update()

    steps.set_postfix_str("judge embeddings")
    emb = {k: self.judge.embed(v[0], self.mesh) for k, v in sets.items()}
    emb_target = self.judge.embed(target[0], self.mesh)
    emb_train = self.judge.embed(all_train, self.mesh)
    embedding = {k: self._distances(emb_target, e) for k, e in emb.items()}
    steps.update()

    steps.set_postfix_str("privacy")
    spaces = {
      "embedding": (emb, emb_train, emb_target),
      "signal": (
        {k: self._flat(v[0]) for k, v in sets.items()},
        self._flat(all_train),
        self._flat(target[0]),
      ),
    }
    priv, privacy_fig = self._privacy(spaces, train_rows)
    steps.update()

    steps.set_postfix_str("clinical measurements (neurokit2)")
    clin, clin_frames = self._clinical(sets, target)
    steps.update()

    steps.set_postfix_str("tables and figures")
    record = {
      "name": name,
      "about": about,
      "n_per_set": n,
      "embedding_dim": int(emb_target.shape[1]),
      "n_target": int(len(self.test_rows)),
      "n_train_records": int(len(self.train_rows)),
      "sets": {SYNTHETIC: "the cohort", TRAIN: "folds 1-8", HELDOUT: "fold 9", TARGET: "fold 10"},
      "lead_residuals": residuals,
      "amplitude": amplitude,
      "embedding": embedding,
      "privacy": priv,
      "clinical": clin,
      "data_key": ds.content_key,
    }
    files.update(
      self._figures(run.dir, residuals, sets, target, clin_frames, privacy_fig, emb, emb_target)
    )
    record["seconds"] = time.perf_counter() - t0
    steps.update()
    steps.close()
    return record

  def _distances(self, target: np.ndarray, e: np.ndarray) -> dict:
    """One set's distribution distances to the target in the judge's embedding."""
    a = self.acfg
    return {
      "frechet": distances.frechet_distance(target, e),
      **_mmd(target, e),
      **distances.prdc(target, e, k=a.prdc_k),
      "detection_auroc": distances.detection_auroc(target, e, seed=a.seed)["auroc"],
    }

  def _privacy(self, spaces: dict, train_rows: np.ndarray) -> tuple[dict, dict]:
    """Memorisation and membership inference of each set in each space; spaces:
    {space: ({set: candidates}, all train records, target records)}, the members being
    the first of `train_rows` (as many as there are test records). Returns (the record's
    privacy fields, the nearest-training-record distances to plot)."""
    members = np.arange(min(len(train_rows), len(self.test_rows)))
    priv, fig = {}, {}
    for space, (cand, train_x, target_x) in spaces.items():
      if space == "embedding":
        member_x = cand[TRAIN][members]
      else:
        member_x = self._flat(self.ds.signals[train_rows[members]])
      nonmember_x = target_x[: len(members)]
      for k, c in cand.items():
        mem = privacy.memorisation(c, train_x, target_x, quantile=self.acfg.memorisation_quantile)
        mia = privacy.membership_inference(member_x, nonmember_x, c)
        priv.setdefault(k, {})[space] = {
          "memorised_fraction": mem["fraction_closer"],
          "threshold": mem["threshold"],
          "distance_ratio": mem["median_ratio"],
          "mia_auroc": mia["auroc"],
          "mia_auroc_density": mia["auroc_density"],
        }
        fig.setdefault(space, {})[k] = mem["synth_to_train"]
      fig[space][TARGET] = mem["holdout_to_train"]
    return priv, fig

  def _amplitude(self, sets, target) -> dict:
    ref = target.std(axis=(0, 2))
    out = {}
    for k, (x, _) in sets.items():
      ratio = x.std(axis=(0, 2)) / np.where(ref > 0, ref, np.nan)
      out[k] = {
        "std_ratio_mean": float(np.nanmean(ratio)),
        "std_ratio_min": float(np.nanmin(ratio)),
        "std_ratio_max": float(np.nanmax(ratio)),
        "per_lead": dict(zip(LEAD_NAMES, map(float, ratio))),
      }
    return out

  def _clinical(self, sets, target):
    a = self.acfg
    rng = np.random.default_rng(a.seed + 1)
    cap = int(a.clinical_records)
    frames, labels = {}, {}
    for k, (x, y) in [*sets.items(), (TARGET, target)]:
      pick = _subset(rng, np.arange(len(x)), cap)
      frames[k] = clinical.measure(x[pick], sampling_rate=100, progress=self.progress)
      labels[k] = y[pick]
    out = {"all": {}, "per_class": {}, "n_measured": {k: int(len(f)) for k, f in frames.items()}}
    for k in ROWS:
      out["all"][k] = _compare(frames[TARGET], frames[k])
    codes = list(self.ds.codes)
    for c, code in enumerate(codes):
      have = {k: labels[k][:, c] for k in frames}
      if min(int(h.sum()) for h in have.values()) < a.min_class_records:
        continue
      out["per_class"][code] = {
        k: _compare(frames[TARGET][have[TARGET]], frames[k][have[k]]) for k in ROWS
      }
    return out, frames

  def _figures(self, out, residuals, sets, target, clin, priv, emb, emb_target) -> dict:
    if jax.process_index() != 0:
      return {}
    files = {}
    files["lead_residuals.png"] = _plot_residuals(
      sets, target[0], os.path.join(out, "lead_residuals.png")
    )
    files["clinical.png"] = _plot_clinical(clin, os.path.join(out, "clinical.png"))
    files["nn_distances.png"] = _plot_privacy(priv, os.path.join(out, "nn_distances.png"))
    files["embedding_pca.png"] = _plot_embedding(
      emb, emb_target, os.path.join(out, "embedding_pca.png")
    )
    files["examples.png"] = _plot_examples(sets, target[0], os.path.join(out, "examples.png"))
    return files


def _mmd(a, b) -> dict:
  out = distances.mmd2(a, b)
  return {"mmd2": out["mmd2"], "mmd_bandwidth": out["bandwidth"]}


def _compare(real: pd.DataFrame, cand: pd.DataFrame) -> dict:
  """{measure: {wasserstein, real_median, set_median, ...}} for the measured columns."""
  table = clinical.compare(real, cand, names=("real", "set")).reset_index()
  return {
    str(r["measure"]): {k: _num(v) for k, v in r.items() if k != "measure"}
    for r in table.to_dict("records")
  }


def _num(v):
  if isinstance(v, (int, np.integer)):
    return int(v)
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  return f if np.isfinite(f) else None


# ---------------------------------------------------------------------------- figures

_COLORS = {SYNTHETIC: "tab:red", TRAIN: "tab:gray", HELDOUT: "tab:blue", TARGET: "black"}


def _plot_residuals(sets, target, path):
  fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), sharey=True)
  names = list(sets) + [TARGET]
  data = {k: limb_residuals(v[0]) for k, v in sets.items()}
  data[TARGET] = limb_residuals(target)
  for ax, ident in zip(axes, ("einthoven", "avr", "avl", "avf")):
    vals = [100 * np.asarray(data[k][ident]) for k in names]
    ax.boxplot(vals, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(
      {
        "einthoven": "I + III - II",
        "avr": "aVR + (I+II)/2",
        "avl": "aVL - I + II/2",
        "avf": "aVF - II + I/2",
      }[ident],
      fontsize=9,
    )
    ax.grid(axis="y", lw=0.3)
  axes[0].set_ylabel("% of limb-lead mean |amplitude|")
  fig.suptitle("Lead-identity residuals per record", fontsize=10)
  fig.tight_layout()
  return save_figure(fig, path)


def _plot_clinical(frames, path):
  shown = [*clinical.MEASURES, "r_amp_II", "r_amp_V5"]
  measures = [m for m in shown if m in frames[TARGET] and frames[TARGET][m].notna().any()]
  cols = 3
  rows = max(1, -(-len(measures) // cols))
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
  for ax, m in zip(axes.flat, measures):
    allv = np.concatenate([frames[k][m].dropna().to_numpy(float) for k in frames])
    if not len(allv):
      continue
    bins = np.linspace(np.percentile(allv, 1), np.percentile(allv, 99) + 1e-9, 25)
    for k in (TARGET, HELDOUT, SYNTHETIC):
      v = frames[k][m].dropna().to_numpy(float)
      if len(v):
        ax.hist(
          v,
          bins=bins,
          density=True,
          histtype="step",
          lw=1.4,
          color=_COLORS[k],
          label=f"{k} (n={len(v)})",
        )
    ax.set_title(m, fontsize=9)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(measures) :]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.suptitle("Clinical measurements (neurokit2), synthetic vs real", fontsize=10)
  fig.tight_layout()
  return save_figure(fig, path)


def _plot_privacy(priv, path):
  fig, axes = plt.subplots(1, len(priv), figsize=(5.5 * len(priv), 3.4), squeeze=False)
  for ax, (space, d) in zip(axes.flat, priv.items()):
    allv = np.concatenate([np.asarray(v) for v in d.values()])
    bins = np.linspace(0, np.percentile(allv, 99.5) + 1e-9, 40)
    for k, v in d.items():
      ax.hist(
        np.asarray(v), bins=bins, density=True, histtype="step", lw=1.4, color=_COLORS[k], label=k
      )
    ax.set_title(f"distance to the nearest training record ({space})", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return save_figure(fig, path)


def _plot_embedding(emb, target, path):
  allx = np.concatenate([target, *emb.values()])
  mu = allx.mean(0)
  _, _, vt = np.linalg.svd(allx - mu, full_matrices=False)
  proj = lambda x: (x - mu) @ vt[:2].T
  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  for k, x in [(TARGET, target), *emb.items()]:
    p = proj(x)
    ax.scatter(p[:, 0], p[:, 1], s=8, alpha=0.6, color=_COLORS[k], label=k)
  ax.set_title("Judge embedding, first two principal components", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return save_figure(fig, path)


def _plot_examples(sets, target, path, n: int = 2):
  fig, axes = plt.subplots(12, 2 * n, figsize=(3.2 * 2 * n, 9), sharex=True)
  t = np.arange(target.shape[-1]) / 100.0
  for j in range(n):
    for col, (k, x) in enumerate(((TARGET, target), (SYNTHETIC, sets[SYNTHETIC][0]))):
      c = 2 * j + col
      for lead in range(12):
        ax = axes[lead, c]
        ax.plot(t, x[j, lead], lw=0.6, color=_COLORS[k])
        ax.set_yticks([])
        if c == 0:
          ax.set_ylabel(LEAD_NAMES[lead], fontsize=7, rotation=0, labelpad=12)
      axes[0, c].set_title(f"{k} #{j}", fontsize=8)
  fig.tight_layout(h_pad=0.1)
  return save_figure(fig, path, dpi=90)


# ---------------------------------------------------------------------------- report text


def _f(v, digits=3, pct=False):
  if v is None or (isinstance(v, float) and not np.isfinite(v)):
    return "n/a"
  return f"{100 * v:.{max(digits - 2, 1)}f} %" if pct else f"{v:.{digits}f}"


def _md_header(r: dict, rows: list[str]) -> list[str]:
  """The title and what the sets are."""
  return [
    f"# Audit: {r['name']}",
    "",
    f"Cohort: {r['about'].get('source', '?')}. Each candidate set has {r['n_per_set']} records; "
    f"the comparison set is the real test fold ({r['n_target']} records); privacy is measured "
    f"against all {r['n_train_records']} training records. Reference rows: `{TRAIN}` (training "
    f"records as if synthetic: perfect fidelity, no privacy) and `{HELDOUT}` (real records no "
    "model saw: the target).",
    "",
    "## Lead consistency (median residual, % of the limb leads' mean amplitude)",
    "",
  ]


def _md_leads(r: dict, rows: list[str]) -> list[str]:
  """Lead consistency: the median residual of each identity per set."""
  lines = []
  res = r["lead_residuals"]
  df = pd.DataFrame(
    [
      {
        "set": k,
        **{
          ident: _f(res[k][ident]["median"], pct=True)
          for ident in ("einthoven", "avr", "avl", "avf")
        },
      }
      for k in [*rows, TARGET]
    ]
  )
  lines += [markdown(df), "![residuals](lead_residuals.png)", ""]
  return lines


def _md_amplitude(r: dict, rows: list[str]) -> list[str]:
  """Amplitude: each lead's std against the test fold's."""
  lines = []
  amp = r["amplitude"]
  df = pd.DataFrame(
    [
      {
        "set": k,
        "std ratio, mean over leads": _f(amp[k]["std_ratio_mean"]),
        "min": _f(amp[k]["std_ratio_min"]),
        "max": _f(amp[k]["std_ratio_max"]),
      }
      for k in rows
    ]
  )
  lines += [
    "## Amplitude (each lead's std against the test fold's; target 1)",
    "",
    markdown(df),
    "",
  ]
  return lines


def _md_embedding(r: dict, rows: list[str]) -> list[str]:
  """Distribution distances in the judge's embedding."""
  lines = []
  emb = r["embedding"]
  df = pd.DataFrame(
    [
      {
        "set": k,
        "Frechet": _f(emb[k]["frechet"]),
        "MMD²": _f(emb[k]["mmd2"], 4),
        "precision": _f(emb[k]["precision"]),
        "recall": _f(emb[k]["recall"]),
        "density": _f(emb[k]["density"]),
        "coverage": _f(emb[k]["coverage"]),
        "detection AUROC": _f(emb[k]["detection_auroc"]),
      }
      for k in rows
    ]
  )
  lines += [
    "## Distribution distances in the judge's embedding (against the test fold)",
    "",
    "Lower Frechet and MMD² are closer; precision, recall, density and coverage near the "
    "real held-out row. The judge was trained on the train folds, so the real-train row also "
    "shows how differently it embeds records it has seen; the held-out row is the target. "
    "Detection AUROC 0.5 means a classifier cannot tell the set from real "
    f"records (MMD bandwidth {_f(emb[SYNTHETIC]['mmd_bandwidth'])}, median heuristic)."
    + (
      f" With {r['n_per_set']} records per set in a {r.get('embedding_dim', 128)}-dimensional "
      "embedding the covariances are singular and the Frechet distance is mostly estimation "
      "noise: read it against the reference rows only."
      if r["n_per_set"] <= r.get("embedding_dim", 128)
      else ""
    ),
    "",
    markdown(df),
    "![embedding](embedding_pca.png)",
    "",
  ]
  return lines


def _md_clinical(r: dict, rows: list[str]) -> list[str]:
  """Clinical measurements (neurokit2), overall and per class."""
  lines = []
  clin = r["clinical"]
  measures = list(clin["all"][SYNTHETIC])
  df = pd.DataFrame(
    [
      {
        "measure": m,
        f"{TARGET} median": _f(clin["all"][SYNTHETIC][m].get("real_median"), 1),
        **{f"{k} median": _f(clin["all"][k][m].get("set_median"), 1) for k in rows},
        **{f"W1 {k}": _f(clin["all"][k][m].get("wasserstein"), 2) for k in rows},
      }
      for m in measures
    ]
  )
  lines += [
    "## Clinical measurements (neurokit2; Wasserstein distance W1 to the test fold)",
    "",
    "Records measured: " + ", ".join(f"{k} {v}" for k, v in clin["n_measured"].items()) + ".",
    "",
    markdown(df),
    "![clinical](clinical.png)",
    "",
  ]
  if clin["per_class"]:
    lines += ["Per class (W1 of heart rate, QRS and R amplitude in II):", ""]
    rows_pc = []
    for code, by in clin["per_class"].items():
      for k in rows:
        rows_pc.append(
          {
            "class": code,
            "set": k,
            **{
              m: _f(by[k].get(m, {}).get("wasserstein"), 2)
              for m in ("heart_rate", "qrs_ms", "r_amp_II")
            },
          }
        )
    lines += [markdown(pd.DataFrame(rows_pc)), ""]
  return lines


def _md_privacy(r: dict, rows: list[str]) -> list[str]:
  """Memorisation and membership inference, then the examples figure."""
  lines = []
  priv = r["privacy"]
  df = pd.DataFrame(
    [
      {
        "set": k,
        **{
          f"{label} ({space})": _f(priv[k][space][key], pct=key == "memorised_fraction")
          for space in ("embedding", "signal")
          for key, label in (
            ("memorised_fraction", "memorised"),
            ("distance_ratio", "NN distance ratio"),
            ("mia_auroc", "MIA AUROC"),
          )
        },
      }
      for k in rows
    ]
  )
  q = r["config"]["memorisation_quantile"]
  lines += [
    "## Privacy",
    "",
    f"memorised: fraction closer to a training record than the {100 * q:g} % quantile of test "
    f"records' nearest-training-record distances (about {100 * q:g} % when nothing is memorised); "
    "NN distance ratio: median distance to the nearest training record over the test records' "
    "median; MIA AUROC: members vs non-members by distance to the nearest candidate (0.5: no leak).",
    "",
    markdown(df),
    "![distances](nn_distances.png)",
    "",
    "## Examples (real test fold vs synthetic)",
    "",
    "![examples](examples.png)",
    "",
  ]
  return lines


def to_markdown(record: dict, files: dict | None = None) -> str:
  """The audit's page: one section per measurement family (each a function above)."""
  rows = list(ROWS)
  lines = []
  for section in (_md_header, _md_leads, _md_amplitude, _md_embedding, _md_clinical, _md_privacy):
    lines += section(record, rows)
  return "\n".join(lines)


def render(records: list[dict], out: str) -> tuple[str, dict[str, str]]:
  """The report's audit section: one row per audit, its headline figures and links."""
  rows = []
  for r in sorted(records, key=lambda r: r["name"]):
    rel = os.path.relpath(os.path.dirname(r["path"]), out)
    s = r["embedding"][SYNTHETIC]
    rows.append(
      f"| [{r['name']}]({rel}/audit.md) ([html]({rel}/audit.html)) "
      f"| {_f(r['lead_residuals'][SYNTHETIC]['einthoven']['median'], pct=True)} "
      f"| {_f(r['amplitude'][SYNTHETIC]['std_ratio_mean'])} | {_f(s['frechet'])} "
      f"| {_f(s['detection_auroc'])} "
      f"| {_f(r['privacy'][SYNTHETIC]['embedding']['memorised_fraction'], pct=True)} "
      f"| {_f(r['privacy'][SYNTHETIC]['embedding']['mia_auroc'])} |"
    )
  md = (
    "| audit | Einthoven residual | amplitude ratio | Frechet | detection AUROC "
    "| memorised | MIA AUROC |\n| --- | --- | --- | --- | --- | --- | --- |\n"
    + "\n".join(rows)
    + "\n"
  )
  return md, {}


def config(preset: str) -> ConfigDict:
  """cfg.audit: the records per candidate set (every set gets the same size), the records
  measured with neurokit2 per set, the per-class minimum of the clinical comparisons, the
  neighbours of precision/recall/density/coverage, the memorisation quantile (of the test
  records' nearest-training-record distances) and the seed of the subsets."""
  paper = preset == "paper"
  return ConfigDict(
    dict(
      max_records=2000 if paper else 512,
      clinical_records=2000 if paper else 512,
      min_class_records=20 if paper else 10,
      prdc_k=5,
      memorisation_quantile=0.05,
      seed=0,
    )
  )


AUDIT = runs.Evaluation(
  name="audit",
  title="Fidelity and privacy audits",
  summary="a cohort against real records: lead identities, clinical measurements, embedding "
  "distances, memorisation, membership inference (experiments.audit)",
  keys=("name",),
  subdir=lambda k: k["name"],
  result=RESULT,
  requires={"neurokit2": "pip install -e '.[audit]'"},
  required={"name": str, "embedding": dict, "privacy": dict, "lead_residuals": dict},
  render=render,
  config=config,
)
