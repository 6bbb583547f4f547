"""Training the XResNet1d classifier (TSTR classifier and judge; docs/design.md §3, §5).

BCE on multi-hot labels, AdamW with a one-cycle schedule, batch sharded over
the ('data',) mesh, and after every epoch the macro AUROC on the real
validation fold (9): the best epoch's weights are kept. The whole run state
(train state, best weights, data iterator) is checkpointed per epoch with
orbax, so an interrupted run resumes and ends where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax import fingerprints, metrics, storage
from ecgjax.data import pipeline
from ecgjax.data.records import NUM_SAMPLES
from ecgjax.data.signals import lead_stats, standardise
from ecgjax.errors import ConfigError
from ecgjax.fingerprints import fingerprint
from ecgjax.models import xresnet1d
from ecgjax.train import events, loop
from ecgjax.train.checkpoint import Checkpointer
from ecgjax.train.state import TrainState

ARCHS = {
  "xresnet1d50": xresnet1d.xresnet1d50,
  "xresnet1d101": xresnet1d.xresnet1d101,
  # One bottleneck per stage, widths of 16 (22,759 parameters with 71 outputs): the same
  # code path at a fraction of the compile and step time, for tests and data-path benchmarks.
  "xresnet1d_tiny": functools.partial(
    xresnet1d.XResNet1d,
    layers=(1, 1, 1, 1),
    widths=(16, 16, 16, 16),
    stem_widths=(8, 8, 16),
    head_hidden=32,
  ),
}


# Training scalars (loss, learning rate, ...) every this many steps, and at every epoch's end.
LOG_EVERY = 50


def build_model(ccfg, num_classes: int = 71):
  if ccfg.arch not in ARCHS:
    raise ConfigError(f"--config.classifier.arch={ccfg.arch!r}: choose one of {', '.join(ARCHS)}")
  return ARCHS[ccfg.arch](num_classes=num_classes)


def windows(length: int, crop: int, stride: int) -> tuple[int, ...]:
  """Start offsets of the prediction windows: every `stride` samples, plus the last
  window flush with the record's end when the stride does not land there (so
  every sample is covered). crop 0 is the whole record."""
  if not crop or crop >= length:
    return (0,)
  starts = list(range(0, length - crop + 1, stride))
  if starts[-1] != length - crop:
    starts.append(length - crop)
  return tuple(starts)


def check_protocol(ccfg) -> tuple[int, int]:
  """(crop, crop_stride) of a classifier config, validated; crop 0 is the whole record."""
  crop, stride = int(ccfg.get("crop", 0) or 0), int(ccfg.get("crop_stride", 0) or 0)
  if crop and not 1 <= crop <= NUM_SAMPLES:
    raise ConfigError(
      f"--config.classifier.crop={crop}: must be 0 (whole record) or 1..{NUM_SAMPLES} samples"
    )
  if crop and stride < 1:
    raise ConfigError(f"--config.classifier.crop_stride={stride}: must be >= 1 when crop is set")
  return crop, stride


@dataclasses.dataclass
class Classifier:
  """A trained classifier: model, weights, its input standardisation and protocol.

  crop > 0: trained on random `crop`-sample windows; a record's prediction is
  the maximum over its windows (`windows(1000, crop, crop_stride)`).
  """

  model: object
  variables: dict  # {'params', 'batch_stats'}
  mean: np.ndarray  # (12,) per-lead statistics of its training set
  std: np.ndarray
  best_epoch: int = -1
  val_auroc: float = float("nan")
  crop: int = 0
  crop_stride: int = 0

  def predict(
    self, signals: np.ndarray, mesh: Mesh, batch_size: int = 256, logits: bool = False
  ) -> np.ndarray:
    """Sigmoid probabilities (or logits) for (N, 12, 1000) signals, sharded over 'data'."""
    return predict(
      self.model,
      self.variables,
      self.mean,
      self.std,
      signals,
      mesh,
      batch_size,
      logits,
      crop=self.crop,
      crop_stride=self.crop_stride,
    )

  def embed(self, signals: np.ndarray, mesh: Mesh, batch_size: int = 256) -> np.ndarray:
    """(N, hidden) penultimate-layer embeddings, averaged over the prediction windows."""
    return predict(
      self.model,
      self.variables,
      self.mean,
      self.std,
      signals,
      mesh,
      batch_size,
      crop=self.crop,
      crop_stride=self.crop_stride,
      embed=True,
    )


def window_embeddings(model, variables, x, starts: tuple[int, ...], crop: int):
  """(B, 12, T) inputs -> (B, hidden) penultimate-layer activations (the head's 128 units
  after its second BatchNorm), averaged over the prediction windows."""
  b = x.shape[0]
  if starts == (0,) and (not crop or crop >= x.shape[-1]):
    stacked = x[:, None]
  else:
    stacked = jnp.stack([x[..., s : s + crop] for s in starts], axis=1)  # (B, W, 12, crop)
  flat = stacked.reshape(b * stacked.shape[1], *stacked.shape[2:])
  _, state = model.apply(variables, flat, train=False, mutable=["intermediates"])
  (emb,) = state["intermediates"]["head"]["embedding"]
  return emb.reshape(b, stacked.shape[1], -1).mean(axis=1)


def window_max_logits(model, variables, x, starts: tuple[int, ...], crop: int):
  """Per-class maximum of the model's logits over the windows of (B, 12, T) inputs.

  The windows go through the model as one batch of B x W records; the maximum
  of the logits is the logit of the maximum probability (the sigmoid is monotone).
  """
  if starts == (0,) and (not crop or crop >= x.shape[-1]):
    return model.apply(variables, x, train=False)
  b = x.shape[0]
  stacked = jnp.stack([x[..., s : s + crop] for s in starts], axis=1)  # (B, W, 12, crop)
  out = model.apply(variables, stacked.reshape(b * len(starts), *x.shape[1:-1], crop), train=False)
  return out.reshape(b, len(starts), -1).max(axis=1)


@functools.lru_cache(maxsize=16)
def _predict_fn(model, mesh: Mesh, starts: tuple[int, ...], crop: int, embed: bool = False):
  """One compiled eval function per (model, mesh, windows, output), shared by every call."""
  rep = NamedSharding(mesh, P())
  head = window_embeddings if embed else window_max_logits
  return jax.jit(
    lambda v, m, s, x: head(model, v, standardise(x, m, s), starts, crop),
    in_shardings=(rep, rep, rep, pipeline.batch_sharding(mesh)),
    out_shardings=rep,
  )


def sigmoid(logits: np.ndarray) -> np.ndarray:
  """The logistic function on host arrays, written with tanh so no exp overflows."""
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits)))


def predict(
  model,
  variables,
  mean,
  std,
  signals,
  mesh,
  batch_size=256,
  logits=False,
  crop=0,
  crop_stride=0,
  embed=False,
):
  """Probabilities (or logits, or with embed=True the penultimate-layer embeddings) of
  (N, leads, T) signals, batch sharded over 'data'."""
  n_dev = mesh.shape[pipeline.DATA_AXIS]
  batch_size = max(n_dev, batch_size // n_dev * n_dev)
  fn = _predict_fn(model, mesh, windows(signals.shape[-1], crop, crop_stride), crop, embed)
  variables, mean, std = pipeline.put_replicated(
    (variables, np.asarray(mean), np.asarray(std)), mesh
  )
  width = model.head_hidden if embed else model.num_classes
  out = np.zeros((len(signals), width), np.float32)
  for batch in pipeline.eval_dataset({"signal": signals}, global_batch_size=batch_size):
    placed = pipeline.shard_batch(batch, mesh)
    y = np.asarray(fn(variables, mean, std, placed["signal"]))
    # y holds the whole global batch; under several processes this process's batch is only
    # its slice of it, so the rows' indices and masks come from the global batch too.
    keep = pipeline.host_value(placed["mask"])
    out[pipeline.host_value(placed["index"])[keep]] = y[keep]
  return out if logits or embed else sigmoid(out)


def make_step(model, tx, mean, std, pos_weight=None):
  """One training step: BCE on the labels, positives of class k weighted by pos_weight[k]
  (PyTorch's BCEWithLogitsLoss(pos_weight=...) for hard labels)."""
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def step(state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    x = standardise(batch["signal"], mean, std)

    def loss_fn(params):
      logits, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": key},
      )
      loss = optax.sigmoid_binary_cross_entropy(logits, batch["label"])
      if pos_weight is not None:
        loss = loss * (1.0 + (jnp.asarray(pos_weight) - 1.0) * batch["label"])
      loss = loss.mean()
      return loss, updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return state.apply_gradients(grads, tx, batch_stats=stats), metrics

  return step


def val_macro_auroc(y_true, y_prob) -> float:
  """Macro AUROC over codes with a positive and a negative in the validation fold."""
  auc = metrics.auroc_per_code(y_true, y_prob)
  return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def train_classifier(
  ccfg,
  train_signals,
  train_labels,
  val_signals,
  val_labels,
  *,
  mesh: Mesh,
  ckpt_dir: str | None,
  seed: int,
  progress: bool = True,
  stop_after_epochs: int | None = None,
  desc: str = "classifier",
  pos_weight: np.ndarray | None = None,
  init_variables: dict | None = None,
  events_dir: str | None = None,
) -> Classifier:
  """Trains for `ccfg.epochs` epochs with `loop.fit`; returns the best-on-validation classifier.

  After every epoch the macro AUROC on the validation signals (predicted with
  the same protocol) decides whether the epoch's weights become the best;
  the best weights travel in fit's checkpointed carry, so a resumed run picks
  the same epoch as an uninterrupted one. Signals may have any number of leads
  (e.g. lead II alone), and may be any array-like with numpy row indexing, `len` and
  `shape` (a memmap, a cohort's lazily read `ShardedArray`): the statistics are
  accumulated over chunks and grain reads one row per element, so they are never
  loaded whole and training gives the same weights as on the concatenated array.
  pos_weight (K,): weight of each class's positives in
  the loss. init_variables: start from these weights (fine-tuning a pre-trained
  classifier) instead of a fresh initialisation.
  events_dir: where its TensorBoard scalars go (loss, learning rate, gradient norm,
  steps/s, and after every epoch val/macro_auroc); default `tensorboard/<name>` beside
  ckpt_dir (`events.events_dir`), none without a ckpt_dir.
  """
  crop, stride = check_protocol(ccfg)
  n = len(train_signals)
  batch = min(ccfg.batch_size, n)
  batch -= batch % mesh.shape[pipeline.DATA_AXIS]
  if batch <= 0:
    raise ConfigError(
      f"classifier needs at least {mesh.shape[pipeline.DATA_AXIS]} training samples, got {n}"
    )
  steps_per_epoch = n // batch
  total = steps_per_epoch * ccfg.epochs
  mean, std = lead_stats(train_signals)
  model = build_model(ccfg, train_labels.shape[1])
  lr = optax.cosine_onecycle_schedule(total, ccfg.learning_rate, pct_start=0.3)
  tx = optax.adamw(lr, weight_decay=ccfg.weight_decay)
  key = jax.random.PRNGKey(seed)
  length = crop or train_signals.shape[-1]
  leads = train_signals.shape[1]
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, leads, length)), train=False))(key)
  if init_variables is not None:
    if jax.tree.structure(init_variables) != jax.tree.structure(variables) or any(
      a.shape != b.shape
      for a, b in zip(jax.tree.leaves(init_variables), jax.tree.leaves(variables))
    ):
      raise ConfigError(
        "init_variables do not fit this classifier (architecture, leads or classes)"
      )
    variables = jax.tree.map(jnp.asarray, init_variables)
  state = TrainState.create(variables["params"], tx, batch_stats=variables["batch_stats"])
  carry = {
    # A copy: the train step donates the state's buffers, which must not be the carry's.
    "best": jax.tree.map(jnp.copy, dict(variables)),
    "best_auroc": np.float32(-1.0),
    "best_epoch": np.int32(-1),
  }
  data = iter(
    pipeline.train_dataset(
      {"signal": train_signals, "label": train_labels.astype(np.float32)},
      global_batch_size=batch,
      seed=seed,
      crop=crop or None,
    )
  )
  ckpt = None
  if ckpt_dir is not None:
    describe = {
      "classifier": fingerprints.describe(ccfg),
      "n": n,
      "seed": seed,
      "leads": leads,
      "pos_weight": None if pos_weight is None else np.asarray(pos_weight).tolist(),
      "fine_tuned": init_variables is not None,
    }
    ckpt = Checkpointer(
      ckpt_dir,
      meta={"fingerprint": fingerprint(describe), "describe": describe},
      max_to_keep=1,
      save_interval_steps=steps_per_epoch,
    )

  def on_epoch_end(state, carry, epoch):
    current = {"params": state.params, "batch_stats": state.batch_stats}
    prob = predict(model, current, mean, std, val_signals, mesh, crop=crop, crop_stride=stride)
    auc = val_macro_auroc(val_labels, prob)
    if np.isfinite(auc) and auc > float(carry["best_auroc"]):
      carry = {
        "best": jax.tree.map(jnp.copy, current),
        "best_auroc": np.float32(auc),
        "best_epoch": np.int32(epoch),
      }
    return carry, {"epoch": epoch + 1, "val/macro_auroc": auc}

  if events_dir is None and ckpt_dir is not None:
    events_dir = events.events_dir(ckpt_dir)
  stop_after = None if stop_after_epochs is None else stop_after_epochs * steps_per_epoch
  try:
    state, carry = loop.fit(
      state,
      loop.jit_train_step(make_step(model, tx, mean, std, pos_weight), mesh),
      data,
      num_steps=total,
      mesh=mesh,
      key=jax.random.fold_in(key, 1),
      checkpointer=ckpt,
      log_every=min(steps_per_epoch, LOG_EVERY),
      desc=desc,
      lr_fn=lr,
      events_dir=events_dir,
      stop_after=stop_after,
      progress=progress,
      steps_per_epoch=steps_per_epoch,
      on_epoch_end=on_epoch_end,
      carry=carry,
    )
  finally:
    if ckpt is not None:
      ckpt.close()
  best_epoch = int(carry["best_epoch"])
  chosen = (
    carry["best"] if best_epoch >= 0 else {"params": state.params, "batch_stats": state.batch_stats}
  )
  return Classifier(
    model,
    jax.device_get(chosen),
    mean,
    std,
    best_epoch,
    float(carry["best_auroc"]),
    crop=crop,
    crop_stride=stride,
  )


