"""ecgjax's programs compiled for Cloud TPU slices on any machine (docs/design.md §11).

With `libtpu` installed (the `tpu` extra), `jax.experimental.topologies`
describes a slice's devices without the hardware, and XLA's TPU compiler
compiles for it: `compiled.memory_analysis()` gives per-device bytes,
`compiled.cost_analysis()` FLOPs, bytes accessed and the compiler's own time
estimate (`optimal_seconds`, negative when it has none), and the compiled HLO
shows the collectives. Each program here is built exactly as the entry points
build it (the same step functions, shardings and global batch sizes from the
config); parameters, optimiser state and batches are `ShapeDtypeStruct`s, so
nothing is materialised and no data is read.

Two traps, handled here: the cost analysis counts a `while`/`scan` body once,
so the sampler is costed as one guided denoising step x num_steps + the VAE
decode (each its own jit), while the whole sampler is compiled for its memory;
and where the compiler gives no time estimate the time is a roofline (FLOPs
over the chip's peak, bytes over its HBM bandwidth, the larger), marked as
such in every result (`time_source`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ecgjax.data import pipeline
from ecgjax.diffusion import ddim
from ecgjax.diffusion import generator as gen_lib
from ecgjax.models.embeddings import COND_DIM
from ecgjax.train import classifier as clf_lib
from ecgjax.train import generator as train_lib
from ecgjax.train import loop
from ecgjax.train.state import TrainState, adamw

# libtpu takes a machine-wide lock for its runtime, which compiling for a described slice
# does not use: without this, a second compile (a test beside compile_tpu) stops at start.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip's published figures (Cloud TPU documentation): HBM per chip, dense bf16
  peak and HBM bandwidth. One JAX device per chip on every generation listed."""

  name: str
  hbm_bytes: int
  peak_flops: float  # bf16 FLOP/s; float32 matmuls at default precision run as bf16 passes
  hbm_bandwidth: float  # bytes/s


CHIPS = {
  c.name: c
  for c in (
    Chip("v4", 32 * GIB, 275e12, 1228e9),
    Chip("v5e", 16 * GIB, 197e12, 819e9),
    Chip("v5p", 95 * GIB, 459e12, 2765e9),
    Chip("v6e", 32 * GIB, 918e12, 1640e9),
  )
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}


def available() -> str | None:
  """None when the TPU compiler can be used here, else why not."""
  try:
    import libtpu  # noqa: F401
  except ImportError:
    return "libtpu is not installed (pip install -e '.[tpu]')"
  return None


def devices_per_chip(mesh: Mesh) -> int:
  """JAX devices per chip: 1, or 2 where each TensorCore of a chip is a device of its own
  (as the v4 topologies describe them: `core_on_chip` 0 and 1)."""
  return len({getattr(d, "core_on_chip", 0) for d in mesh.devices.flat})


def per_device(chip_: Chip, cores: int) -> Chip:
  """A chip's figures for one of its `cores` devices (an equal share of each)."""
  if cores == 1:
    return chip_
  return Chip(
    f"{chip_.name} core",
    chip_.hbm_bytes // cores,
    chip_.peak_flops / cores,
    chip_.hbm_bandwidth / cores,
  )


def chip(topology: str) -> Chip:
  name = topology.split(":", 1)[0]
  if name not in CHIPS:
    raise ValueError(f"topology {topology!r}: unknown chip {name!r}; known: {', '.join(CHIPS)}")
  return CHIPS[name]


