"""Limb-lead identities: the residual measure and the least-squares projection."""

import jax
import numpy as np
import pytest
from conftest import tiny_cfg

from ecgjax.data import pipeline
from ecgjax.data.signals import (
  LIMB_FROM_I_II,
  LIMB_PROJECTOR,
  limb_residuals,
  project_limb_leads,
)
from ecgjax.errors import ConfigError
from ecgjax.generators import latent_diffusion


def test_projector_is_the_least_squares_fit_of_two_leads():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 12, 50))
  projected = np.asarray(project_limb_leads(x.astype(np.float32)), np.float64)
  for n in range(3):
    # numpy's least squares: the (I, II) pair whose implied six limb leads fit best.
    coef, *_ = np.linalg.lstsq(LIMB_FROM_I_II, x[n, :6], rcond=None)
    np.testing.assert_allclose(projected[n, :6], LIMB_FROM_I_II @ coef, atol=1e-5)
  np.testing.assert_array_equal(projected[:, 6:], x[:, 6:].astype(np.float32))
  assert np.allclose(LIMB_PROJECTOR @ LIMB_PROJECTOR, LIMB_PROJECTOR)
  assert np.linalg.matrix_rank(LIMB_PROJECTOR) == 2
  # After projection every identity holds to float precision.
  for name, r in limb_residuals(projected).items():
    assert r.max() < 1e-6, name


def test_consistent_signals_are_left_alone():
  rng = np.random.default_rng(1)
  i_ii = rng.normal(size=(2, 2, 40))
  x = np.concatenate(
    [np.einsum("lk,nkt->nlt", LIMB_FROM_I_II, i_ii), rng.normal(size=(2, 6, 40))], 1
  )
  np.testing.assert_allclose(np.asarray(project_limb_leads(x)), x, atol=1e-5)
  assert max(r.max() for r in limb_residuals(x).values()) < 1e-12


def test_residuals_on_real_records_and_on_noise(ptbxl):
  real = limb_residuals(ptbxl.signals)
  # PTB-XL's limb leads are derived from two, so only quantisation and filtering remain.
  assert all(np.median(r) < 0.01 for r in real.values())
  noise = limb_residuals(np.random.default_rng(2).normal(size=(8, 12, 1000)))
  assert all(np.median(r) > 0.5 for r in noise.values())
  # By hand: I = 1, II = 1, III = 1 (should be 0), augmented leads consistent with I, II.
  x = np.zeros((1, 12, 4))
  x[0, 0], x[0, 1], x[0, 2], x[0, 3], x[0, 4], x[0, 5] = 1, 1, 1, -1, 0.5, 0.5
  r = limb_residuals(x)
  assert r["einthoven"][0] == pytest.approx(1 / (5 / 6)) and r["avr"][0] == 0


def test_generator_option_projects_its_output(ptbxl, random_generator_dir):
  cfg = tiny_cfg()
  workdir = random_generator_dir
  mesh = pipeline.make_mesh(1)
  cond = ptbxl.cond[:4]
  out = {}
  for mode in ("generated", "projected"):
    cfg.sample.limb_leads = mode
    gen = latent_diffusion.load(cfg, ptbxl, workdir)
    assert gen.identity["limb_leads"] == mode
    out[mode] = gen.generate(cond, jax.random.PRNGKey(0), mesh=mesh)
  assert max(r.max() for r in limb_residuals(out["projected"]).values()) < 1e-5
  assert min(np.median(r) for r in limb_residuals(out["generated"]).values()) > 1e-3
  np.testing.assert_allclose(
    out["projected"], np.asarray(project_limb_leads(out["generated"])), atol=1e-4
  )
  cfg.sample.limb_leads = "average"
  with pytest.raises(ConfigError, match="limb_leads"):
    latent_diffusion.load(cfg, ptbxl, workdir)