def _export_describe(ccfg) -> dict:
  """What an exported classifier must agree on to be loaded: its architecture only.

  Training settings (epochs, learning rate, seed) shaped the weights' values,
  not their shapes, so a judge trained with other epochs still loads.
  """
  return {"classifier": {"arch": ccfg.arch}}


def export(path: str, clf: Classifier, ccfg, extra: dict | None = None) -> None:
  """Saves a trained classifier (weights, input statistics, extras) with orbax.

  A result file: process 0 writes it, alone (any other process returns at once), so it
  may be called by every process or by process 0 only; readers on other processes must
  wait for it (`pipeline.barrier`).
  """
  if jax.process_index() != 0:
    return
  describe = _export_describe(ccfg)
  meta = {
    "fingerprint": fingerprint(describe),
    "describe": describe,
    "best_epoch": clf.best_epoch,
    "val_auroc": clf.val_auroc,
    # The prediction protocol the weights were trained for; a loaded classifier keeps it.
    "crop": clf.crop,
    "crop_stride": clf.crop_stride,
    # Its shape: outputs and input leads (the judge: 71 and 12).
    "num_classes": int(clf.model.num_classes),
    "leads": int(np.shape(clf.mean)[0]),
  }
  tree = {"variables": clf.variables, "mean": clf.mean, "std": clf.std, **(extra or {})}
  ckpt = Checkpointer(path, meta=meta, max_to_keep=1, process0_only=True)
  ckpt.save(0, tree, force=True)
  ckpt.wait()
  ckpt.close()


