"""Throughput of the XResNet1d train step and inference, JAX against PyTorch.

Prints medians over `--steps` timed steps after warm-up, in samples/s, for
each batch size, and the JAX/PyTorch ratio when torch is importable (the
PyTorch twin lives in tests/torch_xresnet1d.py). It asserts nothing: timings
on a shared CPU are figures to read, not facts to test.

  python -m experiments.bench_xresnet --batch=32,128 --steps=5
  python -m experiments.bench_xresnet --batch=32 --notorch --conv_impl=fast,xla,matmul \
      --materialize=false
  python -m experiments.bench_xresnet --json_out=xresnet.json  # also a table and JSON
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from ecgjax.models import xresnet1d
from experiments import bench_sampler as bench

_BATCH = flags.DEFINE_list("batch", ["32", "128"], "Batch sizes to time.")
_LENGTH = flags.DEFINE_integer("length", 1000, "Signal length (samples).")
_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compile.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "JAX compute dtype.")
_CONV = flags.DEFINE_list(
  "conv_impl", ["fast"], f"JAX conv implementations to time: {sorted(xresnet1d.CONV_IMPLS)}."
)
_MATERIALIZE = flags.DEFINE_enum(
  "materialize", "auto", ["auto", "true", "false"], "XResNet1d.materialize (auto: on for CPU)."
)
_MODEL = flags.DEFINE_enum("model", "xresnet1d50", ["xresnet1d50", "xresnet1d101"], "Model.")
_WIDE = flags.DEFINE_bool("wide", False, "Stage widths 64-128-256-512 instead of 64 x 4.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch twin if torch imports.")
_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
_MODES = flags.DEFINE_list("modes", ["train", "infer"], "What to time: train, infer.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write every figure and ratio here as JSON.")
bench.define_torch_device_flags()

NUM_CLASSES = 71


def _median_time(fn, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _model_kwargs():
  return {"widths": (64, 128, 256, 512)} if _WIDE.value else {}


def _materialize():
  return {"auto": None, "true": True, "false": False}[_MATERIALIZE.value]


def jax_bench(conv_impl: str, batch: int, length: int, mode: str) -> tuple[float, float]:
  """Returns (median seconds per step, compile+first-step seconds)."""
  model = getattr(xresnet1d, _MODEL.value)(
    conv_impl=conv_impl,
    materialize=_materialize(),
    dtype=jnp.dtype(_DTYPE.value),
    **_model_kwargs(),
  )
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(batch, 12, length), jnp.float32)
  y = jnp.asarray(rng.rand(batch, NUM_CLASSES) < 0.1, jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x[:1], train=False)

  if mode == "infer":
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    t0 = time.perf_counter()
    fwd(variables, x).block_until_ready()
    compile_s = time.perf_counter() - t0
    return _median_time(
      lambda: fwd(variables, x).block_until_ready(), _STEPS.value, _WARMUP.value
    ), compile_s

  tx = optax.adamw(1e-3, weight_decay=1e-2)
  state = {
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "opt": tx.init(variables["params"]),
    "step": jnp.zeros((), jnp.int32),
  }

  def loss_fn(params, batch_stats, x, y, key):
    logits, upd = model.apply(
      {"params": params, "batch_stats": batch_stats},
      x,
      train=True,
      rngs={"dropout": key},
      mutable=["batch_stats"],
    )
    return optax.sigmoid_binary_cross_entropy(logits, y).mean(), upd["batch_stats"]

  def train_step(state, x, y, key):
    key = jax.random.fold_in(key, state["step"])
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], state["batch_stats"], x, y, key
    )
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {
      "params": optax.apply_updates(state["params"], updates),
      "batch_stats": stats,
      "opt": opt,
      "step": state["step"] + 1,
    }, loss

  step = jax.jit(train_step, donate_argnums=0)
  key = jax.random.PRNGKey(1)
  holder = [state]

  def run():
    holder[0], loss = step(holder[0], x, y, key)
    loss.block_until_ready()

  t0 = time.perf_counter()
  run()
  compile_s = time.perf_counter() - t0
  return _median_time(run, _STEPS.value, _WARMUP.value), compile_s


def torch_bench(batch: int, length: int, mode: str) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  try:
    from tests.torch_xresnet1d import TorchXResNet1d
  except ImportError:
    print(
      "torch is installed but tests/torch_xresnet1d.py is not importable; "
      "run from the repository root to time the PyTorch twin"
    )
    return None
  torch.set_num_threads(_THREADS.value)
  device, sync = bench.torch_device(torch, flags.FLAGS.torch_device, flags.FLAGS.torch_tf32)
  torch.manual_seed(0)
  layers = (3, 4, 6, 3) if _MODEL.value == "xresnet1d50" else (3, 4, 23, 3)
  model = TorchXResNet1d(layers=layers, num_classes=NUM_CLASSES, **_model_kwargs())
  x = torch.randn(batch, 12, length)
  y = (torch.rand(batch, NUM_CLASSES) < 0.1).float()
  if mode == "infer":
    model.eval()

    def run():
      with torch.inference_mode():
        model(x)
      sync()
  else:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

    def run():
      opt.zero_grad(set_to_none=True)
      torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
      opt.step()
      sync()

  return _median_time(run, _STEPS.value, _WARMUP.value + 1)


def main(argv):
  del argv
  bad = [m for m in _MODES.value if m not in ("train", "infer")]
  bad += [c for c in _CONV.value if c not in xresnet1d.CONV_IMPLS]
  if bad:
    raise app.UsageError(f"unknown --modes/--conv_impl value(s): {', '.join(bad)}")
  print(
    f"jax {jax.__version__} on {jax.devices()[0].device_kind}; model {_MODEL.value}"
    f"{' (wide)' if _WIDE.value else ''}, L={_LENGTH.value}, dtype {_DTYPE.value}, "
    f"materialize {_MATERIALIZE.value}, "
    f"median of {_STEPS.value} steps"
  )
  results = []
  for mode in _MODES.value:
    for batch in (int(b) for b in _BATCH.value):
      torch_s = torch_bench(batch, _LENGTH.value, mode) if _TORCH.value else None
      if torch_s is not None:
        print(
          f"{mode:5s} batch {batch:4d}  torch            {batch / torch_s:8.1f} "
          f"samples/s  ({torch_s * 1e3:7.1f} ms/step)",
          flush=True,
        )
        results.append(
          dict(mode=mode, batch=batch, impl="torch", seconds=torch_s, samples_per_s=batch / torch_s)
        )
      for impl in _CONV.value:
        jax_s, compile_s = jax_bench(impl, batch, _LENGTH.value, mode)
        ratio = f"  JAX/PyTorch {torch_s / jax_s:.2f}" if torch_s else ""
        print(
          f"{mode:5s} batch {batch:4d}  jax[{impl:7s}]   {batch / jax_s:8.1f} "
          f"samples/s  ({jax_s * 1e3:7.1f} ms/step, compile {compile_s:4.1f} s)"
          f"{ratio}",
          flush=True,
        )
        results.append(
          dict(
            mode=mode,
            batch=batch,
            impl=f"jax[{impl}]",
            seconds=jax_s,
            samples_per_s=batch / jax_s,
            compile_s=compile_s,
            jax_vs_torch=torch_s / jax_s if torch_s else None,
          )
        )
  print("\n| step | batch | implementation | samples/s | ms/step | JAX/PyTorch |")
  print("| --- | --- | --- | --- | --- | --- |")
  for r in results:
    ratio = f"{r['jax_vs_torch']:.2f}" if r.get("jax_vs_torch") else "-"
    print(
      f"| {r['mode']} | {r['batch']} | {r['impl']} | {r['samples_per_s']:.1f} | "
      f"{r['seconds'] * 1e3:.1f} | {ratio} |"
    )
  if _JSON_OUT.value:
    import json
    import os

    record = {
      "benchmark": "xresnet",
      "model": _MODEL.value,
      "wide": _WIDE.value,
      "length": _LENGTH.value,
      "dtype": _DTYPE.value,
      "steps": _STEPS.value,
      "torch_threads": _THREADS.value,
      "torch_device": flags.FLAGS.torch_device,
      "torch_tf32": flags.FLAGS.torch_tf32,
      "machine": bench.machine_info(),
      "load_average": list(os.getloadavg()),
      "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(_JSON_OUT.value)), exist_ok=True)
    with open(_JSON_OUT.value, "w") as f:
      json.dump(record, f, indent=2)
    print(f"wrote {_JSON_OUT.value}")


if __name__ == "__main__":
  app.run(main)
