"""TPU throughput on paper: every program compiled for a real Cloud TPU slice, on this machine.

  python -m experiments.compile_tpu --topology=v5e:2x2 --preset=paper --json_out=tpu.json
  python -m experiments.compile_tpu --topology=v5e:2x2,v5p:2x2x2,v4:2x2x2,v6e:2x2 --preset=paper
  python -m experiments.compile_tpu --topology=v5e:2x2 --num_slices=2 --preset=paper
  python -m experiments.compile_tpu --topology=v5e:2x2 --batch_search --programs=unet_train

Needs the TPU compiler (`pip install -e '.[tpu]'`), not a TPU: libtpu describes
the slice and XLA compiles for it (ecgjax/tpu.py says how and what is
measured). For each program: per-device HBM against the device's share of
the chip (v4 topologies describe each of a chip's two TensorCores as a device),
FLOPs and bytes per device and call, the time per call (the compiler's
estimate, or a roofline where it gives none: the `time` column says which),
samples/s per device and per slice, FLOP utilisation and the collectives in
the compiled HLO.
Then the paper's jobs as wall time on the slice and chip-hours. Every figure is
an estimate of the compiler's, not a measurement. The TPU runtime prints
warnings about missing worker hostnames while it describes the slice:
harmless here.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host's own backend; the TPU is described

from absl import flags  # noqa: E402

from ecgjax import configs, errors, storage, tpu  # noqa: E402
from ecgjax.errors import ConfigError  # noqa: E402

_TOPOLOGY = flags.DEFINE_list("topology", ["v5e:2x2"], "TPU topologies, e.g. v5e:2x2,v5p:2x2x2.")
_SLICES = flags.DEFINE_integer("num_slices", 1, "Slices of each topology (data parallel over DCN).")
_PRESET = flags.DEFINE_enum("preset", "paper", configs.PRESETS, "Model sizes and batch sizes.")
_PROGRAMS = flags.DEFINE_list("programs", [], "Only these programs (default: all).")
_DTYPE = flags.DEFINE_enum(
  "compute_dtype",
  None,
  ["float32", "bfloat16"],
  "Compute dtype of the VAE and U-Net (train steps and sampler); default: the preset's.",
)
_BATCH_SEARCH = flags.DEFINE_bool(
  "batch_search",
  False,
  "Also find, per training step and the sampler, the largest power-of-two per-device batch "
  "that fits the device's HBM (from the memory at the preset's batch and twice it, then "
  "checked by compiling it), and the estimated throughput at each.",
)
_MAX_BATCH = flags.DEFINE_integer("max_per_device_batch", 4096, "Upper end of the batch search.")
_JSON = flags.DEFINE_string("json_out", None, "Write every figure here as JSON.")

SEARCHED = ("vae_train", "unet_train", "sampler", "classifier_train")
_THROUGHPUT = ("samples_per_s_device", "samples_per_s_slice", "time_source", "flop_utilisation")


def _fmt_bytes(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _fmt(v, spec=".3g") -> str:
  return "-" if v is None else format(v, spec)


def _collectives(c: dict) -> str:
  if not c:
    return "none"
  return ", ".join(f"{k} x{v['count']} ({_fmt_bytes(v['bytes'])})" for k, v in sorted(c.items()))


def table(results: dict, chip) -> str:
  head = (
    "| program | global batch | per device | HBM per device | fits | GFLOP/device/call "
    "| time/call | time | samples/s/device | samples/s/slice | FLOP util | collectives |"
  )
  rows = [head, "|" + " --- |" * 12]
  for r in results.values():
    call = r["seconds"] * r["repeat"] if r["seconds"] is not None else None
    times = f" ({r['repeat']} x)" if r["repeat"] > 1 else ""
    rows.append(
      f"| {r['program']} | {r['global_batch']} | {r['per_device_batch']} "
      f"| {_fmt_bytes(r['hbm_bytes'])} ({100 * r['hbm_fraction']:.1f} % of {chip.name}) "
      f"| {'yes' if r['fits'] else 'NO'} | {r['flops_per_device'] / 1e9:.3g} "
      f"| {'-' if call is None else f'{call * 1e3:.3g} ms{times}'} "
      f"| {r['time_source']} | {_fmt(r['samples_per_s_device'], '.4g')} "
      f"| {_fmt(r['samples_per_s_slice'], '.4g')} | {_fmt(r['flop_utilisation'], '.1%')} "
      f"| {_collectives(r['collectives'])} |"
    )
  return "\n".join(rows)


def batch_search(cfg, mesh, chip, name: str, base: int, first: dict) -> list[dict]:
  """The largest power-of-two per-device batch of `name` that fits the device's HBM, in
  three compilations rather than a doubling walk (a paper-size compile takes minutes here):
  the preset's batch (`first`, already compiled) and twice it give the memory's line in
  the batch (`tpu.fit_batch`); the largest power of two under the line is compiled to
  check it fits, and where it does not, halved until it does. Each with its estimate. The
  whole sampler is compiled for its memory only: at each batch its time is that of
  `sampler_step` (compiled too) x steps, as in the table."""

  def at(per: int) -> dict:
    progs = {p.name: p for p in tpu.programs(cfg, mesh, batch={name: per * mesh.size})}
    r = tpu.analyse(progs[name], chip, mesh.size)
    if name == "sampler":
      step = tpu.analyse(progs["sampler_step"], chip, mesh.size)
      r.update({k: step[k] for k in _THROUGHPUT})
    print(
      f"  {name}: per-device batch {per}: {_fmt_bytes(r['hbm_bytes'])} "
      f"({r['hbm_fraction']:.1%} of HBM), {_fmt(r['samples_per_s_device'], '.4g')} "
      f"samples/s/device ({r['time_source']})",
      flush=True,
    )
    return r

  per = max(1, base // mesh.size)
  found = [first, at(2 * per)]
  guess = tpu.fit_batch(
    [(r["per_device_batch"], r["hbm_bytes"]) for r in found], chip.hbm_bytes, _MAX_BATCH.value
  )
  while guess > 2 * per:
    r = at(guess)
    found.append(r)
    if r["fits"]:
      break
    guess //= 2
  return found


def main(argv):
  del argv
  why = tpu.available()
  if why:
    raise ConfigError(f"the TPU compiler is not available: {why}")
  cfg = configs.get_config(_PRESET.value)
  if _DTYPE.value:
    cfg.vae.compute_dtype = cfg.unet.compute_dtype = _DTYPE.value
  record = {
    "preset": _PRESET.value,
    "num_slices": _SLICES.value,
    "compute_dtype": cfg.unet.compute_dtype,
    "topologies": {},
  }
  for topology in _TOPOLOGY.value:
    mesh = tpu.slice_mesh(topology, _SLICES.value)
    cores = tpu.devices_per_chip(mesh)
    chip = tpu.per_device(tpu.chip(topology), cores)
    print(
      f"\n## {topology} x {_SLICES.value} slice(s): {mesh.size} devices ({cores} per "
      f"{chip.name.split()[0]} chip), VAE/U-Net compute dtype {cfg.unet.compute_dtype}",
      flush=True,
    )
    results = {}
    for program in tpu.programs(cfg, mesh):
      if _PROGRAMS.value and program.name not in _PROGRAMS.value:
        continue
      t0 = time.perf_counter()
      results[program.name] = tpu.analyse(program, chip, mesh.size)
      print(f"  compiled {program.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    print(table(results, chip))
    entry = {"devices": mesh.size, "devices_per_chip": cores, "device": chip.name}
    entry["programs"] = results
    needed = ("sampler_step", "sampler_decode", "vae_train", "unet_train", "classifier_train",
              "classifier_predict")  # fmt: skip
    if all(k in results for k in needed):
      jobs = tpu.job_estimates(cfg, results, mesh.size, cores)
      entry["jobs"] = jobs
      sc = jobs["sampler_composed"]
      print(
        f"\nsampler, {cfg.sample.num_steps} steps + decode: {sc['gflop_per_sample']:.4g} GFLOP "
        f"per sample, {sc['samples_per_s_chip']:.4g} samples/s per chip, "
        f"{sc['samples_per_s_slice']:.4g} per slice"
      )
      print("\n| job | wall time on the slice | chip-hours |\n| --- | --- | --- |")
      for k, v in jobs.items():
        if "hours" in v:
          print(f"| {k} | {v['hours']:.3g} h | {v['chip_hours']:.3g} |")
    if _BATCH_SEARCH.value:
      entry["batch_search"] = {}
      for name in SEARCHED:
        if name in results and (not _PROGRAMS.value or name in _PROGRAMS.value):
          first = dict(results[name])
          if name == "sampler" and "sampler_step" in results:
            first.update({k: results["sampler_step"][k] for k in _THROUGHPUT})
          entry["batch_search"][name] = batch_search(
            cfg, mesh, chip, name, first["global_batch"], first
          )
    record["topologies"][topology] = entry
    if _JSON.value:  # after each topology, so a long run keeps what it has
      storage.write_json(_JSON.value, record)
      print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  errors.run(main)
