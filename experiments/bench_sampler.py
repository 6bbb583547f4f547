"""Throughput of the guided DDIM sampler (U-Net + VAE decode) in JAX and in PyTorch.

  python -m experiments.bench_sampler [--preset=paper] [--batch=8] [--iters=3] \
      [--compute_dtypes=float32,bfloat16] [--notorch_compile] [--json_out=sampler.json]

The JAX side is the production sampler, `Generator.sampler(mesh)` (one jit: a
`lax.scan` over the DDIM steps with classifier-free guidance in one pass over
the doubled batch, then the VAE decode), on `--devices` devices. The PyTorch
side is its twin (tests/torch_generator.py) carrying the same weights, eager
and under `torch.compile`. The weights are random (throughput does not depend
on training; the output layers are not zero, so the outputs are not trivial),
and both sides start from the same x_T, so their samples are compared first:
the largest difference relative to the largest |sample| must be within
`--tolerance`, or the run stops.

Measured, all in this one run: compile time (apart, not counted); samples/s
(median of `--iters` timed runs, JAX and PyTorch interleaved so a change of
load on a shared machine hits both); FLOPs per sample from XLA's cost
analysis (XLA counts a scan's body once, so the guided step and the decode are
analysed as their own jits and added up: steps x step + decode); the CPU's
float32 matmul peak (a jitted `jnp.dot` of two N x N matrices, 2 N^3 FLOPs,
measured before and after the sampler; the larger is used) and the achieved
fraction of it. A whole sampler call of the slower side lasts longer and so
meets more of a shared machine's load; the U-Net pass of one guided step is
therefore also timed with JAX and PyTorch alternating call by call
(`--pass_rounds`), the finer-grained ratio. Prints the tables; `--json_out`
writes every figure and ratio.
Nothing here asserts a speed. Import this module for its helpers: its flags
are defined only when it runs as the main.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ecgjax import configs, errors
from ecgjax.data import pipeline
from ecgjax.diffusion import ddim
from ecgjax.diffusion import generator as gen_lib
from ecgjax.errors import ConfigError
from ecgjax.models.embeddings import COND_DIM, NUM_LABELS

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum("preset", "paper", configs.PRESETS, "Model sizes and sampler settings.")
  flags.DEFINE_integer("batch", 8, "Samples per sampler call (a multiple of --devices).")
  flags.DEFINE_integer("num_steps", None, "DDIM steps; default: the preset's (paper: 100).")
  flags.DEFINE_float("cfg_scale", None, "Guidance weight; default: the preset's (3.0).")
  flags.DEFINE_integer("iters", 3, "Timed sampler calls per implementation; medians reported.")
  flags.DEFINE_list(
    "compute_dtypes", ["float32"], "JAX compute dtypes to time (float32, bfloat16)."
  )
  flags.DEFINE_integer("devices", 1, "Devices on the ('data',) mesh (fake CPU devices: XLA_FLAGS).")
  flags.DEFINE_bool("torch", True, "Also time the PyTorch twin (needs torch and tests/).")
  flags.DEFINE_bool("torch_compile", True, "Also time the twin under torch.compile.")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
  define_torch_device_flags()
  flags.DEFINE_string(
    "omp_wait_policy",
    None,
    "OMP_WAIT_POLICY for torch's OpenMP threads, set before torch is imported (PASSIVE helps "
    "torch on an oversubscribed shared machine; default: inherited).",
  )
  flags.DEFINE_float(
    "tolerance", 1e-3, "Largest JAX-PyTorch sample difference / largest |sample| allowed."
  )
  flags.DEFINE_integer(
    "pass_rounds",
    10,
    "Rounds of the U-Net pass over the doubled batch, JAX and PyTorch alternating call by call.",
  )
  flags.DEFINE_integer("peak_size", 2048, "N of the N x N float32 matmul that measures the peak.")
  flags.DEFINE_integer("seed", 0, "Weights, conditions and keys.")
  flags.DEFINE_string("json_out", None, "Write every figure and ratio here as JSON.")


# ---------------------------------------------------------------- shared helpers


def define_torch_device_flags() -> None:
  """--torch_device and --torch_tf32, shared by the benchmarks that time a PyTorch twin."""
  flags.DEFINE_enum(
    "torch_device",
    "auto",
    ["auto", "cpu", "cuda"],
    "Where the PyTorch twin runs; auto: cuda when torch sees a GPU, else cpu.",
  )
  flags.DEFINE_bool(
    "torch_tf32",
    True,
    "On cuda, let PyTorch's float32 matmuls and convolutions use TF32, as XLA's default "
    "precision does on the GPU (otherwise the twin does more exact, slower arithmetic).",
  )


def torch_device(torch, name: str, tf32: bool = True):
  """Resolves --torch_device and makes it torch's default device (the twins create their
  tensors without naming one). Returns (device name, sync): sync() waits for the device,
  so a timed call ends when its work does."""
  if name == "auto":
    name = "cuda" if torch.cuda.is_available() else "cpu"
  if name == "cuda":
    if not torch.cuda.is_available():
      raise ConfigError("--torch_device=cuda, but torch sees no GPU")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.set_default_device("cuda")
    return name, torch.cuda.synchronize
  return name, lambda: None


def accelerator_info() -> dict:
  """The JAX devices' kind (e.g. 'NVIDIA H200', 'cpu')."""
  return {"jax_device_kind": jax.devices()[0].device_kind, "jax_device_count": jax.device_count()}


