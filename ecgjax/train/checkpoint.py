"""orbax checkpoints: train state + grain iterator state + JSON metadata.

Every checkpoint carries a `fingerprint` of the config that shapes its arrays
(and of the data it was fitted on), so a checkpoint from another config is a
clear CheckpointError rather than a shape error deep inside orbax. Restores
go into an abstract target with shardings, so a state saved on one mesh can
be restored onto another.
"""

from __future__ import annotations

import grain
import jax
import orbax.checkpoint as ocp

from ecgjax import storage
from ecgjax.errors import CheckpointError


def abstract_like(tree, sharding=None):
  """ShapeDtypeStructs (with a sharding) to restore into."""

  def leaf(x):
    return jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding if sharding is not None else getattr(x, "sharding", None)
    )

  return jax.tree.map(leaf, tree)


class Checkpointer:
  """A CheckpointManager over items `state`, `data` (optional) and `meta`."""

  def __init__(
    self,
    directory: str,
    *,
    meta: dict,
    save_interval_steps: int = 1,
    max_to_keep: int | None = 2,
    keep_period: int | None = None,
    create: bool = True,
    process0_only: bool = False,
  ):
    """keep_period: never delete a checkpoint whose step is a multiple of it (kept beside
    the `max_to_keep` latest ones), e.g. for a convergence study.

    Under several processes a checkpointer is collective: every process creates it on the
    same directory and calls save and restore in the same order (orbax synchronises them;
    process 0 writes host arrays, each process its shards of device arrays).
    process0_only: only process 0 uses this one (an export of host arrays, a result file),
    so orbax waits for no other process.
    """
    self.directory = storage.normalize(directory)  # a local path or a URL (gs://...)
    if not create and not storage.isdir(self.directory):
      raise CheckpointError(f"no checkpoint directory at {self.directory}")
    self.meta = dict(meta)
    multiprocessing = {}
    if process0_only and jax.process_count() > 1:
      if jax.process_index() != 0:
        raise ValueError("a process0_only checkpointer is for process 0")
      # orbax refuses to create the root itself when only some processes take part.
      if create:
        storage.makedirs(self.directory)
      create = False
      multiprocessing["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
        primary_host=0, active_processes={0}
      )
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps,
      max_to_keep=max_to_keep,
      keep_period=keep_period or None,
      create=create,
      enable_async_checkpointing=False,
      **multiprocessing,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
    self, step: int, state, data_iter=None, *, force: bool = False, extra_meta: dict | None = None
  ) -> bool:
    items = {
      "state": ocp.args.StandardSave(state),
      "meta": ocp.args.JsonSave({**self.meta, **(extra_meta or {}), "step": int(step)}),
    }
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def read_meta(self, step: int | None = None) -> dict:
    step = self._step(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(
        f"checkpoint {self.directory} step {step}: unreadable metadata ({e})"
      ) from None
    return dict(restored["meta"])

  def _step(self, step):
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint found in {self.directory}")
    return step

  def check_meta(self, step: int | None = None) -> dict:
    """Compares the stored fingerprint with this run's; mismatches name the keys."""
    stored = self.read_meta(step)
    if stored.get("fingerprint") != self.meta.get("fingerprint"):
      desc_a, desc_b = stored.get("describe", {}), self.meta.get("describe", {})
      diff = sorted(k for k in set(desc_a) | set(desc_b) if desc_a.get(k) != desc_b.get(k))
      raise CheckpointError(
        f"checkpoint {self.directory} was written by a different config "
        f"(stored fingerprint {stored.get('fingerprint')}, this run {self.meta.get('fingerprint')}); "
        f"differing: {', '.join(diff) or 'unknown'}"
      )
    return stored

  def restore(self, state_template, data_iter=None, step: int | None = None, sharding=None):
    """Restores state (into `state_template`'s shapes and shardings) and the iterator."""
    step = self._step(step)
    self.check_meta(step)
    items = {"state": ocp.args.StandardRestore(abstract_like(state_template, sharding))}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      raise CheckpointError(
        f"checkpoint {self.directory} step {step} is corrupt or does not match this model "
        f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})"
      ) from None
    return restored["state"]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