def slice_mesh(topology: str, num_slices: int = 1) -> Mesh:
  """A ('data',) mesh over every chip of `num_slices` slices of `topology` (e.g. 'v5e:2x2').
  Over several slices the devices are ordered slice by slice (`create_hybrid_device_mesh`),
  so the data axis spans the data-centre network between slices and ICI within them."""
  from jax.experimental import mesh_utils, topologies

  devices = topologies.get_topology_desc(
    platform="tpu", topology_name=topology, num_slices=num_slices
  ).devices
  if num_slices > 1:
    per_slice = len(devices) // num_slices
    devices = mesh_utils.create_hybrid_device_mesh(
      (per_slice,), (num_slices,), devices, allow_split_physical_axes=True
    ).reshape(-1)
  return Mesh(np.asarray(devices), (pipeline.DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


@dataclasses.dataclass
class Program:
  """A jitted function and its abstract arguments. One call handles `samples` samples;
  `repeat` calls of it make one unit of work (e.g. the DDIM steps of one sampler call)."""

  name: str
  fn: Callable
  args: tuple
  samples: int
  repeat: int = 1
  note: str = ""
  costed: bool = True  # False: compiled for its memory only (a scan's cost counts its body once)


def _abstract(tree):
  """Shapes and dtypes only: each jit's own in_shardings place its arguments, as they do
  when the entry points call it (so a program that shards differently is compiled so)."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), tree)


def _key():
  return _abstract(jax.eval_shape(lambda: jax.random.PRNGKey(0)))


def programs(cfg, mesh: Mesh, *, batch: dict | None = None) -> list[Program]:
  """The programs of the paper's jobs on `mesh`: the VAE and U-Net train steps, the DDIM
  sampler (one guided step, the decode, and the whole call), the XResNet1d train step and
  prediction. batch: global batch size per program name (default: the config's)."""
  batch = batch or {}
  rep, data = NamedSharding(mesh, P()), pipeline.batch_sharding(mesh)
  gen = gen_lib.build(cfg)
  tmpl = gen_lib.param_template(gen)

  s = jax.ShapeDtypeStruct  # shapes only (see _abstract): each jit places its arguments

  out = []

  tv = cfg.train_vae
  b = batch.get("vae_train", tv.batch_size)
  tx = adamw(tv.learning_rate, tv.weight_decay)
  state = _abstract(jax.eval_shape(lambda p: TrainState.create(p, tx), tmpl["vae"]))
  step = train_lib.make_vae_step(gen.vae, tx, tv.kl_weight, np.zeros(12), np.ones(12))
  out.append(
    Program(
      "vae_train",
      loop.jit_train_step(step, mesh),
      (state, {"signal": s((b, 12, 1000), jnp.float32)}, _key()),
      b,
    )
  )

  tu = cfg.train_unet
  b = batch.get("unet_train", tu.batch_size)
  tx = adamw(tu.learning_rate, tu.weight_decay)
  state = _abstract(jax.eval_shape(lambda p: TrainState.create(p, tx, ema=True), tmpl["unet"]))
  step = train_lib.make_unet_step(
    gen.unet, tx, gen.schedule, cfg.diffusion.p_uncond, tu.ema_decay, cfg.diffusion.prediction
  )
  z = {
    "z": s((b,) + gen_lib.LATENT_SHAPE, jnp.float32),
    "cond": s((b, COND_DIM), jnp.float32),
  }
  out.append(Program("unet_train", loop.jit_train_step(step, mesh), (state, z, _key()), b))

  sc = cfg.sample
  b = batch.get("sampler", sc.batch_size)
  params = _abstract(tmpl)
  eps = gen_lib.eps_fn(gen.unet, gen.schedule, gen.prediction)
  x = s((b,) + gen_lib.LATENT_SHAPE, jnp.float32)
  cond = s((b, COND_DIM), jnp.float32)

  def guided_step(p, x, cond):  # the scan body of the sampler: CFG on 2B rows + DDIM update
    e = ddim.cfg_eps(eps, p["unet"], x, jnp.int32(500), cond, sc.cfg_scale)
    return ddim.ddim_step(gen.schedule, e, jnp.int32(500), jnp.int32(490), x, 0.0, x)

  jit_data = dict(in_shardings=(rep, data, data), out_shardings=data)
  out.append(
    Program(
      "sampler_step", jax.jit(guided_step, **jit_data), (params, x, cond), b, sc.num_steps,
      note=f"one guided DDIM step; x{sc.num_steps} per sampler call",
    )
  )  # fmt: skip
  out.append(
    Program(
      "sampler_decode",
      jax.jit(lambda p, z: gen.decode(p, z), in_shardings=(rep, data), out_shardings=data),
      (params, x),
      b,
      note="the VAE decode of a sampler call",
    )
  )
  keys = _abstract(jax.eval_shape(lambda: ddim.sample_keys_for(jax.random.key(0), b)))
  scalar = s((), jnp.float32)
  out.append(
    Program(
      "sampler",
      gen.sampler(mesh, num_steps=sc.num_steps),
      (params, cond, keys, scalar, scalar),
      b,
      note="the whole call, for its memory; its time is sampler_step x steps + sampler_decode",
      costed=False,
    )
  )

  cc = cfg.classifier
  crop, stride = clf_lib.check_protocol(cc)
  length = crop or 1000
  model = clf_lib.build_model(cc)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, length)), train=False)
  )
  b = batch.get("classifier_train", cc.batch_size)
  tx = optax.adamw(cc.learning_rate, weight_decay=cc.weight_decay)
  state = _abstract(
    jax.eval_shape(
      lambda v: TrainState.create(v["params"], tx, batch_stats=v["batch_stats"]), variables
    ),
  )
  step = clf_lib.make_step(model, tx, np.zeros(12), np.ones(12))
  xb = {
    "signal": s((b, 12, length), jnp.float32),
    "label": s((b, 71), jnp.float32),
  }
  out.append(Program("classifier_train", loop.jit_train_step(step, mesh), (state, xb, _key()), b))
  b = batch.get("classifier_predict", cc.batch_size)
  starts = clf_lib.windows(1000, crop, stride) if crop else (0,)
  predict = clf_lib._predict_fn(model, mesh, starts, length)
  stats = s((12,), jnp.float32)
  out.append(
    Program(
      "classifier_predict",
      predict,
      (_abstract(variables), stats, stats, s((b, 12, 1000), jnp.float32)),
      b,
      note=f"{len(starts)} windows per record, the maximum logit",
    )
  )
  return out


