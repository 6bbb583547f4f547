"""Process memory for the benchmarks (Linux /proc): current and peak resident set."""

_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status() -> dict[str, int]:
  """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes; {} where /proc is absent."""
  out = {}
  try:
    with open("/proc/self/status") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key in _FIELDS:
          out[key] = int(value.split()[0]) * 1024
  except OSError:
    pass
  return out


def reset_peak() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False
