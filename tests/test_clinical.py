"""Clinical measurements (ecgjax.fidelity.clinical) on signals with known intervals."""

import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from ecgjax.fidelity import clinical

GAINS = np.linspace(0.5, 1.5, 12)  # lead k = GAINS[k] x the lead-II waveform


def _hand_built(hr, pr, qrs, qt, *, r_amp=1.2, noise=0.01, seed=0, fs=100, duration=10.0):
  """(12, T) record of beats with known intervals (s), drawn on a 5 kHz grid and sampled at
  fs: a P wave (half sine, 100 ms, 0.15 mV) starting `pr` before the QRS onset; a q-R-s
  complex of piecewise-linear segments from the QRS onset over `qrs` (q -0.1 mV at 15 %,
  R `r_amp` at 45 %, s -0.25 mV at 80 %); a T wave (half sine, 160 ms, 0.3 mV) ending `qt`
  after the QRS onset; every lead a positive multiple of it, plus white noise."""
  fine = 5000
  t = np.arange(int(duration * fine)) / fine
  x = np.zeros_like(t)
  for on in np.arange(0.3, duration, 60.0 / hr):
    p = (t >= on - pr) & (t < on - pr + 0.10)
    x[p] += 0.15 * np.sin(np.pi * (t[p] - (on - pr)) / 0.10)
    q = (t >= on) & (t <= on + qrs)
    knots = on + qrs * np.array([0.0, 0.15, 0.45, 0.8, 1.0])
    x[q] += np.interp(t[q], knots, [0.0, -0.1, r_amp, -0.25, 0.0])
    w = (t >= on + qt - 0.16) & (t < on + qt)
    x[w] += 0.3 * np.sin(np.pi * (t[w] - (on + qt - 0.16)) / 0.16)
  lead = x[:: fine // fs]
  rng = np.random.default_rng(seed)
  return (GAINS[:, None] * lead + noise * rng.normal(size=(12, len(lead)))).astype(np.float32)


def test_known_heart_rate_intervals_and_amplitudes():
  pytest.importorskip("neurokit2")
  truths = [  # (heart rate /min, PR, QRS, QT in s)
    (60, 0.16, 0.09, 0.40),
    (90, 0.20, 0.14, 0.36),
    (75, 0.12, 0.08, 0.44),
    (50, 0.18, 0.10, 0.42),
  ]
  x = np.stack([_hand_built(*truth, seed=i) for i, truth in enumerate(truths)])
  df = clinical.measure(x, progress=False)
  assert list(df.columns) == list(clinical.COLUMNS) and df["measured"].all()
  hr, pr, qrs, qt = (np.array([t[k] for t in truths], float) for k in range(4))
  np.testing.assert_allclose(df["heart_rate"], hr, rtol=0.01)
  np.testing.assert_allclose(df["pr_ms"], pr * 1000, atol=15)
  np.testing.assert_allclose(df["qt_ms"], qt * 1000, atol=20)
  # The prominence QRS runs between the R wave's bases, about the q and s nadirs (65 % of this
  # complex's span apart; measured 76-90 %): shorter than the complex, and in the same order.
  ratio = df["qrs_ms"].to_numpy() / (qrs * 1000)
  assert np.all((ratio > 0.6) & (ratio <= 1.0)), ratio
  assert np.array_equal(np.argsort(df["qrs_ms"].to_numpy()), np.argsort(qrs))
  # R amplitude: GAINS x 1.2 mV, read off 100 Hz samples of a 27 ms-wide apex (up to 15 % low),
  # in the same proportion in every lead.
  amps = df[list(clinical.R_AMPLITUDES)].to_numpy()
  frac = amps / (GAINS * 1.2)
  assert np.all((frac > 0.8) & (frac < 1.02)), frac
  np.testing.assert_allclose(frac, np.broadcast_to(frac[:, [1]], frac.shape), rtol=0.03)
  assert df["n_beats"].tolist() == [10, 15, 13, 9]


def _sim_records(n, **flags):
  from ecgjax.generators import simulator as S

  base = dict(
    afib=np.zeros(n, bool),
    aflt=np.zeros(n, bool),
    pvc=np.zeros(n, bool),
    wpw=np.zeros(n, bool),
    age=np.linspace(30, 70, n).astype(np.float32),
    female=(np.arange(n) % 2).astype(np.float32),
  )
  base.update({k: np.full(n, v) for k, v in flags.items()})
  return S.Recording(**base)


def test_simulator_heart_rate_and_wpw_intervals():
  pytest.importorskip("neurokit2")
  import jax

  from ecgjax.generators import simulator as S

  n = 6
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  normal = clinical.measure(np.asarray(S.simulate(keys, _sim_records(n))), progress=False)
  wpw = clinical.measure(np.asarray(S.simulate(keys, _sim_records(n, wpw=True))), progress=False)
  assert normal["measured"].all() and wpw["measured"].all()
  # The sinus rate each recording was drawn with, as simulate_one draws it: 72/min + 3 for
  # women - 0.1 per year above 50 + 7 N(0, 1) from the first of its key's 8 subkeys, clipped to
  # 50-100; beats then jitter by 2 % (so the median RR is within about 1 %).
  rec = _sim_records(n)
  z = np.array([float(jax.random.normal(jax.random.split(k, 8)[0])) for k in keys])
  rate = np.clip(72 + 3 * rec.female - 0.1 * (rec.age - 50) + 7 * z, 50, 100)
  np.testing.assert_allclose(normal["heart_rate"], rate, rtol=0.03)
  np.testing.assert_allclose(wpw["heart_rate"], rate, rtol=0.03)  # same keys, same rate
  # Normal beats: P about 145 ms before R, narrow QRS; WPW: P 110-130 ms before R and an
  # R wave 1.4 times as wide with a delta wave before it (a short PR, a wide QRS).
  assert 120 <= normal["pr_ms"].median() <= 200 and 60 <= normal["qrs_ms"].median() <= 110
  assert wpw["pr_ms"].median() < normal["pr_ms"].median() - 25
  assert wpw["qrs_ms"].median() > normal["qrs_ms"].median() + 15


def test_unmeasurable_records_get_nans_without_raising():
  pytest.importorskip("neurokit2")
  rng = np.random.default_rng(0)
  good = _hand_built(70, 0.16, 0.09, 0.40)
  nan_record = good.copy()
  nan_record[3, 10] = np.nan
  batch = np.stack(
    [
      good,
      np.zeros((12, 1000), np.float32),  # flat
      np.full((12, 1000), 0.3, np.float32),  # constant offset
      rng.normal(size=(12, 1000)).astype(np.float32),  # white noise
      np.cumsum(rng.normal(size=(12, 1000)), axis=1).astype(np.float32) * 0.05,  # random walk
      nan_record,
    ]
  )
  df = clinical.measure(batch, progress=False)
  assert df["measured"].tolist() == [True, False, False, False, False, False]
  values = df[list(clinical.MEASURES + clinical.R_AMPLITUDES)]
  assert values.iloc[0].notna().all() and values.iloc[1:].isna().all().all()
  # Too short for neurokit2's filters: NaNs as well, not an exception.
  assert not clinical.measure_record(good[:, :40])["measured"]
  with pytest.raises(ValueError, match="12"):
    clinical.measure(np.zeros((2, 6, 1000)), progress=False)


def test_compare_reports_distances_and_summaries_of_valid_values():
  real = pd.DataFrame({"heart_rate": [60.0, 70, 80, np.nan], "qt_ms": [400.0, 410, 420, 430]})
  synth = pd.DataFrame({"heart_rate": [65.0, 90, np.nan], "qt_ms": [np.nan, np.nan, np.nan]})
  out = clinical.compare(real, synth)
  assert list(out.index) == ["heart_rate", "qt_ms"]
  row = out.loc["heart_rate"]
  assert row["wasserstein"] == pytest.approx(wasserstein_distance([60, 70, 80], [65, 90]))
  assert row["real_median"] == 70 and row["real_iqr"] == pytest.approx(10)
  assert row["real_valid"] == 3 and row["real_n"] == 4
  assert row["synth_valid"] == 2 and row["synth_median"] == pytest.approx(77.5)
  assert np.isnan(out.loc["qt_ms", "wasserstein"]) and out.loc["qt_ms", "synth_valid"] == 0
  named = clinical.compare(real, synth, columns=["qt_ms"], names=("ptbxl", "gen"))
  assert "ptbxl_median" in named.columns and named.loc["qt_ms", "ptbxl_median"] == 415


def test_a_missing_neurokit2_names_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "neurokit2", None)  # makes `import neurokit2` fail
  with pytest.raises(ImportError, match=r'pip install -e "\.\[audit\]"'):
    clinical.measure(np.zeros((1, 12, 1000)), progress=False)