def collectives(hlo: str) -> dict:
  """{kind: {"count", "bytes"}} of the cross-device collectives in compiled HLO text; bytes
  are the sizes of their results (per device)."""
  out = {}
  for line in hlo.splitlines():
    for kind in COLLECTIVES:
      # e.g. `%all-reduce.3 = f32[512]{0} all-reduce(...)`; async pairs count their -start.
      m = re.search(rf"=\s*(.+?)\s+{kind}(-start)?\(", line)
      if m:
        entry = out.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += _shape_bytes(m.group(1))
  return out


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", text):
    n = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
    total += n * _DTYPE_BYTES.get(dtype, 4)
  return total


def analyse(program: Program, chip_: Chip, n_devices: int) -> dict:
  """Compiles one program and reads its memory, cost, time and collectives. chip_: the
  figures of one device (`per_device` where a chip holds several); n_devices: the mesh's."""
  compiled = program.fn.lower(*program.args).compile()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, list):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  flops = float(cost.get("flops", 0.0))
  nbytes = float(cost.get("bytes accessed", 0.0))
  optimal = float(cost.get("optimal_seconds", -1.0))
  roofline = max(flops / chip_.peak_flops, nbytes / chip_.hbm_bandwidth)
  seconds, source = (optimal, "compiler") if optimal > 0 else (roofline, "roofline")
  hbm = int(
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
    + mem.temp_size_in_bytes
    + mem.generated_code_size_in_bytes
  )
  per_call = seconds * program.repeat
  if not program.costed:
    seconds = per_call = optimal = roofline = None
    source = "not costed"
  return {
    "program": program.name,
    "note": program.note,
    "global_batch": program.samples,
    "per_device_batch": program.samples // n_devices,
    "repeat": program.repeat,
    "hbm_bytes": hbm,
    "hbm_fraction": hbm / chip_.hbm_bytes,
    "fits": hbm <= chip_.hbm_bytes,
    "memory": {
      "argument": int(mem.argument_size_in_bytes),
      "output": int(mem.output_size_in_bytes),
      "alias": int(mem.alias_size_in_bytes),
      "temp": int(mem.temp_size_in_bytes),
      "code": int(mem.generated_code_size_in_bytes),
    },
    "flops_per_device": flops,
    "bytes_per_device": nbytes,
    "seconds": seconds,
    "time_source": source,
    "compiler_seconds": optimal,
    "roofline_seconds": roofline,
    "samples_per_s_slice": program.samples / per_call if per_call else None,
    "samples_per_s_device": program.samples / per_call / n_devices if per_call else None,
    "flop_utilisation": flops / seconds / chip_.peak_flops if seconds else None,
    "collectives": collectives(compiled.as_text()),
  }