def machine_info() -> dict:
  """CPU model, core count, the AVX-512 bf16 flag, versions and the load average."""
  model, cpu_flags = platform.processor(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
          cpu_flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  info = {
    "cpu": model,
    "cores": os.cpu_count(),
    "avx512f": "avx512f" in cpu_flags,
    "avx512_bf16": "avx512_bf16" in cpu_flags,
    "amx_bf16": "amx_bf16" in cpu_flags,
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    **accelerator_info(),
    "load_average": list(os.getloadavg()),
  }
  try:  # the installed version, without importing torch (OMP_WAIT_POLICY is read at import)
    from importlib import metadata

    info["torch"] = metadata.version("torch")
  except Exception:
    pass
  return info


def timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
  """float32 FLOP/s of a jitted N x N dot (the best of `repeats`) at JAX's default precision
  (TF32 on an NVIDIA GPU). FLOPs: 2 N^3 (XLA's own count is recorded too; its GPU backend
  reports -1, unknown, for a dot it hands to cuBLAS)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  dot = jax.jit(jnp.dot).lower(a, a).compile()
  flops = 2.0 * n**3
  dot(a, a).block_until_ready()
  best = min(timed(lambda: dot(a, a).block_until_ready()) for _ in range(repeats))
  xla = float(dot.cost_analysis()["flops"])
  return {"n": n, "flops": flops, "xla_flops": xla, "seconds": best, "flop_per_s": flops / best}


def random_params(shapes, seed: int, gain: float = 1.0):
  """Host-drawn weights for an eval_shape'd tree: kernels N(0, gain^2 / fan_in), GroupNorm
  scales ~1, biases ~0.1, tables N(0, 1). Unlike `init`, no output layer is zero."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      v = rng.standard_normal(s.shape) * gain / np.sqrt(max(int(np.prod(s.shape[:-1])), 1))
    elif name == "scale":
      v = 1.0 + 0.1 * rng.standard_normal(s.shape)
    elif name == "bias":
      v = 0.1 * rng.standard_normal(s.shape)
    else:
      v = rng.standard_normal(s.shape)
    return np.asarray(v, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def random_cond(n: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, NUM_LABELS)) < 0.1).astype(np.float32)
  demo = rng.standard_normal((n, COND_DIM - NUM_LABELS)).astype(np.float32)
  return np.concatenate([labels, demo], 1)


def random_generator(cfg, seed: int):
  """A Generator built from cfg with random weights (every output layer non-zero)."""
  gen = gen_lib.build(cfg)
  tmpl = gen_lib.param_template(gen)
  # gain 0.5: the random U-Net is then contractive, so 100 guided steps stay finite.
  params = {
    "vae": random_params(tmpl["vae"], seed),
    "unet": random_params(tmpl["unet"], seed + 1, gain=0.5),
    "latent_scale": np.float32(1.0),
    "signal_mean": np.zeros(12, np.float32),
    "signal_std": np.ones(12, np.float32),
  }
  gen.params = params
  return gen


def import_torch_twin(module: str = "torch_generator", omp_wait_policy: str | None = None):
  """(torch, tests.<module>) or (None, reason)."""
  if omp_wait_policy:
    os.environ["OMP_WAIT_POLICY"] = omp_wait_policy  # read when torch loads OpenMP
  try:
    import torch
  except ImportError:
    return None, "torch is not installed (pip install -e '.[torch]')"
  try:
    import importlib

    return torch, importlib.import_module(f"tests.{module}")
  except ImportError as e:
    return None, f"tests/{module}.py is not importable ({e}); run from the repository root"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
  cells = [[str(c) for c in r] for r in [header, *rows]]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  print(f"\n{title}")
  for j, r in enumerate(cells):
    print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    if j == 0:
      print("| " + " | ".join("-" * w for w in widths) + " |")


