"""Wall time of each command of README.md's "The pipeline, step by step", run as written.

  python -m experiments.bench_pipeline --dir=/tmp/pipeline [--json_out=pipeline.json]

Reads the first ```bash block after the README's "## The pipeline, step by step"
heading and runs its commands one after the other in --dir (so `--workdir=workdir`
is <dir>/workdir, empty at the start unless --keep), each as its own process the
way a user types it, and prints a table of seconds per command and whether it
succeeded. The `mini` preset promises minutes on a laptop: --limit_s marks each
command over it (default 600 s). Nothing here asserts a speed; the first failing
command stops the run (the later ones need its outputs).
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from absl import flags

from ecgjax import errors

_DIR = flags.DEFINE_string("dir", None, "Scratch directory the commands run in.", required=True)
_KEEP = flags.DEFINE_bool("keep", False, "Keep what --dir holds (else it starts empty).")
_FROM = flags.DEFINE_integer(
  "from_step", 1, "Start at this command (1-based), keeping --dir (the earlier ones ran)."
)
_LIMIT = flags.DEFINE_float("limit_s", 600.0, "Commands slower than this are marked.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write every figure here as JSON.")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
HEADING = "## The pipeline, step by step"


def pipeline_commands(readme: str = README) -> list[str]:
  """The commands (not the comments) of the pipeline section's first bash block."""
  with open(readme, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if HEADING not in lines:
    raise errors.ConfigError(f"{readme}: no {HEADING!r} section")
  start = lines.index(HEADING)
  block = lines.index("```bash", start) + 1
  end = lines.index("```", block)
  return [line.strip() for line in lines[block:end] if line.strip() and not line.startswith("#")]


def cpu_model() -> str:
  """The processor's name as lscpu gives it (platform.processor() is empty on Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.machine()


def main(argv):
  del argv
  commands = pipeline_commands()
  root = os.path.abspath(_DIR.value)
  if not _KEEP.value and _FROM.value == 1:
    shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root, exist_ok=True)
  env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
  rows = []
  for i, command in enumerate(commands, 1):
    if i < _FROM.value:
      continue
    print(f"[{i}/{len(commands)}] {command}", flush=True)
    t0 = time.perf_counter()
    with open(os.path.join(root, f"step_{i:02d}.log"), "w") as log:
      proc = subprocess.run(command, shell=True, cwd=root, env=env, stdout=log, stderr=log)
    seconds = time.perf_counter() - t0
    rows.append({"command": command, "seconds": seconds, "returncode": proc.returncode})
    print(f"  {seconds:7.1f} s, exit {proc.returncode}", flush=True)
    if proc.returncode:
      print(f"  failed: see {log.name}", flush=True)
      break
  print(f"\n| command | s | over {_LIMIT.value:.0f} s |\n| --- | --- | --- |")
  for r in rows:
    over = "OVER" if r["seconds"] > _LIMIT.value else ""
    status = "" if r["returncode"] == 0 else f" (exit {r['returncode']})"
    print(f"| `{r['command']}`{status} | {r['seconds']:.0f} | {over} |")
  total = sum(r["seconds"] for r in rows)
  print(f"\nall {len(rows)} of {len(commands)} commands: {total:.0f} s on {cpu_model()} "
        f"({os.cpu_count()} cores)")  # fmt: skip
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"commands": rows, "total_s": total, "cpu_count": os.cpu_count()}, f, indent=1)
  if any(r["returncode"] for r in rows):
    sys.exit(1)


if __name__ == "__main__":
  errors.run(main)
