"""Figures people look at: real vs generated 12-lead ECGs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgjax.data.records import LEADS, SAMPLING_RATE  # noqa: E402
from ecgjax.eval.render import save_figure  # noqa: E402


def ecg_comparison(
  real: np.ndarray,
  fake: np.ndarray,
  titles: list[str],
  path: str,
  *,
  fake_rate: int = SAMPLING_RATE,
  fake_name: str = "generated",
) -> str:
  """One column pair (real | generated) per example, 12 stacked leads, in mV.

  real: (k, 12, 1000) at 100 Hz; fake: (k, 12, 10 * fake_rate), the same
  conditioning per row k.
  """
  k = len(real)
  times = {"real": np.arange(real.shape[-1]) / SAMPLING_RATE}
  times[fake_name] = np.arange(fake.shape[-1]) / fake_rate
  fig, axes = plt.subplots(12, 2 * k, figsize=(4.2 * 2 * k, 12), sharex=True, squeeze=False)
  for j in range(k):
    for col, (sig, kind) in enumerate(((real[j], "real"), (fake[j], fake_name))):
      t = times[kind]
      lo, hi = np.nanpercentile(np.concatenate([real[j], fake[j]], axis=-1), [0.5, 99.5])
      pad = 0.1 * (hi - lo + 1e-3)
      for lead in range(12):
        ax = axes[lead, 2 * j + col]
        ax.plot(t, sig[lead], lw=0.6, color="black" if kind == "real" else "tab:red")
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_yticks([])
        if 2 * j + col == 0:
          ax.set_ylabel(LEADS[lead], rotation=0, labelpad=14)
      axes[0, 2 * j + col].set_title(f"{kind}: {titles[j]}", fontsize=8)
  for ax in axes[-1]:
    ax.set_xlabel("s")
  fig.tight_layout()
  return save_figure(fig, path, dpi=80)


def loss_curves(records: list[dict], path: str) -> str:
  """Training losses per stage from the metrics file."""
  stages = sorted({r["stage"] for r in records})
  fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
  for ax, stage in zip(axes[0], stages):
    rs = [r for r in records if r["stage"] == stage]
    for key in ("loss", "recon_mse"):
      if key in rs[0]:
        ax.plot([r["step"] for r in rs], [r[key] for r in rs], label=key)
    ax.set_yscale("log")
    ax.set_title(stage)
    ax.set_xlabel("step")
    ax.legend()
  fig.tight_layout()
  return save_figure(fig, path, dpi=80)
