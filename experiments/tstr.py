"""Train on synthetic, test on real (paper 000 section 3; SPEC 5).

  python -m experiments.tstr --policy=real_matched --preset=mini
  python -m experiments.tstr --policy=qstrat_matched --seeds=0,1,2 --preset=paper --workdir=...

For each seed: draw conditioning tuples with the policy and PRNGKey(seed),
generate the cohort, train the XResNet1d classifier on it, pick the epoch on
real fold 9 and score on real fold 10. Writes
<workdir>/tstr/<policy>/seed_<s>/metrics.json; finished seeds are skipped.
With --preset=mini and no generator (or judge) in the workdir, they are
trained first, so this one command runs the whole pipeline.
"""

from absl import flags

from ecgjax import cli, errors, policies
from ecgjax.data import load_ptbxl
from ecgjax.errors import ConfigError
from ecgjax.eval import pipeline_setup, tstr

_POLICY = flags.DEFINE_string(
  "policy", "real_matched", f"Sampling policy, one of: {', '.join(policies.POLICIES)}."
)
_SEEDS = flags.DEFINE_string(
  "seeds", "0", "Comma-separated seeds, e.g. 0,1,2; each seeds the draw and the classifier."
)
_N = flags.DEFINE_integer(
  "n", None, "Training-set size (synthetic samples); default: the preset's tstr.n."
)


def check_policy(name: str) -> str:
  if name not in policies.POLICIES:
    raise ConfigError(
      f"--policy={name!r} is not a sampling policy; valid: {', '.join(policies.POLICIES)}"
    )
  return name


def main(argv):
  del argv
  policy = check_policy(_POLICY.value)
  seeds = tstr.parse_seeds(_SEEDS.value)
  n = tstr.check_n(_N.value)
  cfg, mesh = cli.start()
  ds = load_ptbxl(cli.DATA_DIR.value)
  workdir = cli.WORKDIR.value
  if policy != "real_subset":
    pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  if policy in policies.POOL_FACTOR:
    pipeline_setup.ensure_judge(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  rows = [harness.run(policy, s, n=n) for s in seeds]
  tstr.print_table(rows)
  print(f"metrics: {workdir}/tstr/{policy}/seed_<s>/metrics.json")


if __name__ == "__main__":
  errors.run(main)
