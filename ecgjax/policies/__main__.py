"""Prints the registered sampling policies, comma-separated, in Table 1 order.

  python -m ecgjax.policies

Used by launch/sweep.sh, so the sweep's list is the registry's.
"""

from ecgjax.policies.registry import names

if __name__ == "__main__":
  print(",".join(names()))
