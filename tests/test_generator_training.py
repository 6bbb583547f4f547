"""Generator training and generation: sharding, exact resume, bad checkpoints."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TRAINED_DEVICES, read_scalars, tiny_cfg, trained_cfg, workdir_from

from ecgjax.data import pipeline
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import CheckpointError, ConfigError
from ecgjax.eval import cohorts as generate_main
from ecgjax.eval import judge as judge_lib
from ecgjax.generators import cohort, latent_diffusion
from ecgjax.train import generator as train_lib
from ecgjax.train import loop
from ecgjax.train.state import TrainState, adamw

needs_8 = pytest.mark.skipif(
  jax.device_count() < 8, reason="needs 8 devices (XLA_FLAGS in conftest.py)"
)


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@needs_8
def test_one_unet_step_on_8_devices_equals_one_device():
  cfg = tiny_cfg()
  gen = gen_lib.build(cfg)
  tx = adamw(1e-3, 1e-4)
  z = jnp.zeros((1, 4, 128))
  params = jax.device_get(
    jax.jit(gen.unet.init)(  # jitted: an eager init compiles op by op
      jax.random.PRNGKey(0),
      z,
      jnp.zeros((1,), jnp.int32),
      jnp.zeros((1, 76)),
      jnp.zeros((1,), bool),
    )
  )  # host copy: steps donate
  rng = np.random.default_rng(0)
  batch = {
    "z": rng.normal(size=(16, 4, 128)).astype(np.float32),
    "cond": rng.normal(size=(16, 76)).astype(np.float32),
  }
  step_fn = train_lib.make_unet_step(gen.unet, tx, gen.schedule, 0.1, 0.99)
  results = []
  for n_dev in (1, 8):
    mesh = pipeline.make_mesh(n_dev)
    state = loop.replicate(TrainState.create(params, tx, ema=True), mesh)
    step = loop.jit_train_step(step_fn, mesh)
    new, metrics = step(
      state, pipeline.shard_batch(batch, mesh), loop.replicate(jax.random.PRNGKey(1), mesh)
    )
    results.append((jax.device_get(new.params), float(metrics["loss"])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # and the step changed something
  assert any(
    not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(results[0][0]))
  )


def test_training_resumes_exactly(ptbxl, tmp_path, trained_dir):
  """Both stages interrupted after 3 steps and resumed end with the weights of the
  uninterrupted run: the shared trained artefact, made by the same code on the same
  mesh (its U-Net stage ran 9 steps, keeping every 3rd checkpoint)."""
  cfg = trained_cfg()
  mesh = pipeline.make_mesh(TRAINED_DEVICES)
  straight = latent_diffusion.load_model(trained_dir, cfg, ptbxl.content_key).params
  # Interrupted after 3 of 6 steps (a checkpoint at 3), then the same call again resumes.
  _, _, _, step = train_lib.train_vae(
    cfg, ptbxl, str(tmp_path / "b"), mesh, stop_after=3, progress=False
  )
  assert int(step) == 3
  resumed, mean, std, _ = train_lib.train_vae(cfg, ptbxl, str(tmp_path / "b"), mesh, progress=False)
  _leaves_equal(straight["vae"], resumed)
  np.testing.assert_array_equal(straight["signal_mean"], mean)
  # Same for the U-Net stage (EMA weights, optimiser state and data iterator).
  train_lib.train_unet(
    cfg, ptbxl, str(tmp_path / "b"), mesh, resumed, mean, std, stop_after=3, progress=False
  )
  u_resumed, scale_b, step = train_lib.train_unet(
    cfg, ptbxl, str(tmp_path / "b"), mesh, resumed, mean, std, progress=False
  )
  assert int(step) == 9 and np.float32(scale_b) == straight["latent_scale"]
  _leaves_equal(straight["unet"], u_resumed)
  records = loop.read_metrics(os.path.join(trained_dir, "generator", "metrics.jsonl"))
  assert {r["stage"] for r in records} == {"vae", "unet"} and all(
    np.isfinite(r["loss"]) for r in records
  )
  # The resumed run logged the same losses at the same steps as the straight one.
  resumed_log = loop.read_metrics(str(tmp_path / "b" / "generator" / "metrics.jsonl"))
  key = lambda rs: sorted((r["stage"], r["step"], r["loss"]) for r in rs)
  assert key(resumed_log) == key(records)


def test_stages_write_tensorboard_scalars(trained_dir):
  """The trained artefact's stages (VAE, U-Net, judge) wrote TensorBoard event files
  beside their checkpoints; TensorBoard's own reader finds the logged losses (those of
  metrics.jsonl), the schedule's learning rate, gradient norms, steps/s and the judge's
  validation AUROC per epoch."""
  cfg = trained_cfg()
  records = loop.read_metrics(os.path.join(trained_dir, "generator", "metrics.jsonl"))
  for stage, tcfg in (("vae", cfg.train_vae), ("unet", cfg.train_unet)):
    scalars = read_scalars(os.path.join(trained_dir, "generator", "tensorboard", stage))
    logged = [(r["step"], r["loss"]) for r in records if r["stage"] == stage]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in logged] != []
    np.testing.assert_allclose(
      [v for _, v in scalars["train/loss"]], [v for _, v in logged], rtol=1e-6
    )
    np.testing.assert_allclose(
      [v for _, v in scalars["train/lr"]],
      [float(train_lib._schedule(tcfg)(s - 1)) for s, _ in logged],
      rtol=1e-6,
    )
    for tag in ("train/grad_norm", "train/steps_per_s"):
      assert len(scalars[tag]) == len(logged) and all(v > 0 for _, v in scalars[tag]), tag
  judge = read_scalars(os.path.join(trained_dir, "tensorboard", "judge_train"))
  assert len(judge["val/macro_auroc"]) == cfg.classifier.epochs and judge["train/loss"]
  clf, _ = judge_lib.load(trained_dir, cfg)
  assert max(v for _, v in judge["val/macro_auroc"]) == pytest.approx(clf.val_auroc, rel=1e-6)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, random_generator_dir):
  return tiny_cfg(), workdir_from(tmp_path_factory.mktemp("gen"), random_generator_dir)


def test_interrupted_generation_resumes_to_the_same_cohort(exported, ptbxl, tmp_path):
  cfg, workdir = exported
  mesh = pipeline.make_mesh(1)
  args = dict(
    cfg=cfg, mesh=mesh, ds=ptbxl, workdir=workdir, n=21, seed=3, shard_size=8, progress=False
  )
  generate_main.make_cohort(out=str(tmp_path / "straight"), **args)
  partial = generate_main.make_cohort(out=str(tmp_path / "resumed"), stop_after_shards=1, **args)
  assert not partial["complete"] and len(partial["shards"]) == 1
  with pytest.raises(ConfigError, match="no complete cohort"):
    cohort.read_cohort(str(tmp_path / "resumed"))
  cfg.sample.batch_size = 8  # a different batch size must not change any sample
  generate_main.make_cohort(out=str(tmp_path / "resumed"), **args)
  a, b = (
    cohort.read_cohort(str(tmp_path / "straight")),
    cohort.read_cohort(str(tmp_path / "resumed")),
  )
  assert a["signals"].shape == (21, 12, 1000) and np.array_equal(b["index"], np.arange(21))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert np.isfinite(a["signals"]).all() and a["signals"].std() > 0
  np.testing.assert_array_equal(a["cond"], ptbxl.cond[a["rows"]])
  leftovers = [f for f in os.listdir(tmp_path / "resumed") if f.endswith(".tmp")]
  assert leftovers == []


@needs_8
def test_generation_on_8_devices_equals_1(exported, ptbxl):
  cfg, workdir = exported
  gen = latent_diffusion.load_model(workdir, cfg, ptbxl.content_key)
  cond = ptbxl.cond[:13]
  kw = dict(num_steps=2, cfg_scale=3.0, batch_size=16)
  one = gen.generate(cond, jax.random.PRNGKey(5), mesh=pipeline.make_mesh(1), **kw)
  eight = gen.generate(cond, jax.random.PRNGKey(5), mesh=pipeline.make_mesh(8), **kw)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-5)


def test_cond_of_the_wrong_width_is_an_error(exported, ptbxl):
  cfg, workdir = exported
  gen = latent_diffusion.load_model(workdir, cfg, ptbxl.content_key)
  with pytest.raises(ConfigError, match=r"cond has shape \(4, 75\).*\(n, 76\)"):
    gen.generate(
      np.zeros((4, 75), np.float32),
      jax.random.PRNGKey(0),
      mesh=pipeline.make_mesh(1),
      num_steps=2,
      cfg_scale=3.0,
    )


def test_missing_checkpoint_is_an_error(tmp_path):
  with pytest.raises(CheckpointError, match=f"no trained generator in {tmp_path}"):
    latent_diffusion.load_model(str(tmp_path), tiny_cfg())


def test_checkpoint_from_another_config_is_an_error(exported, ptbxl):
  cfg, workdir = exported
  other = tiny_cfg()
  other.unet.channels = (24, 32)
  with pytest.raises(CheckpointError, match="different config .*differing: unet"):
    latent_diffusion.load_model(workdir, other, ptbxl.content_key)
  with pytest.raises(CheckpointError, match="trained on other data"):
    latent_diffusion.load_model(workdir, cfg, "another-dataset")


def test_corrupt_checkpoint_is_an_error(exported, ptbxl, tmp_path):
  cfg, workdir = exported
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  state_dir = os.path.join(broken, latent_diffusion.EXPORT_DIR, "0", "state")
  for root, _, files in os.walk(state_dir):
    for f in files:
      path = os.path.join(root, f)
      if os.path.getsize(path) > 1000:  # the array data, not the small metadata files
        with open(path, "r+b") as fh:
          fh.truncate(os.path.getsize(path) // 2)
  with pytest.raises(CheckpointError, match="corrupt or does not match"):
    latent_diffusion.load_model(broken, cfg, ptbxl.content_key)