def load(path: str, ccfg, extra_template: dict | None = None) -> tuple[Classifier, dict]:
  """The classifier exported at `path` (CheckpointError when missing or mismatched)."""
  from ecgjax.errors import CheckpointError

  if not storage.isdir(path):
    raise CheckpointError(f"no classifier checkpoint at {path}")
  describe = _export_describe(ccfg)
  ckpt = Checkpointer(
    path, meta={"fingerprint": fingerprint(describe), "describe": describe}, create=False
  )
  meta = ckpt.read_meta()
  leads = int(meta.get("leads", 12))
  model = build_model(ccfg, int(meta.get("num_classes", 71)))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, leads, 1000)), train=False)
  )
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  template = {
    "variables": dict(variables),
    "mean": f32(leads),
    "std": f32(leads),
    **(extra_template or {}),
  }
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  tree = ckpt.restore(template, sharding=cpu)
  ckpt.close()
  tree = jax.device_get(tree)
  clf = Classifier(
    model,
    tree.pop("variables"),
    tree.pop("mean"),
    tree.pop("std"),
    int(meta.get("best_epoch", -1)),
    float(meta.get("val_auroc", float("nan"))),
    crop=int(meta.get("crop", 0)),
    crop_stride=int(meta.get("crop_stride", 0)),
  )
  return clf, tree