def fit_batch(points: list[tuple[int, int]], capacity: int, limit: int) -> int:
  """The largest power of two (at most `limit`) whose memory, on the line through two
  (per-device batch, bytes) points, stays within `capacity`: activations and their
  gradients grow linearly in the batch, parameters and code do not."""
  (b0, m0), (b1, m1) = points[:2]
  slope = (m1 - m0) / (b1 - b0)
  if slope <= 0:
    return limit
  best = max(1, 2 ** int(math.floor(math.log2(max(1.0, (capacity - m0) / slope + b0)))))
  return min(best, limit)


def job_estimates(cfg, results: dict, n_devices: int, devices_per_chip: int = 1) -> dict:
  """Wall seconds on the slice (and chip-hours) of the paper's jobs from per-step times:
  training the generator (train_vae.steps VAE steps + train_unet.steps U-Net steps), an
  8,000-sample cohort, one TSTR seed (the cohort, then classifier.epochs epochs over it
  and a prediction of fold 9 per epoch and fold 10 once, ~2,200 records each at full
  size), and Table 1 (13 policies x 3 seeds, each a TSTR seed; judge policies generate a
  pool of twice n, real ones none: counted as one cohort each on average)."""

  def t(name):
    return results[name]["seconds"]

  sampler_call = t("sampler_step") * cfg.sample.num_steps + t("sampler_decode")
  b_s = results["sampler_step"]["global_batch"]
  cohort = math.ceil(8000 / b_s) * sampler_call
  train = cfg.train_vae.steps * t("vae_train") + cfg.train_unet.steps * t("unet_train")
  b_c = results["classifier_train"]["global_batch"]
  b_p = results["classifier_predict"]["global_batch"]
  epochs = cfg.classifier.epochs
  classifier = epochs * (8000 // b_c) * t("classifier_train")
  classifier += (epochs + 1) * math.ceil(2200 / b_p) * t("classifier_predict")
  seed = cohort + classifier
  jobs = {
    "train_generator": train,
    "cohort_8000": cohort,
    "tstr_seed": seed,
    "table1_sweep": 13 * 3 * seed,
  }
  out = {
    k: {"seconds": v, "hours": v / 3600, "chip_hours": v * n_devices / devices_per_chip / 3600}
    for k, v in jobs.items()
  }
  out["sampler_composed"] = {
    "seconds_per_call": sampler_call,
    "samples_per_s_slice": b_s / sampler_call,
    "samples_per_s_chip": b_s / sampler_call / n_devices * devices_per_chip,
    "gflop_per_sample": (
      results["sampler_step"]["flops_per_device"] * cfg.sample.num_steps
      + results["sampler_decode"]["flops_per_device"]
    )
    * n_devices
    / b_s
    / 1e9,
  }
  return out
