"""Table 1 and Figures 1-2 of the policy survey: the report's TSTR and blend sections.

Renders the runs `runs.collect` finds for the `tstr` and `blend` evaluations
(ecgjax/eval/tstr.py) and aggregates over whatever seeds are there: a sweep
that is still running, or one where a seed was lost, still gives a report,
and the `seeds` column says how many runs each row rests on. The spread is
the sample standard deviation (ddof=1), the paper's "±"; it is undefined (NaN)
for a single seed, which the table prints as a bare mean, as the paper does.

A report is made on a laptop from a copied workdir; nothing here runs a model.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ecgjax.data import table  # noqa: E402
from ecgjax.eval.render import save_figure, to_csv, write_text  # noqa: E402
from ecgjax.eval.runs import fmt_mean_std, mean_std  # noqa: E402
from ecgjax.policies import registry  # noqa: E402

# Table 1's rows, grouped by failure mode (paper section 5), in the paper's order:
# read from the policy registry, the one place a policy is named.
GROUPS: dict[str, tuple[str, ...]] = {
  family: tuple(s.name for s in registry.REGISTRY.values() if s.family == family)
  for family in registry.FAMILIES
}
OTHER = "Other"  # policies found in a workdir that Table 1 does not name
POLICY_ORDER = tuple(p for ps in GROUPS.values() for p in ps)
GROUP_OF = {p: g for g, ps in GROUPS.items() for p in ps}
CEILING, BASELINE = registry.with_role(registry.CEILING), registry.with_role(registry.BASELINE)
ROLE = {CEILING: registry.CEILING, BASELINE: registry.BASELINE}
BUCKETS = table.BUCKETS
COLUMNS = ["group", "policy", "macro", "macro_std", *BUCKETS, "seeds"]
DDOF = 1  # sample std over seeds, as the paper's ±
_PALETTE = ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red", "tab:olive")
GROUP_COLORS = {**dict(zip(registry.FAMILIES, _PALETTE)), OTHER: "tab:brown"}


def _number_or_nan(x) -> float:
  """A bucket with no evaluable code is stored as null; it averages as missing."""
  return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _mean_std(values) -> tuple[float, float]:
  """Mean and sample std (ddof=1) over the finite values; std is NaN below two."""
  mean, std, _ = mean_std(values, ddof=DDOF)
  return mean, std


def table1(runs: list[dict]) -> pd.DataFrame:
  """One row per policy present, in the paper's order, unknown policies last as "Other".

  macro and the bucket columns are means over seeds; a bucket that is null in
  some seeds is averaged over the seeds that have it. macro_std uses ddof=1.
  """
  by_policy: dict[str, list[dict]] = {}
  for r in runs:
    by_policy.setdefault(r["policy"], []).append(r)
  known = [p for p in POLICY_ORDER if p in by_policy]
  other = sorted(p for p in by_policy if p not in GROUP_OF)
  rows = []
  for p in known + other:
    rs = by_policy[p]
    macro, macro_std = _mean_std(r["macro_auroc"] for r in rs)
    buckets = {b: _mean_std(_number_or_nan(r["buckets"].get(b)) for r in rs)[0] for b in BUCKETS}
    rows.append(
      {
        "group": GROUP_OF.get(p, OTHER),
        "policy": p,
        "macro": macro,
        "macro_std": macro_std,
        **buckets,
        "seeds": len({r["seed"] for r in rs}),
      }
    )
  return pd.DataFrame(rows, columns=COLUMNS).astype({"seeds": int})


def blend_table(blend_runs: list[dict]) -> pd.DataFrame:
  """Macro AUROC per real fraction: mean, sample std (ddof=1), seed count."""
  by_frac: dict[float, list[float]] = {}
  for r in blend_runs:
    by_frac.setdefault(float(r["real_fraction"]), []).append(r["macro_auroc"])
  rows = [
    {"real_fraction": f, "macro": m, "macro_std": s, "seeds": len(v)}
    for f, v in sorted(by_frac.items())
    for m, s in [_mean_std(v)]
  ]
  return pd.DataFrame(rows, columns=["real_fraction", "macro", "macro_std", "seeds"])


def format_macro(mean: float, std: float, seeds: int) -> str:
  """`0.8845±0.012` over several seeds, a bare `0.9070` for one (paper, Table 1)."""
  return fmt_mean_std(mean, std, seeds, digits=4, std_digits=3, sep="±")


def _synth_best(df: pd.DataFrame) -> dict[str, object]:
  """Row label of the best synthetic-only mean per column (the paper's bold)."""
  synth = df[df["group"] != "Reference"]
  best = {}
  for col in ("macro", *BUCKETS):
    vals = synth[col].astype(float)
    if vals.notna().any():
      best[col] = vals.idxmax()
  return best


def to_markdown(df: pd.DataFrame, bold_best: bool = True) -> str:
  """Table 1 as a GitHub Markdown table.

  bold_best: bold the strongest synthetic-only mean of each column, as the
  paper does; the reference rows (real data) are not candidates.
  """
  best = _synth_best(df) if bold_best else {}
  bold = lambda text, col, i: f"**{text}**" if best.get(col) == i and text != "n/a" else text
  lines = [
    "| Group | Policy | Macro | Common | Moderate | Rare | seeds |",
    "| --- | --- | --- | --- | --- | --- | ---: |",
  ]
  for i, r in df.iterrows():
    name = f"`{r['policy']}`" + (f" ({ROLE[r['policy']]})" if r["policy"] in ROLE else "")
    macro = bold(format_macro(r["macro"], r["macro_std"], int(r["seeds"])), "macro", i)
    cells = [bold(f"{r[b]:.4f}" if math.isfinite(r[b]) else "n/a", b, i) for b in BUCKETS]
    lines.append(f"| {r['group']} | {name} | {macro} | {' | '.join(cells)} | {int(r['seeds'])} |")
  return "\n".join(lines) + "\n"


def _reference_line(ax, df: pd.DataFrame, policy: str, style: str, color: str) -> Line2D | None:
  row = df[df["policy"] == policy]
  if row.empty or not math.isfinite(row["macro"].iloc[0]):
    return None
  r = row.iloc[0]
  seeds = int(r["seeds"])
  label = (
    f"{policy} {ROLE[policy]} ({format_macro(r['macro'], r['macro_std'], seeds)}, "
    f"{seeds} seed{'s' if seeds > 1 else ''})"
  )
  return ax.axhline(r["macro"], ls=style, color=color, lw=1.2, label=label, zorder=1)


def _zoom(ax, lo: np.ndarray, hi: np.ndarray) -> None:
  """AUROCs of competing policies differ in the second decimal: zoom the y axis to them."""
  lo, hi = np.nanmin(lo), np.nanmax(hi)
  pad = max(0.1 * (hi - lo), 0.005)
  ax.set_ylim(max(0.0, lo - 3 * pad), min(1.0, hi + 2 * pad))


def figure1(df: pd.DataFrame, path: str) -> str:
  """Macro TSTR by policy, coloured by failure-mode group (paper Figure 1).

  Error bars (1 sigma, ddof=1) only where a row has more than one seed; the
  seed count is printed in each bar so a bar without one is not mistaken for
  a precise one. Dashed: real_matched baseline; dotted: real_subset ceiling.
  """
  if df.empty:
    raise ValueError("figure1: the table has no rows")
  x = np.arange(len(df))
  macro = df["macro"].to_numpy(float)
  std = np.where(df["seeds"].to_numpy() > 1, df["macro_std"].to_numpy(float), np.nan)
  fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(df) + 5.0), 4.8))
  lo, hi = macro - np.nan_to_num(std), macro + np.nan_to_num(std)
  _zoom(ax, lo, hi)
  bottom = ax.get_ylim()[0]
  ax.bar(
    x,
    macro - bottom,
    bottom=bottom,
    color=[GROUP_COLORS[g] for g in df["group"]],
    edgecolor="black",
    lw=0.5,
    zorder=2,
  )
  has = np.isfinite(std)
  ax.errorbar(
    x[has], macro[has], yerr=std[has], fmt="none", ecolor="black", capsize=3, lw=1, zorder=3
  )
  for xi, n in zip(
    x, df["seeds"]
  ):  # inside the bar's foot, clear of error bars and reference lines
    ax.annotate(
      f"n={n}",
      (xi, bottom),
      xytext=(0, 3),
      textcoords="offset points",
      ha="center",
      va="bottom",
      fontsize=7,
      color="white",
      fontweight="bold",
      zorder=4,
    )
  lines = [
    ln
    for ln in (
      _reference_line(ax, df, BASELINE, "--", "black"),
      _reference_line(ax, df, CEILING, ":", "black"),
    )
    if ln is not None
  ]
  ax.set_xticks(x, df["policy"], rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
  ax.set_xlim(-0.6, len(df) - 0.4)
  ax.set_ylabel("macro AUROC (TSTR, real test fold)")
  ax.set_title("Macro TSTR by sampling policy")
  groups = list(dict.fromkeys(df["group"]))
  handles = [
    Patch(facecolor=GROUP_COLORS[g], edgecolor="black", lw=0.5, label=g) for g in groups
  ] + lines
  ax.legend(
    handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
  )
  ax.grid(axis="y", lw=0.3, alpha=0.5, zorder=0)
  fig.tight_layout()
  return save_figure(fig, path)


def figure2(blend_runs: list[dict], path: str) -> str:
  """Macro TSTR vs real fraction of a fixed-size real+synth mix (paper Figure 2, section 6).

  1 sigma error bars (ddof=1) where a fraction has several seeds; dashed line
  at the pure-synthetic mean (fraction 0), dotted at the pure-real ceiling
  (fraction 1) when those points were run.
  """
  bt = blend_table(blend_runs)
  if bt.empty:
    raise ValueError("figure2: no blend runs")
  frac = bt["real_fraction"].to_numpy(float)
  macro, std = bt["macro"].to_numpy(float), bt["macro_std"].to_numpy(float)
  fig, ax = plt.subplots(figsize=(6.0, 4.2))
  ax.plot(
    100 * frac, macro, "o-", color="tab:blue", lw=1.2, label="real + synthetic blend", zorder=3
  )
  has = np.isfinite(std)
  ax.errorbar(
    100 * frac[has], macro[has], yerr=std[has], fmt="none", ecolor="tab:blue", capsize=3, zorder=3
  )
  for f, m, s, n in zip(frac, macro, np.nan_to_num(std), bt["seeds"]):
    ax.annotate(
      f"n={n}", (100 * f, m + s), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7
    )
  for f, style, what in ((0.0, "--", "pure synthetic"), (1.0, ":", "pure real (ceiling)")):
    at = bt[np.isclose(frac, f)]
    if not at.empty:
      ax.axhline(
        at["macro"].iloc[0],
        ls=style,
        color="black",
        lw=1.1,
        zorder=1,
        label=f"{what} ({at['macro'].iloc[0]:.4f})",
      )
  _zoom(ax, macro - np.nan_to_num(std), macro + np.nan_to_num(std))
  ax.set_xlim(-5, 105)
  ax.set_xlabel("real fraction of the training set (%)")
  ax.set_ylabel("macro AUROC (real test fold)")
  ax.set_title("Macro TSTR vs real fraction at fixed total n")
  ax.legend(fontsize=8, loc="lower right")
  ax.grid(lw=0.3, alpha=0.5, zorder=0)
  fig.tight_layout()
  return save_figure(fig, path)


def render_tstr(runs: list[dict], out: str, bold_best: bool = True) -> tuple[str, dict[str, str]]:
  """The report's TSTR section: table1.md, table1.csv and figure1.png under `out`."""
  df = table1(runs)
  md = to_markdown(df, bold_best=bold_best)
  written = {
    "table1.md": write_text(os.path.join(out, "table1.md"), md),
    "table1.csv": to_csv(df, os.path.join(out, "table1.csv")),
    "figure1.png": figure1(df, os.path.join(out, "figure1.png")),
  }
  text = (
    "Macro AUROC on the real test fold, mean ± sample std over seeds (bold: the best "
    "synthetic-only mean of each column).\n\n" + md + "\n![Figure 1](figure1.png)\n"
  )
  return text, written


def render_blend(runs: list[dict], out: str) -> tuple[str, dict[str, str]]:
  """The report's blend section: blend.csv and figure2.png under `out`."""
  bt = blend_table(runs)
  written = {
    "blend.csv": to_csv(bt, os.path.join(out, "blend.csv")),
    "figure2.png": figure2(runs, os.path.join(out, "figure2.png")),
  }
  rows = [
    f"| {100 * r.real_fraction:g} % | {format_macro(r.macro, r.macro_std, int(r.seeds))} "
    f"| {int(r.seeds)} |"
    for r in bt.itertuples(index=False)
  ]
  text = (
    "Macro AUROC at a fixed training-set size, a fraction of it real records.\n\n"
    "| real fraction | macro AUROC | seeds |\n| --- | --- | ---: |\n"
    + "\n".join(rows)
    + "\n\n![Figure 2](figure2.png)\n"
  )
  return text, written