def write_json(path: str | None, record: dict) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f, indent=2, default=float)
  print(f"wrote {path}")


def fmt(v, digits: int = 3) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
  return str(v)


# ---------------------------------------------------------------- the sampler


def sampler_flops(gen, cfg, batch: int, num_steps: int) -> dict:
  """FLOPs of one sampler call from XLA's cost analysis, per part and per sample."""
  params = gen.params
  eps = gen_lib.eps_fn(gen.unet, gen.schedule, gen.prediction)
  s = jax.ShapeDtypeStruct
  x = s((batch,) + gen_lib.LATENT_SHAPE, jnp.float32)
  cond = s((batch, COND_DIM), jnp.float32)

  def one_step(p, x, cond):  # the scan body: guided eps on 2B rows + the DDIM update
    e = ddim.cfg_eps(eps, p["unet"], x, jnp.int32(500), cond, 3.0)
    return ddim.ddim_step(gen.schedule, e, jnp.int32(500), jnp.int32(490), x, 0.0, x)

  def cost(fn, *args):
    return float(jax.jit(fn).lower(params, *args).compile().cost_analysis()["flops"])

  step = cost(one_step, x, cond)
  decode = cost(lambda p, z: gen.decode(p, z), x)
  keys = jax.eval_shape(lambda: ddim.sample_keys_for(jax.random.key(0), batch))
  whole = cost(
    lambda p, c, k: gen.sample_with_keys(p, c, k, 3.0, 0.0, num_steps=num_steps), cond, keys
  )
  total = num_steps * step + decode
  return {
    "step_flops_per_batch": step,
    "decode_flops_per_batch": decode,
    "flops_per_sample": total / batch,
    "unet_share": num_steps * step / total,
    "xla_whole_sampler_flops_scan_body_once": whole,
  }


