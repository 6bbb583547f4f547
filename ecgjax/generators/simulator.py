"""The `simulator` generator kind: paper 002's knowledge-driven Gaussian-composition ECG,
in 12 leads from a 3-D cardiac dipole (docs/design.md §9).

No patient data and no training: a recording is a sum of Gaussian waves.

**Beats (paper 002, Appendix A).** Every beat is the sum of Gaussian P, Q, R, S
and T waves, g(t) = a exp(-(t - mu)^2 / (2 w^2)), with amplitude a (mV in lead
II), shift mu and width w in beat time (a 1 s reference beat). Each recording
draws its initial parameters from N(base, inter-sample SD); after every beat
they take a random-walk step N(0, beat-level SD) (`TABLE_A1`, the paper's
values). Some of the table's entries do not give a normal ECG and are changed
(`CHANGED`, each with its reason): Q and S are negative deflections (the table
lists magnitudes); Q and S timing (Q width 0.05 and S shift 0.44, i.e. a QRS
near 200 ms), the R width (0.0075: a 35 ms QRS when q and s are small) and the
P and T widths (150 ms waves) are replaced by physiological values. Every
drawn parameter is then clipped to a physiological box (`BOX`), since the
table's SDs are broad (the paper says some of its waveforms "deviate from
typical physiological ECG morphology"), and a T wave is at most 0.6 of its
beat's R; that keeps normal recordings' PR, QRS and RR in their clinical ranges. Within a beat, P, Q and S sit at fixed
offsets (in seconds) from R; the T wave's offset and width scale with
sqrt(RR / 1 s) (Bazett's QT rule). White noise and sinusoidal baseline wander
are added per electrode (below), so they too obey the lead identities.

**Classes (paper 002, section 4).** From the 71 labels of `cond`:
  AFIB  no P wave; fibrillatory baseline (three sinusoids, 4-9 Hz); RR drawn
        independently per beat (coefficient of variation 0.2), rate 80-130/min.
  AFLT  no P wave; sawtooth flutter waves at 260-340/min (slow descent, fast
        rise, negative in the inferior leads); a regular ventricular response
        at 2:1, 3:1 or 4:1 conduction (a beat's ratio changes with prob. 0.15).
  PVC   premature beats (coupling 0.45-0.7 of the RR, full compensatory pause;
        one forced among beats 3-6 (within the first 8 s), others with a per-recording probability
        0.05-0.2, never two in a row) without P, q or s, with an R 3.5-4.5 times
        as wide as the sinus R (1.2 times its height in lead II) along one of
        two ectopic axes, and a discordant T.
  WPW   short PR: the QRS starts early with a delta wave (a slow Gaussian
        upstroke 35-50 ms before R, 20-35 % of R, same axis) that replaces the q
        wave and runs out of the P wave (P 0.11-0.13 s before R instead of about
        0.145), and an R wave 1.4x wider: a wide QRS.
  NORM / SR and every other label: the normal rule (sinus rhythm, 50-100/min
  with 2 % beat-to-beat variation). Rhythm (sinus, AFIB, AFLT; AFLT wins over
  AFIB) combines with the beat rules (PVC, WPW). The cohort manifest lists the
  labels drawn that the simulator renders with the normal rule.

**Demographics.** From the raw age and sex behind `cond`'s z-scores: the
sinus rate is 72/min + 3/min for women - 0.1/min per year above 50, plus a
per-recording N(0, 7) spread (clipped to 50-100/min); amplitudes scale by
1 + 0.1 (men) - 0.004 per year above 50, clipped to 0.7-1.3 (QRS voltage is
higher in men and falls with age), times a per-recording log-normal factor
exp(N(0, 0.1)).

**Leads.** Each wave is a dipole direction (`DIRECTIONS`, unit vectors in the
X left, Y inferior (feet), Z posterior frame of Frank's vectorcardiogram)
whose magnitude gives the table's amplitude in lead II. The dipole is projected
onto the electrodes with Dower's transform (`DOWER`; Dower, Machado & Osborne,
Clin Cardiol 1980, the coefficients as tabulated in the ECG literature), which
gives leads I, II and V1-V6 from Frank X, Y, Z; the published inverse Dower
matrix (Edenbrandt & Pahlm 1988; `tests/test_simulator.py`) inverts it to
within 0.02. The limb electrodes' potentials are the ones whose
differences are Dower's I and II with the Wilson terminal at zero
(RA = -(I + II)/3, LA = RA + I, LL = RA + II); the leads are then formed as an
electrocardiograph forms them: I = LA - RA, II = LL - RA, III = LL - LA,
aVR = RA - (LA + LL)/2, aVL = LA - (RA + LL)/2, aVF = LL - (RA + LA)/2,
Vi = phi_Vi - (RA + LA + LL)/3. Einthoven's law and the augmented leads'
definitions therefore hold to float precision, noise included.

The whole batch is one jitted, vmapped call: beats are a `lax.scan` over a
fixed maximum beat count (`MAX_BEATS`; beats beyond 10 s fall outside the
window), and the signal is one (T, beats x waves) Gaussian matrix times the
waves' (beats x waves, 3) dipole vectors. Sample i is keyed by
fold_in(key, start + i) alone, so it does not depend on its batch.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from ecgjax.data import pipeline
from ecgjax.data.records import LEADS
from ecgjax.errors import ConfigError
from ecgjax.fingerprints import fingerprint
from ecgjax.generators.base import GeneratorKind
from ecgjax.models.embeddings import NUM_LABELS, check_cond

# Bumped whenever the simulator's output for a key changes; part of a cohort's identity.
VERSION = 1
DURATION_S = 10.0
SAMPLING_RATES = (100, 500)
WAVES = ("P", "Q", "R", "S", "T")
# Classes the simulator renders, and the rule the others get.
CLASSES = ("AFIB", "AFLT", "PVC", "WPW")
NORMAL_CODES = ("NORM", "SR")
COVERED_CODES = NORMAL_CODES + CLASSES
MAX_BEATS = 48  # 10 s at the fastest rhythm (RR >= MIN_RR) plus the beats before t = 0
MIN_RR = 0.25  # s, the shortest interval (a premature beat in fast AF)
# A beat's waves reach from REACH[0] s before its R peak to REACH[1] s after it
# (P at most 0.26 s before with its width; T at most 0.45 s after, width <= 0.075
# s, + 4 widths); each beat is drawn on that window only.
REACH = (0.3, 0.8)

# Paper 002, Table A.1 (beat time, lead II): rows amplitude, width, shift;
# columns P, Q, R, S, T; (base, inter-sample SD, beat-level SD).
TABLE_A1 = {
  "amplitude": ((0.30, 0.20, 0.10), (0.10, 0.15, 0.016), (1.50, 0.75, 0.25), (0.50, 0.70, 0.05), (0.45, 0.50, 0.07)),
  "width": ((0.030, 0.020, 0.005), (0.050, 0.050, 0.0125), (0.0075, 0.010, 0.00187), (0.040, 0.040, 0.010), (0.030, 0.030, 0.0075)),
  "shift": ((0.200, 0.150, 0.020), (0.300, 0.100, 0.010), (0.345, 0.020, 0.0045), (0.440, 0.050, 0.015), (0.590, 0.060, 0.015)),
}  # fmt: skip
# What ecgjax changes, and why (the module docstring): (row, wave) -> (base, sd_sample, sd_beat).
CHANGED = {
  ("amplitude", "Q"): (-0.10, 0.15, 0.016),  # a q wave is a negative deflection
  ("amplitude", "S"): (-0.50, 0.70, 0.05),  # so is an s wave
  ("width", "P"): (0.018, 0.010, 0.0025),  # 0.03 gives a 150 ms P wave (normal < 120 ms)
  ("width", "T"): (0.040, 0.010, 0.0025),  # 0.03 gives a 150 ms T wave (normal 160-250 ms)
  ("width", "Q"): (0.007, 0.003, 0.001),  # 0.05 with S at 0.44 gives a ~200 ms QRS
  ("width", "R"): (0.011, 0.010, 0.00187),  # 0.0075 gives a 35 ms QRS when q and s are small
  ("width", "S"): (0.009, 0.003, 0.001),
  ("shift", "Q"): (0.320, 0.005, 0.001),  # q 25 ms before R
  ("shift", "S"): (0.375, 0.005, 0.0015),  # s 30 ms after R
}
# Physiological box every drawn parameter is clipped to: (low, high) per wave.
BOX = {
  "amplitude": ((0.05, 0.25), (-0.30, 0.0), (0.70, 2.80), (-0.80, 0.0), (0.05, 0.60)),
  "width": ((0.012, 0.022), (0.004, 0.010), (0.009, 0.014), (0.005, 0.010), (0.030, 0.050)),
  "shift": ((0.165, 0.215), (0.310, 0.330), (0.335, 0.355), (0.365, 0.385), (0.580, 0.660)),
}  # fmt: skip
ROWS = ("amplitude", "width", "shift")


def _table(column: int) -> np.ndarray:
  out = np.zeros((3, 5), np.float32)
  for r, row in enumerate(ROWS):
    for w, wave in enumerate(WAVES):
      out[r, w] = CHANGED.get((row, wave), TABLE_A1[row][w])[column]
  return out


BASE, SD_SAMPLE, SD_BEAT = _table(0), _table(1), _table(2)
LO = np.array([[b[0] for b in BOX[r]] for r in ROWS], np.float32)
HI = np.array([[b[1] for b in BOX[r]] for r in ROWS], np.float32)

# Dower's transform: leads I, II, V1..V6 from the Frank X, Y, Z (rows; columns X, Y, Z).
DOWER = np.array(
  [
    [0.632, -0.235, 0.059],  # I
    [0.235, 1.066, -0.132],  # II
    [-0.515, 0.157, -0.917],  # V1
    [0.044, 0.164, -1.387],  # V2
    [0.882, 0.098, -1.277],  # V3
    [1.213, 0.127, -0.601],  # V4
    [1.125, 0.127, -0.086],  # V5
    [0.831, 0.076, 0.230],  # V6
  ],
  np.float32,
)
LEAD_II = DOWER[1]
# Electrode lead vectors (RA, LA, LL, V1..V6) relative to a Wilson terminal at zero.
_RA = -(DOWER[0] + DOWER[1]) / 3
ELECTRODES = np.concatenate([np.stack([_RA, _RA + DOWER[0], _RA + DOWER[1]]), DOWER[2:]])


def _unit(*v) -> np.ndarray:
  v = np.asarray(v, np.float32)
  return v / np.linalg.norm(v)


# Dipole directions (X left, Y inferior, Z posterior) of each wave in a sinus beat:
# P left-inferior; q septal (right, superior, anterior); R left-inferior-posterior
# (rS in V1, qR in V6, transition at V3); s terminal (right, superior, posterior);
# T left-inferior-anterior (concordant, upright in V2-V6).
DIRECTIONS = {
  "P": _unit(0.5, 0.8, -0.2),
  "Q": _unit(-0.5, -0.4, -0.75),
  "R": _unit(0.55, 0.65, 0.5),
  "S": _unit(-0.5, -0.5, 0.7),
  "T": _unit(0.6, 0.55, -0.55),
}
# Ectopic QRS axes of PVCs: right-ventricular outflow (inferior axis, left-bundle-
# branch-block shape) and left-ventricular (superior axis, right-bundle shape).
PVC_DIRECTIONS = np.stack([_unit(0.3, 0.85, 0.45), _unit(-0.3, -0.7, -0.6)])
ATRIAL = _unit(0.3, 0.9, -0.3)  # flutter/fibrillation waves: inferior, seen in II, III, aVF
_DIRS = np.stack([DIRECTIONS[w] for w in WAVES])  # (5, 3)
_II_GAIN = _DIRS @ LEAD_II  # lead II per unit dipole of each wave


def electrodes_to_leads(phi: jax.Array) -> jax.Array:
  """(..., 9, T) electrode potentials (RA, LA, LL, V1..V6) -> (..., 12, T) standard leads."""
  ra, la, ll, v = phi[..., 0, :], phi[..., 1, :], phi[..., 2, :], phi[..., 3:, :]
  wct = (ra + la + ll) / 3
  limb = jnp.stack(
    [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2], -2
  )
  return jnp.concatenate([limb, v - wct[..., None, :]], -2)


@dataclasses.dataclass(frozen=True)
class Recording:
  """What the rules need of one recording (a pytree of scalars under vmap)."""

  afib: jax.Array
  aflt: jax.Array
  pvc: jax.Array
  wpw: jax.Array
  age: jax.Array
  female: jax.Array


jax.tree_util.register_dataclass(
  Recording, data_fields=["afib", "aflt", "pvc", "wpw", "age", "female"], meta_fields=[]
)


def _beats(key, rec: Recording, rr_sinus):
  """Per-beat wave parameters (B, 3, 5), RR intervals (B,) and PVC flags (B,)."""
  k_init, k_pvc, k_scan, k_rate, k_k = jax.random.split(key, 5)
  params0 = jnp.clip(BASE + SD_SAMPLE * jax.random.normal(k_init, BASE.shape), LO, HI)
  p_pvc = jnp.where(rec.pvc, jax.random.uniform(k_pvc, (), minval=0.05, maxval=0.2), 0.0)
  forced = jax.random.randint(jax.random.fold_in(k_pvc, 1), (), 3, 7)
  coupling = jax.random.uniform(jax.random.fold_in(k_pvc, 2), (), minval=0.45, maxval=0.7)
  rr_af = 60.0 / jax.random.uniform(k_rate, (), minval=80.0, maxval=130.0)
  flutter_hz = jax.random.uniform(jax.random.fold_in(k_rate, 1), (), minval=260.0, maxval=340.0)
  flutter_hz = flutter_hz / 60.0
  ratio0 = jax.random.choice(k_k, jnp.array([2.0, 3.0, 4.0]), p=jnp.array([0.5, 0.2, 0.3]))

  # Every random number up front (one draw per kind), so the scan itself is arithmetic.
  kb = jax.random.split(k_scan, 5)
  walk = SD_BEAT * jax.random.normal(kb[0], (MAX_BEATS,) + BASE.shape)
  z_rr = jax.random.normal(kb[1], (MAX_BEATS,))
  u_pvc = jax.random.uniform(kb[2], (MAX_BEATS,))
  u_ratio = jax.random.uniform(kb[3], (MAX_BEATS,))
  other_ratio = jax.random.choice(kb[4], jnp.array([2.0, 3.0, 4.0]), (MAX_BEATS,))
  beat = jnp.arange(MAX_BEATS)
  sinus = rr_sinus * (1.0 + 0.02 * z_rr)
  fib = jnp.clip(rr_af * (1.0 + 0.2 * z_rr), 0.3, 1.6)
  ratio = jnp.where(u_ratio < 0.15, other_ratio, ratio0)
  base_rr = jnp.where(rec.aflt, ratio / flutter_hz, jnp.where(rec.afib, fib, sinus))
  candidate = rec.pvc & ((beat == forced) | (u_pvc < p_pvc))

  def step(carry, inputs):
    params, prev_pvc = carry
    step_walk, cand, rr0 = inputs
    is_pvc = cand & ~prev_pvc
    rr = rr0 * jnp.where(is_pvc, coupling, jnp.where(prev_pvc, 2.0 - coupling, 1.0))
    rr = jnp.maximum(rr, MIN_RR)
    walked = jnp.clip(params + step_walk, LO, HI)
    return (walked, is_pvc), (params, rr, is_pvc)

  _, (params, rr, is_pvc) = lax.scan(step, (params0, jnp.bool_(False)), (walk, candidate, base_rr))
  return params, rr, is_pvc, flutter_hz


def simulate_one(key, rec: Recording, *, sampling_rate: int, noise: float) -> jax.Array:
  """One recording (12, 10 * sampling_rate) in mV."""
  n = int(DURATION_S * sampling_rate)
  t = jnp.arange(n, dtype=jnp.float32) / sampling_rate
  k_rate, k_beats, k_t0, k_wpw, k_pvc, k_atrial, k_noise, k_amp = jax.random.split(key, 8)
  years = rec.age - 50.0
  hr = 72.0 + 3.0 * rec.female - 0.1 * years + 7.0 * jax.random.normal(k_rate)
  rr_sinus = 60.0 / jnp.clip(hr, 50.0, 100.0)
  gain = jnp.clip(1.0 + 0.1 * (1.0 - rec.female) - 0.004 * years, 0.7, 1.3)
  gain = gain * jnp.exp(0.1 * jax.random.normal(k_amp))
  params, rr, is_pvc, flutter_hz = _beats(k_beats, rec, rr_sinus)
  amp, width, shift = params[:, 0], params[:, 1], params[:, 2]  # (B, 5) each
  amp = amp.at[:, 4].set(jnp.minimum(amp[:, 4], 0.6 * amp[:, 2]))  # T at most 0.6 R
  # R peak times: the first beat lands within one RR before t = 0.
  r_time = jax.random.uniform(k_t0, (), minval=-1.0, maxval=0.0) * rr[0] + jnp.cumsum(rr) - rr[0]
  offset = shift - shift[:, 2:3]  # seconds from R (1 s reference beat)
  qt = jnp.sqrt(jnp.clip(rr, 0.3, 2.0))  # Bazett: the T wave's timing scales with sqrt(RR)
  offset = offset.at[:, 4].multiply(qt)
  width = width.at[:, 4].multiply(qt)
  no_p = rec.afib | rec.aflt
  # WPW: P closer to R, no q wave, a wider R, and a delta wave (a sixth component).
  kw = jax.random.split(k_wpw, 3)
  offset = offset.at[:, 0].set(
    jnp.where(rec.wpw, -jax.random.uniform(kw[0], (), minval=0.11, maxval=0.13), offset[:, 0])
  )
  amp = amp.at[:, 1].multiply(jnp.where(rec.wpw, 0.0, 1.0))
  width = width.at[:, 2].multiply(jnp.where(rec.wpw, 1.4, 1.0))
  delta_amp = jnp.where(rec.wpw, jax.random.uniform(kw[1], (), minval=0.2, maxval=0.35), 0.0)
  delta_offset = -jax.random.uniform(kw[2], (), minval=0.035, maxval=0.05)
  amp = amp.at[:, 0].multiply(jnp.where(no_p, 0.0, 1.0))
  vectors = (amp / _II_GAIN)[..., None] * _DIRS  # (B, 5, 3): lead II amplitude = amp
  delta = (delta_amp * amp[:, 2] / _II_GAIN[2])[:, None] * _DIRS[2]  # (B, 3)
  centers = jnp.concatenate([offset, jnp.full((MAX_BEATS, 1), 0.0) + delta_offset], 1)
  widths = jnp.concatenate([width, jnp.full((MAX_BEATS, 1), 0.02)], 1)
  vectors = jnp.concatenate([vectors, delta[:, None, :]], 1)  # (B, 6, 3)
  # PVC beats: no P, q, s or delta; a wide R along an ectopic axis; a discordant T.
  kp = jax.random.split(k_pvc, 3)
  ectopic = jnp.asarray(PVC_DIRECTIONS)[jax.random.randint(kp[0], (), 0, 2)]
  r_size = 1.2 * amp[:, 2] / jnp.abs(ectopic @ LEAD_II)
  pvc_vectors = jnp.stack(
    [jnp.zeros((MAX_BEATS, 3))] * 2
    + [r_size[:, None] * ectopic, jnp.zeros((MAX_BEATS, 3)), -0.4 * r_size[:, None] * ectopic]
    + [jnp.zeros((MAX_BEATS, 3))],
    1,
  )
  pvc_width = width[:, 2] * jax.random.uniform(kp[1], (), minval=3.5, maxval=4.5)
  pvc_widths = widths.at[:, 2].set(pvc_width).at[:, 4].set(0.06)
  pvc_centers = centers.at[:, 4].set(0.28 * qt)
  sel = is_pvc[:, None]
  vectors = jnp.where(sel[..., None], pvc_vectors, vectors)
  widths = jnp.where(sel, pvc_widths, widths)
  centers = jnp.where(sel, pvc_centers, centers) + r_time[:, None]
  # Each beat is drawn on its own window (REACH around its R peak, in samples
  # from `start`), then the windows are added into the signal (overlap-add).
  span = int(np.ceil((REACH[0] + REACH[1]) * sampling_rate))
  start = jnp.floor((r_time - REACH[0]) * sampling_rate).astype(jnp.int32)  # (B,)
  local_t = (start[:, None] + jnp.arange(span)) / sampling_rate  # (B, span) seconds
  g = jnp.exp(-0.5 * ((local_t[:, :, None] - centers[:, None, :]) / widths[:, None, :]) ** 2)
  windows = jnp.einsum("blc,bcd->bld", g, gain * vectors)  # (B, span, 3)
  # Windows outside the recording land in the padding on either side and are dropped.
  pos = jnp.clip(start[:, None] + jnp.arange(span) + span, 0, n + 2 * span - 1)
  dipole = jnp.zeros((n + 2 * span, 3)).at[pos].add(windows)[span : span + n]
  # Atrial activity: fibrillatory waves (AFIB) or sawtooth flutter waves (AFLT).
  ka = jax.random.split(k_atrial, 5)
  f_fib = jax.random.uniform(ka[0], (3,), minval=4.0, maxval=9.0)
  phase = jax.random.uniform(ka[1], (3,), maxval=2 * jnp.pi)
  a_fib = jax.random.uniform(ka[2], (3,), minval=0.01, maxval=0.05)
  fib = (a_fib[:, None] * jnp.sin(2 * jnp.pi * f_fib[:, None] * t + phase[:, None])).sum(0)
  u = (flutter_hz * t + jax.random.uniform(ka[3], ())) % 1.0
  saw = jnp.where(u < 0.75, 1.0 - 2.0 * u / 0.75, -1.0 + 2.0 * (u - 0.75) / 0.25)
  a_flutter = jax.random.uniform(ka[4], (), minval=0.1, maxval=0.25)
  atrial = jnp.where(rec.aflt, a_flutter * saw, jnp.where(rec.afib, fib, 0.0))
  # Lead II sees `atrial` (negative flutter waves: the sawtooth's slow limb descends).
  dipole = dipole + gain * atrial[:, None] * (ATRIAL / (ATRIAL @ LEAD_II))
  phi = jnp.asarray(ELECTRODES) @ dipole.T  # (9, T)
  # Per-electrode white noise and baseline wander (a shared respiratory sinusoid
  # with a per-electrode amplitude and phase: a sin(wt + p) = a cos p sin wt + a sin p cos wt).
  if noise:
    kn = jax.random.split(k_noise, 5)
    sigma = jax.random.uniform(kn[0], (), minval=0.005, maxval=0.02)
    f_bw = jax.random.uniform(kn[1], (), minval=0.05, maxval=0.4)
    bw_amp = jax.random.uniform(kn[2], (9,), maxval=0.1)
    bw_phase = jax.random.uniform(kn[3], (9,), maxval=2 * jnp.pi)
    basis = jnp.stack([jnp.sin(2 * jnp.pi * f_bw * t), jnp.cos(2 * jnp.pi * f_bw * t)])  # (2, T)
    mix = jnp.stack([bw_amp * jnp.cos(bw_phase), bw_amp * jnp.sin(bw_phase)], 1)  # (9, 2)
    phi = phi + noise * (mix @ basis + sigma * jax.random.normal(kn[4], phi.shape))
  return electrodes_to_leads(phi)


@functools.lru_cache(maxsize=8)
def _batched(sampling_rate: int, noise: float, mesh: Mesh | None):
  fn = jax.vmap(
    lambda k, r: simulate_one(k, r, sampling_rate=sampling_rate, noise=noise), in_axes=(0, 0)
  )
  if mesh is None:
    return jax.jit(fn)
  data = NamedSharding(mesh, P("data"))
  return jax.jit(fn, in_shardings=(data, data), out_shardings=data)


def simulate(keys, rec: Recording, *, sampling_rate: int = 100, noise: float = 1.0, mesh=None):
  """(B,) keys and a Recording of (B,) arrays -> (B, 12, 10 * sampling_rate) float32 mV."""
  if sampling_rate not in SAMPLING_RATES:
    raise ConfigError(
      f"--config.generator.simulator.sampling_rate={sampling_rate}: choose one of "
      f"{', '.join(map(str, SAMPLING_RATES))}"
    )
  return _batched(int(sampling_rate), float(noise), mesh)(keys, rec)


def recordings(cond, codes, demo_mean, demo_std) -> Recording:
  """The simulator's view of (n, 76) conditioning vectors: class flags, raw age and sex."""
  cond = np.asarray(cond, np.float32)
  index = {c: i for i, c in enumerate(codes)}
  missing = [c for c in COVERED_CODES if c not in index]
  if missing:
    raise ConfigError(f"the label set lacks {', '.join(missing)}, which the simulator renders")
  on = lambda code: cond[:, index[code]] > 0.5
  demo = cond[:, NUM_LABELS:] * np.asarray(demo_std, np.float32) + np.asarray(demo_mean, np.float32)
  return Recording(
    afib=on("AFIB") & ~on("AFLT"),
    aflt=on("AFLT"),
    pvc=on("PVC"),
    wpw=on("WPW"),
    age=demo[:, 0],
    female=(demo[:, 1] > 0.5).astype(np.float32),
  )


