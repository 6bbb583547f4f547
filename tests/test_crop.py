"""The PTB-XL benchmark's classifier protocol: random crops in training, window-max prediction."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import configs
from ecgjax.data import pipeline
from ecgjax.errors import ConfigError
from ecgjax.models import xresnet1d
from ecgjax.train import classifier


def _arrays(n=24, length=1000):
  # Each record's samples are its id * 10000 + time index, so a crop reveals its start.
  t = np.arange(length, dtype=np.float32)
  signal = np.stack([np.broadcast_to(i * 10_000 + t, (2, length)) for i in range(n)])
  return {"signal": signal, "id": np.arange(n)}


def _take(it, k):
  return [next(it) for _ in range(k)]


def _starts(batch):
  return (batch["signal"][:, 0, 0] - batch["id"] * 10_000).astype(int)


def _crops(seed, k=6, **kw):
  it = iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=seed, crop=250, **kw))
  return _take(it, k)


def test_crops_are_windows_of_the_record_and_deterministic_per_seed():
  a, b, c = _crops(0), _crops(0), _crops(1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["signal"], y["signal"])
  assert any(not np.array_equal(x["signal"], z["signal"]) for x, z in zip(a, c))
  for batch in a:
    assert batch["signal"].shape == (8, 2, 250)
    start = _starts(batch)
    assert ((start >= 0) & (start <= 750)).all()
    expected = batch["id"][:, None] * 10_000 + start[:, None] + np.arange(250)
    np.testing.assert_array_equal(batch["signal"][:, 1, :], expected)


def test_each_epoch_draws_new_crops_of_the_same_record():
  batches = _crops(0, k=30)  # 10 epochs of 24 records
  starts = {}
  for b in batches:
    for i, s in zip(b["id"], _starts(b)):
      starts.setdefault(int(i), []).append(int(s))
  assert all(len(set(v)) > 1 for v in starts.values())


def test_crops_resume_exactly():
  reference = _crops(0, k=10)
  it = iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0, crop=250))
  _take(it, 4)  # past one epoch boundary (3 batches)
  state = json.loads(json.dumps(it.get_state()))
  fresh = iter(pipeline.train_dataset(_arrays(), global_batch_size=8, seed=0, crop=250))
  fresh.set_state(state)
  for expected, got in zip(reference[4:], _take(fresh, 6)):
    np.testing.assert_array_equal(expected["signal"], got["signal"])


def test_crops_do_not_depend_on_the_process_count():
  single = _crops(2, k=3)
  halves = [_crops(2, k=3, process_index=p, process_count=2) for p in (0, 1)]
  for step in range(3):
    joined = np.concatenate([halves[0][step]["signal"], halves[1][step]["signal"]])
    order = np.argsort(np.concatenate([halves[0][step]["id"], halves[1][step]["id"]]))
    ref = np.argsort(single[step]["id"])
    np.testing.assert_array_equal(joined[order], single[step]["signal"][ref])


def test_windows_cover_the_record():
  assert classifier.windows(1000, 250, 125) == (0, 125, 250, 375, 500, 625, 750)
  assert classifier.windows(1000, 300, 200) == (0, 200, 400, 600, 700)
  assert classifier.windows(1000, 0, 125) == (0,)


@pytest.mark.parametrize("crop,stride", [(250, 125), (300, 200)])
def test_window_prediction_is_the_max_over_windows_one_by_one(crop, stride):
  model = xresnet1d.xresnet1d50(num_classes=5)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, crop)), train=False)
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (6, 12, 1000)))
  mean, std = np.zeros(12, np.float32), np.ones(12, np.float32)
  mesh = pipeline.make_mesh(2)
  got = classifier.predict(
    model, variables, mean, std, x, mesh, batch_size=4, logits=True, crop=crop, crop_stride=stride
  )
  one_by_one = np.stack(
    [
      np.asarray(model.apply(variables, jnp.asarray(x[:, :, s : s + crop]), train=False))
      for s in classifier.windows(1000, crop, stride)
    ]
  ).max(axis=0)
  np.testing.assert_allclose(got, one_by_one, rtol=1e-4, atol=1e-4)
  probs = classifier.predict(
    model, variables, mean, std, x, mesh, batch_size=4, crop=crop, crop_stride=stride
  )
  np.testing.assert_allclose(probs, classifier.sigmoid(one_by_one), rtol=1e-4, atol=1e-5)


def test_bad_protocol_is_a_clear_error():
  ccfg = configs.get_config("mini").classifier
  ccfg.crop = 1200
  with pytest.raises(ConfigError, match="classifier.crop=1200"):
    classifier.check_protocol(ccfg)
  ccfg.update(crop=250, crop_stride=0)
  with pytest.raises(ConfigError, match="crop_stride=0"):
    classifier.check_protocol(ccfg)


def test_an_exported_classifier_keeps_its_protocol(tmp_path):
  ccfg = configs.get_config("mini").classifier
  model = classifier.build_model(ccfg)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 12, 250)), train=False))(
    jax.random.PRNGKey(0)
  )
  clf = classifier.Classifier(
    model,
    jax.device_get(variables),
    np.zeros(12, np.float32),
    np.ones(12, np.float32),
    crop=250,
    crop_stride=125,
  )
  classifier.export(str(tmp_path / "clf"), clf, ccfg)
  loaded, _ = classifier.load(str(tmp_path / "clf"), ccfg)  # the config's crop (0) does not matter
  assert (loaded.crop, loaded.crop_stride) == (250, 125)