def jax_sampler(gen, cfg, mesh, batch, num_steps, cfg_scale, seed):
  """(run() -> samples, compile seconds, x_T, cond) for the production sampler."""
  run = gen.sampler(mesh, num_steps=num_steps)
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  params = jax.device_put(
    gen.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  cond = random_cond(batch, seed)
  keys = ddim.sample_keys_for(jax.random.key(seed), batch)
  c, k = jax.device_put(jnp.asarray(cond), data), jax.device_put(keys, data)
  t0 = time.perf_counter()
  compiled = run.lower(params, c, k, cfg_scale, 0.0).compile()
  compile_s = time.perf_counter() - t0

  def call():
    return np.asarray(jax.block_until_ready(compiled(params, c, k, cfg_scale, 0.0)))

  x_T = np.asarray(ddim.initial_noise(keys, gen_lib.LATENT_SHAPE))
  return call, compile_s, x_T, cond


def denoiser_rounds(
  gen, torch_models: dict, batch: int, rounds: int, seed: int, sync=lambda: None
) -> dict:
  """The U-Net pass of one guided step (2 x batch rows), JAX and each PyTorch model
  alternating call by call: a fine-grained ratio that load changes on a shared machine
  cannot favour one side of (a whole sampler call of the slower side lasts longer, so it
  meets more of the load). Returns per implementation the seconds per call and, for
  PyTorch, the median over rounds of (its time / JAX's time of the same round)."""
  import torch

  rows = 2 * batch
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((rows,) + gen_lib.LATENT_SHAPE).astype(np.float32)
  t = np.full((rows,), 500, np.int32)
  cond = np.repeat(random_cond(batch, seed), 2, axis=0)
  drop = np.tile([True, False], batch)
  params = jax.device_put(gen.params["unet"])
  args = (params, *map(jnp.asarray, (x, t, cond, drop)))
  fwd = jax.jit(gen.unet.apply).lower(*args).compile()
  dev = torch.get_default_device()
  targs = tuple(torch.from_numpy(a).to(dev) for a in (x, t.astype(np.int64), cond, drop))
  calls = {"jax[float32]": lambda: fwd(*args).block_until_ready()}
  for name, m in torch_models.items():
    calls[name] = lambda m=m: (m(*targs), sync())
  times = {k: [] for k in calls}
  with torch.inference_mode():
    for f in calls.values():
      f()  # warm-up
    for _ in range(rounds):
      for k, f in calls.items():
        times[k].append(timed(f))
  j = np.asarray(times["jax[float32]"])
  out = {}
  for k, v in times.items():
    r = {"rows": rows, "seconds_per_call": v, "median_s": float(np.median(v))}
    if k != "jax[float32]":
      r["jax_speedup_median_of_rounds"] = float(np.median(np.asarray(v) / j))
    out[k] = r
  return out


def main(argv):
  del argv
  cfg = configs.get_config(FLAGS.preset)
  num_steps = FLAGS.num_steps or cfg.sample.num_steps
  cfg_scale = cfg.sample.cfg_scale if FLAGS.cfg_scale is None else FLAGS.cfg_scale
  batch, n_dev = FLAGS.batch, FLAGS.devices
  if batch % n_dev:
    raise ConfigError(f"--batch={batch} is not a multiple of --devices={n_dev}")
  bad = [d for d in FLAGS.compute_dtypes if d not in gen_lib.COMPUTE_DTYPES]
  if bad:
    raise ConfigError(f"--compute_dtypes: {bad}; choose from {gen_lib.COMPUTE_DTYPES}")
  if n_dev > jax.device_count():
    raise ConfigError(
      f"--devices={n_dev}, {jax.device_count()} available; on CPU set "
      f"XLA_FLAGS=--xla_force_host_platform_device_count={n_dev}"
    )
  mesh = pipeline.make_mesh(n_dev)
  info = machine_info()
  print(
    f"{info['cpu']}, {info['cores']} cores (AVX-512 bf16: {info['avx512_bf16']}), "
    f"load {info['load_average'][0]:.1f}; jax {info['jax']} on {n_dev} {info['backend']} "
    f"({info['jax_device_kind']}) "
    f"device(s); preset {FLAGS.preset}: {num_steps} steps, CFG {cfg_scale}, batch {batch}; "
    "random weights"
  )
  peaks = [matmul_peak(FLAGS.peak_size)]

  impls = {}  # name -> dict(call, compile_s, times, out)
  flops = {}
  for dtype in FLAGS.compute_dtypes:
    c = configs.get_config(FLAGS.preset)
    c.unet.compute_dtype = c.vae.compute_dtype = dtype
    gen = random_generator(c, FLAGS.seed)
    call, compile_s, x_T, cond = jax_sampler(gen, c, mesh, batch, num_steps, cfg_scale, FLAGS.seed)
    flops[dtype] = sampler_flops(gen, c, batch, num_steps)
    impls[f"jax[{dtype}]"] = dict(call=call, compile_s=compile_s, times=[], kind="jax")
    if dtype == "float32":
      base_gen = gen

  torch_note = None
  if FLAGS.torch:
    torch, twin = import_torch_twin(omp_wait_policy=FLAGS.omp_wait_policy)
    if torch is None:
      torch_note = twin
    else:
      torch.set_num_threads(FLAGS.torch_threads)
      info["torch_device"], sync = torch_device(torch, FLAGS.torch_device, FLAGS.torch_tf32)
      info["torch_tf32"] = FLAGS.torch_tf32 and info["torch_device"] == "cuda"
      ref_gen = base_gen if "float32" in FLAGS.compute_dtypes else random_generator(cfg, FLAGS.seed)
      schedule = twin.Schedule(
        ref_gen.schedule.sqrt_alphas_cumprod, ref_gen.schedule.sqrt_one_minus_alphas_cumprod
      )
      model = twin.generator_from_flax(cfg, ref_gen.params, schedule)
      dev = info["torch_device"]
      xt, ct = torch.from_numpy(x_T.copy()).to(dev), torch.from_numpy(cond.copy()).to(dev)

      def torch_call(m):
        def call():
          with torch.inference_mode():
            return m.sample(xt, ct, num_steps=num_steps, cfg_scale=cfg_scale).cpu().numpy()

        return call

      impls["torch[eager]"] = dict(call=torch_call(model), compile_s=0.0, times=[], kind="torch")
      if FLAGS.torch_compile:
        compiled = twin.generator_from_flax(cfg, ref_gen.params, schedule)
        compiled.denoise = torch.compile(compiled.unet)
        compiled.vae.decoder = torch.compile(compiled.vae.decoder)
        impls["torch[compile]"] = dict(
          call=torch_call(compiled), compile_s=None, times=[], kind="torch"
        )

  eager = impls.get("torch[eager]")
  # First call of each: compile (torch.compile's happens here) and the outputs to compare.
  outs = {}
  for name, d in impls.items():
    t = timed(lambda d=d, name=name: outs.__setitem__(name, d["call"]()))
    if d["compile_s"] is None:
      d["compile_s"] = t  # torch.compile: the first call compiles
    elif d["kind"] == "torch":
      d["times"].append(t)  # eager: the first call is a timed call like any other
  ref_name = "jax[float32]" if "jax[float32]" in outs else next(iter(outs))
  ref = outs[ref_name]
  scale = float(np.abs(ref).max())
  parity = {}
  for name, out in outs.items():
    if name == ref_name:
      continue
    parity[name] = float(np.abs(out - ref).max()) / scale
    limit = FLAGS.tolerance if impls[name]["kind"] == "torch" else None
    if limit is not None and not parity[name] <= limit:
      raise ConfigError(
        f"{name} differs from {ref_name} by {parity[name]:.3g} of max |sample| "
        f"(> --tolerance={limit}): the twin is not the same sampler, so no timing is reported"
      )
  print(f"parity against {ref_name} (max |diff| / max |sample|, max |sample| {scale:.3g}): ")
  print("  " + ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))

  passes = None
  if eager is not None and "float32" in FLAGS.compute_dtypes and FLAGS.pass_rounds > 0:
    torch_models = {"torch[eager]": model.unet}
    if "torch[compile]" in impls:
      torch_models["torch[compile]"] = compiled.denoise
    passes = denoiser_rounds(base_gen, torch_models, batch, FLAGS.pass_rounds, FLAGS.seed, sync)
  for _ in range(FLAGS.iters):
    for d in impls.values():
      if len(d["times"]) < FLAGS.iters:
        d["times"].append(timed(d["call"]))
  peaks.append(matmul_peak(FLAGS.peak_size))
  peak = max(p["flop_per_s"] for p in peaks)

  rows, record_impls = [], {}
  eager_sps = batch / statistics.median(eager["times"]) if eager else None
  for name, d in impls.items():
    med = statistics.median(d["times"])
    sps = batch / med
    r = {
      "compile_s": d["compile_s"],
      "seconds_per_call": d["times"],
      "median_s": med,
      "samples_per_s": sps,
      "vs_torch_eager": sps / eager_sps if eager_sps else None,
      "parity_vs_" + ref_name: parity.get(name, 0.0),
    }
    if d["kind"] == "jax":
      dt = name[4:-1]
      r.update(flops[dt])
      r["achieved_flop_per_s"] = flops[dt]["flops_per_sample"] * sps
      r["fraction_of_matmul_peak"] = r["achieved_flop_per_s"] / peak
    record_impls[name] = r
    rows.append(
      [
        name,
        fmt(sps),
        fmt(med),
        fmt(d["compile_s"], 2),
        fmt(r.get("flops_per_sample") and r["flops_per_sample"] / 1e9),
        fmt(r.get("achieved_flop_per_s") and r["achieved_flop_per_s"] / 1e9),
        fmt(r.get("fraction_of_matmul_peak")),
        fmt(r["vs_torch_eager"], 3),
      ]
    )
  print_table(
    f"DDIM sampler, {FLAGS.preset}: {num_steps} steps, CFG {cfg_scale}, decode; batch {batch} "
    f"on {n_dev} device(s); matmul peak {peak / 1e9:.1f} GFLOP/s (N={FLAGS.peak_size})",
    [
      "implementation",
      "samples/s",
      "s/call",
      "compile s",
      "GFLOP/sample",
      "GFLOP/s",
      "of peak",
      "vs torch eager",
    ],
    rows,
  )
  if passes:
    jx = passes["jax[float32]"]["median_s"]
    print_table(
      f"U-Net pass over the doubled batch ({2 * batch} rows), JAX and PyTorch alternating "
      f"call by call, {FLAGS.pass_rounds} rounds",
      ["implementation", "ms/call (median)", "JAX speed-up (median of rounds)"],
      [
        [k, fmt(v["median_s"] * 1e3), fmt(v.get("jax_speedup_median_of_rounds", 1.0))]
        for k, v in passes.items()
      ],
    )
    print(f"JAX median {jx * 1e3:.1f} ms per pass")
  if torch_note:
    print(f"PyTorch not timed: {torch_note}")
  info["load_average_after"] = list(os.getloadavg())
  write_json(
    FLAGS.json_out,
    {
      "benchmark": "sampler",
      "machine": info,
      "preset": FLAGS.preset,
      "num_steps": num_steps,
      "cfg_scale": cfg_scale,
      "batch": batch,
      "devices": n_dev,
      "iters": FLAGS.iters,
      "weights": "random",
      "torch_threads": FLAGS.torch_threads,
      "omp_wait_policy": FLAGS.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
      "matmul_peak": peaks,
      "matmul_peak_flop_per_s": peak,
      "parity_reference": ref_name,
      "tolerance": FLAGS.tolerance,
      "implementations": record_impls,
      "unet_pass_interleaved": passes,
      "torch_note": torch_note,
    },
  )


if __name__ == "__main__":
  define_flags()
  errors.run(main)