@dataclasses.dataclass
class Simulator:
  """The loaded `simulator` kind: label names and demographic statistics to read `cond`."""

  codes_all: tuple[str, ...]
  demo_mean: np.ndarray
  demo_std: np.ndarray
  sampling_rate: int = 100
  noise: float = 1.0
  batch_size: int = 256
  kind: str = "simulator"
  codes: tuple[str, ...] | None = COVERED_CODES

  @property
  def identity(self) -> dict:
    settings = {"version": VERSION, "sampling_rate": self.sampling_rate, "noise": self.noise}
    return {"generator": f"simulator-{fingerprint(settings)}", **settings}

  def generate(self, cond, key, *, mesh: Mesh | None = None, start: int = 0) -> np.ndarray:
    """Signals for `cond`, sample i keyed by fold_in(key, start + i)."""
    cond = check_cond(cond)
    rec = recordings(cond, self.codes_all, self.demo_mean, self.demo_std)
    n_dev = 1 if mesh is None else mesh.shape["data"]
    batch = max(n_dev, -(-min(self.batch_size, max(len(cond), 1)) // n_dev) * n_dev)
    out = []
    for s in range(0, len(cond), batch):
      idx = np.arange(s, min(s + batch, len(cond)))
      pad = np.concatenate([idx, np.repeat(idx[-1:], batch - len(idx))])
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(start + pad))
      part = jax.tree.map(lambda a, pad=pad: jnp.asarray(a[pad]), rec)
      y = simulate(keys, part, sampling_rate=self.sampling_rate, noise=self.noise, mesh=mesh)
      out.append(pipeline.host_value(y)[: len(idx)])
    if not out:
      return np.zeros((0, 12, int(DURATION_S * self.sampling_rate)), np.float32)
    return np.concatenate(out)

  def cohort_notes(self, cond) -> dict:
    cond = np.asarray(cond)
    labels = cond[:, :NUM_LABELS] > 0.5
    drawn = [c for c, k in zip(self.codes_all, labels.sum(0)) if k]
    rec = recordings(cond, self.codes_all, self.demo_mean, self.demo_std)
    counts = {
      "AFLT": int(rec.aflt.sum()),
      "AFIB": int(rec.afib.sum()),
      "PVC": int(rec.pvc.sum()),
      "WPW": int(rec.wpw.sum()),
    }
    counts["normal rule"] = int(len(cond) - (rec.aflt | rec.afib | rec.pvc | rec.wpw).sum())
    return {
      "kind": self.kind,
      "renders": list(COVERED_CODES),
      "leads": list(LEADS),
      "sampling_rate": self.sampling_rate,
      "recordings_per_rule": counts,
      "rendered_with_the_normal_rule": sorted(set(drawn) - set(COVERED_CODES)),
    }


def config(preset: str) -> ConfigDict:
  del preset  # the same at every size: it costs no training
  return ConfigDict(
    dict(
      sampling_rate=100,  # 100 (PTB-XL's rate; what TSTR needs) or 500
      noise=1.0,  # scale of the white noise and baseline wander (0: clean signals)
      batch_size=256,
    )
  )


def load(cfg, ds, workdir: str | None = None) -> Simulator:
  del workdir  # nothing to load: the simulator has no weights
  s = cfg.generator.simulator
  if s.sampling_rate not in SAMPLING_RATES:
    raise ConfigError(
      f"--config.generator.simulator.sampling_rate={s.sampling_rate}: choose one of "
      f"{', '.join(map(str, SAMPLING_RATES))}"
    )
  if s.noise < 0:
    raise ConfigError(f"--config.generator.simulator.noise={s.noise}: must be >= 0")
  return Simulator(
    tuple(ds.codes),
    np.asarray(ds.demo_mean, np.float32),
    np.asarray(ds.demo_std, np.float32),
    sampling_rate=int(s.sampling_rate),
    noise=float(s.noise),
    batch_size=int(s.batch_size),
  )


def ensure(cfg, mesh, ds, workdir, *, progress: bool = True) -> bool:
  del cfg, mesh, ds, workdir, progress
  return False  # nothing to train


KIND = GeneratorKind(
  name="simulator",
  summary="paper 002's knowledge-driven Gaussian-composition ECG in 12 leads (no patient data)",
  ensure=ensure,
  load=load,
  config=config,
  needs_training=False,
  codes=COVERED_CODES,
)
