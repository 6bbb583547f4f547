"""The training loop shared by every stage: sharded steps, logging, resume.

`train_step(state, batch, key) -> (state, metrics)` is jitted by the caller
with explicit shardings (`jit_train_step`); this loop feeds it global batches
placed on the mesh, fetches metrics only on logging steps, appends them to a
JSON-lines file and as TensorBoard scalars (process 0 only; `events`), traces the
steps a `events.Profile` names with jax.profiler, and saves checkpoints through orbax. A run
restarted with the same arguments resumes from its latest checkpoint,
including the data iterator, and ends with the same parameters as a run that
was never interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from ecgjax import storage
from ecgjax.data import pipeline
from ecgjax.train import events
from ecgjax.train.checkpoint import Checkpointer


def jit_train_step(step_fn: Callable, mesh: Mesh, state_sharding=None):
  """jit with the state replicated (donated), the batch split over 'data'."""
  state_sharding = state_sharding or pipeline.replicated(mesh)
  return jax.jit(
    step_fn,
    in_shardings=(state_sharding, pipeline.batch_sharding(mesh), pipeline.replicated(mesh)),
    out_shardings=(state_sharding, pipeline.replicated(mesh)),
    donate_argnums=0,
  )


def replicate(tree, mesh: Mesh):
  return pipeline.put_replicated(tree, mesh)


def _write_jsonl(path: str | None, record: Mapping):
  if path is None or jax.process_index() != 0:
    return
  storage.append_text(path, json.dumps(record) + "\n")


def fit(
  state,
  train_step: Callable,
  data_iter,
  *,
  num_steps: int,
  mesh: Mesh,
  key: jax.Array,
  checkpointer: Checkpointer | None = None,
  log_every: int = 50,
  metrics_path: str | None = None,
  desc: str = "train",
  lr_fn: Callable[[int], float] | None = None,
  stop_after: int | None = None,
  progress: bool = True,
  steps_per_epoch: int | None = None,
  on_epoch_end: Callable | None = None,
  carry=None,
  events_dir: str | None = None,
  profile: events.Profile | None = None,
):
  """Runs `train_step` until `num_steps`, resuming from `checkpointer` if it has a step.

  stop_after: stop (with a checkpoint) once this many steps are done in total;
  used to simulate an interrupted run in tests.
  on_epoch_end: `(state, carry, epoch) -> (carry, postfix)` after every
  `steps_per_epoch` steps, e.g. validation and best-epoch bookkeeping; `carry`
  (a pytree) is checkpointed with the state and restored with it, and
  `postfix` (a dict) is shown on the progress bar; its numbers are also written as
  TensorBoard scalars under their own names (e.g. 'val/macro_auroc').
  events_dir: the stage's TensorBoard directory (`events.events_dir`): on every logging
  step the step's metrics (the step function's, e.g. loss and grad_norm, with steps_per_s
  and, given lr_fn, the learning rate the step used) as 'train/<name>'. None: no events.
  profile: the steps to trace into events_dir (default: `events.get_profile()`, the
  mains' --profile_steps).
  Returns the final state (replicated on `mesh`), or (state, carry) when a
  carry is given.
  """
  with_carry = carry is not None
  if on_epoch_end is not None and not steps_per_epoch:
    raise ValueError("on_epoch_end needs steps_per_epoch")
  run = {"train": state, "carry": carry} if with_carry else state
  # Process 0's look at the checkpoint directory decides where every process resumes.
  latest = None if checkpointer is None else checkpointer.latest_step()
  latest = int(pipeline.process0_decides(np.int64(-1 if latest is None else latest)))
  start = 0
  if latest >= 0:
    start = latest
    run = checkpointer.restore(run, data_iter, step=latest, sharding=pipeline.replicated(mesh))
  else:
    run = replicate(run, mesh)
  state, carry = (run["train"], run["carry"]) if with_carry else (run, None)
  key = replicate(key, mesh)
  end = num_steps if stop_after is None else min(num_steps, stop_after)
  bar = tqdm(
    total=num_steps,
    initial=start,
    desc=desc,
    unit="step",
    disable=not progress or jax.process_index() != 0,
  )
  writer = events.open_writer(events_dir)
  tracer = events.Tracer(events.get_profile() if profile is None else profile, events_dir)
  t_last, steps_last = time.perf_counter(), start
  try:
    for step in range(start, end):
      tracer.before(step)
      batch = pipeline.shard_batch(next(data_iter), mesh)
      state, metrics = train_step(state, batch, key)
      tracer.after(step, (state, metrics))
      done = step + 1
      if done % log_every == 0 or done == end:
        metrics = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        metrics["steps_per_s"] = (done - steps_last) / max(now - t_last, 1e-9)
        t_last, steps_last = now, done
        if lr_fn is not None:
          metrics["lr"] = float(lr_fn(step))
        _write_jsonl(metrics_path, {"stage": desc, "step": done, **metrics})
        writer.scalars(done, metrics, prefix="train/")
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
      if on_epoch_end is not None and done % steps_per_epoch == 0:
        carry, postfix = on_epoch_end(state, carry, done // steps_per_epoch - 1)
        numbers = {k: v for k, v in postfix.items() if isinstance(v, (int, float, np.number))}
        writer.scalars(done, numbers)
        writer.flush()
        bar.set_postfix({k: f"{v:.4g}" if k in numbers else v for k, v in postfix.items()})
      if checkpointer is not None:
        tree = {"train": state, "carry": carry} if with_carry else state
        checkpointer.save(done, tree, data_iter, force=done == end)
      bar.update(1)
  finally:
    tracer.stop()
    writer.close()
    bar.close()
    if checkpointer is not None:
      checkpointer.wait()
  return (state, carry) if with_carry else state


def read_metrics(path: str) -> list[dict]:
  with storage.open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
