"""Throughput of the generator's training steps (VAE, U-Net) in JAX and in PyTorch.

  python -m experiments.bench_generator_train [--preset=paper] [--parts=vae,unet] \
      [--vae_batch=8] [--unet_batch=64] [--steps=3] [--json_out=train.json]

The JAX steps are the production ones (ecgjax/train/generator.py: the VAE's
reconstruction + KL with a sampled latent, the U-Net's v-prediction loss with
condition dropout and EMA weights; AdamW with global-norm clipping), jitted
with the state donated as `loop.jit_train_step` does. The PyTorch steps are
the twin's (tests/torch_generator.py: the same losses, clipping, AdamW and
EMA, multi-tensor), starting from the same random weights. Each timed step of
one is followed by one of the other, so a change of load on a shared machine
hits both; medians of `--steps` steps after `--warmup`, compile apart (each
PyTorch step ends with `.item()`, which waits for the GPU; `--torch_device`). FLOPs
per step from XLA's cost analysis give the achieved FLOP/s. The twin's losses
and gradients equal ours (tests/test_torch_generator.py); this benchmark only
times. Prints a table; `--json_out` writes every figure and ratio.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import numpy as np
from absl import flags

from ecgjax import configs, errors
from ecgjax.data import pipeline
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import ConfigError
from ecgjax.train import generator as train_lib
from ecgjax.train import loop
from ecgjax.train.state import TrainState, adamw
from experiments import bench_sampler as bench

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum("preset", "paper", configs.PRESETS, "Model sizes and optimiser settings.")
  flags.DEFINE_list("parts", ["vae", "unet"], "Which training steps to time: vae, unet.")
  flags.DEFINE_integer("vae_batch", 8, "VAE batch (records of 12 x 1000); paper trains with 128.")
  flags.DEFINE_integer("unet_batch", 64, "U-Net batch (latents of 4 x 128); paper trains with 256.")
  flags.DEFINE_integer("steps", 3, "Timed steps per implementation; medians reported.")
  flags.DEFINE_integer("warmup", 1, "Untimed steps after compile (torch: after its first step).")
  flags.DEFINE_list("compute_dtypes", ["float32"], "JAX compute dtypes to time.")
  flags.DEFINE_bool("torch", True, "Also time the PyTorch twin (needs torch and tests/).")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
  bench.define_torch_device_flags()
  flags.DEFINE_string(
    "omp_wait_policy", None, "OMP_WAIT_POLICY for torch's OpenMP threads (default: inherited)."
  )
  flags.DEFINE_integer("seed", 0, "Weights and batches.")
  flags.DEFINE_string("json_out", None, "Write every figure and ratio here as JSON.")


def _jax_step(cfg, part: str, batch: int, seed: int, mesh):
  """(run_one_step, compile seconds, flops per step, initial params) for the production step."""
  gen = bench.random_generator(cfg, seed)
  tcfg = cfg.train_vae if part == "vae" else cfg.train_unet
  tx = adamw(tcfg.learning_rate, tcfg.weight_decay)
  rng = np.random.default_rng(seed + 7)
  if part == "vae":
    fn = train_lib.make_vae_step(gen.vae, tx, tcfg.kl_weight, np.zeros(12), np.ones(12))
    state = TrainState.create(gen.params["vae"], tx)
    data = {"signal": rng.standard_normal((batch, 12, 1000)).astype(np.float32)}
  else:
    fn = train_lib.make_unet_step(
      gen.unet, tx, gen.schedule, cfg.diffusion.p_uncond, tcfg.ema_decay, cfg.diffusion.prediction
    )
    state = TrainState.create(gen.params["unet"], tx, ema=True)
    data = {
      "z": rng.standard_normal((batch,) + gen_lib.LATENT_SHAPE).astype(np.float32),
      "cond": bench.random_cond(batch, seed),
    }
  step = loop.jit_train_step(fn, mesh)
  state = loop.replicate(state, mesh)
  data = pipeline.shard_batch(data, mesh)
  key = loop.replicate(jax.random.PRNGKey(seed), mesh)
  lowered = step.lower(state, data, key)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = float(compiled.cost_analysis()["flops"])
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], data, key)
    jax.block_until_ready(metrics)

  return run, compile_s, flops, gen.params


def _torch_step(torch, twin, cfg, part, batch, params, seed):
  torch.manual_seed(seed)
  tcfg = cfg.train_vae if part == "vae" else cfg.train_unet
  if part == "vae":
    model = twin.load_flax_params(twin.TorchVAE(**cfg.vae), params["vae"]).train()
    opt = twin.adamw(model.parameters(), tcfg.learning_rate, tcfg.weight_decay)
    step = twin.vae_train_step(model, opt, tcfg.kl_weight)
    x = torch.randn(batch, 12, 1000)
    return lambda: step(x).item()
  model = twin.load_flax_params(twin.TorchUNet(**cfg.unet), params["unet"]).train()
  opt = twin.adamw(model.parameters(), tcfg.learning_rate, tcfg.weight_decay)
  ema = [p.detach().clone() for p in model.parameters()]
  schedule = twin.Schedule.linear(cfg.diffusion.num_timesteps)
  step = twin.unet_train_step(
    model, opt, schedule, ema, p_uncond=cfg.diffusion.p_uncond, ema_decay=tcfg.ema_decay
  )
  z = torch.randn(batch, *gen_lib.LATENT_SHAPE)
  cond = torch.from_numpy(bench.random_cond(batch, seed)).to(torch.get_default_device())
  return lambda: step(z, cond).item()


def main(argv):
  del argv
  cfg = configs.get_config(FLAGS.preset)
  bad = [p for p in FLAGS.parts if p not in ("vae", "unet")]
  bad += [d for d in FLAGS.compute_dtypes if d not in gen_lib.COMPUTE_DTYPES]
  if bad:
    raise ConfigError(f"unknown --parts/--compute_dtypes value(s): {', '.join(bad)}")
  mesh = pipeline.make_mesh(1)
  info = bench.machine_info()
  print(
    f"{info['cpu']}, {info['cores']} cores, load {info['load_average'][0]:.1f}; jax "
    f"{info['jax']} on {info['jax_device_kind']}; preset {FLAGS.preset}, random weights"
  )
  torch = twin = None
  torch_note = None
  if FLAGS.torch:
    torch, twin = bench.import_torch_twin(omp_wait_policy=FLAGS.omp_wait_policy)
    if torch is None:
      torch_note, twin = twin, None
    else:
      torch.set_num_threads(FLAGS.torch_threads)
      info["torch_device"], _ = bench.torch_device(torch, FLAGS.torch_device, FLAGS.torch_tf32)
      info["torch_tf32"] = FLAGS.torch_tf32 and info["torch_device"] == "cuda"

  results, rows = {}, []
  for part in FLAGS.parts:
    batch = FLAGS.vae_batch if part == "vae" else FLAGS.unet_batch
    impls = {}
    for dtype in FLAGS.compute_dtypes:
      c = configs.get_config(FLAGS.preset)
      c.vae.compute_dtype = c.unet.compute_dtype = dtype
      run, compile_s, flops, params = _jax_step(c, part, batch, FLAGS.seed, mesh)
      impls[f"jax[{dtype}]"] = dict(run=run, compile_s=compile_s, flops=flops)
      print(f"{part} jax[{dtype}] batch {batch}: compiled in {compile_s:.1f} s", flush=True)
    if torch is not None:
      run = _torch_step(torch, twin, cfg, part, batch, params, FLAGS.seed)
      impls["torch[eager]"] = dict(run=run, compile_s=bench.timed(run), flops=None)
      print(
        f"{part} torch[eager]: first step {impls['torch[eager]']['compile_s']:.1f} s", flush=True
      )
    for d in impls.values():
      for _ in range(FLAGS.warmup):
        d["run"]()
      d["times"] = []
    for _ in range(FLAGS.steps):
      for d in impls.values():
        d["times"].append(bench.timed(d["run"]))
    torch_sps = None
    if "torch[eager]" in impls:
      torch_sps = batch / statistics.median(impls["torch[eager]"]["times"])
    for name, d in impls.items():
      med = statistics.median(d["times"])
      sps = batch / med
      r = {
        "batch": batch,
        "compile_s": d["compile_s"],
        "seconds_per_step": d["times"],
        "median_s": med,
        "samples_per_s": sps,
        "flops_per_step": d["flops"],
        "achieved_flop_per_s": d["flops"] / med if d["flops"] else None,
        "vs_torch_eager": sps / torch_sps if torch_sps else None,
      }
      results[f"{part}/{name}"] = r
      print(f"{part} {name}: {sps:.1f} samples/s, {med * 1e3:.1f} ms/step", flush=True)
      rows.append(
        [
          f"{part} train",
          name,
          batch,
          bench.fmt(sps),
          bench.fmt(med * 1e3),
          bench.fmt(d["compile_s"], 2),
          bench.fmt(r["achieved_flop_per_s"] and r["achieved_flop_per_s"] / 1e9),
          bench.fmt(r["vs_torch_eager"]),
        ]
      )
  bench.print_table(
    f"generator training steps, {FLAGS.preset} (median of {FLAGS.steps})",
    ["step", "implementation", "batch", "samples/s", "ms/step", "compile s", "GFLOP/s", "vs torch"],
    rows,
  )
  if torch_note:
    print(f"PyTorch not timed: {torch_note}")
  info["load_average_after"] = list(os.getloadavg())
  bench.write_json(
    FLAGS.json_out,
    {
      "benchmark": "generator_train",
      "machine": info,
      "preset": FLAGS.preset,
      "weights": "random",
      "steps": FLAGS.steps,
      "torch_threads": FLAGS.torch_threads,
      "omp_wait_policy": FLAGS.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
      "results": results,
      "torch_note": torch_note,
    },
  )


if __name__ == "__main__":
  define_flags()
  errors.run(main)
