"""Train on synthetic, test on real (paper 000 section 3; docs/design.md §5).

  python -m experiments.tstr --policy=real_matched --preset=mini
  python -m experiments.tstr --policy=qstrat_matched --seeds=0,1,2 --preset=paper --workdir=...

For each seed: draw conditioning tuples with the policy and PRNGKey(seed),
generate the cohort, train the XResNet1d classifier on it, pick the epoch on
real fold 9 and score on real fold 10. Writes
<workdir>/tstr/<policy>/seed_<s>/metrics.json; finished seeds are skipped.
With --preset=mini and no generator (or judge) in the workdir, they are
trained first, so this one command runs the whole pipeline.

  python -m experiments.tstr --config.generator.kind=simulator --policy=real_matched

trains on paper 002's simulator instead (no generator training), on the codes
it renders (NORM, SR, AFIB, AFLT, PVC, WPW); its runs go to <workdir>/simulator/.
"""

from absl import flags

from ecgjax import cli, errors, policies
from ecgjax.data import load_ptbxl
from ecgjax.eval import pipeline_setup, tstr

cli.define_flags()
_POLICY = flags.DEFINE_enum(
  "policy",
  "real_matched",
  policies.names(),
  "Sampling policy (docs/design.md §4); the registry in ecgjax/policies/registry.py lists them.",
)
_SEEDS = flags.DEFINE_string(
  "seeds", "0", "Comma-separated seeds, e.g. 0,1,2; each seeds the draw and the classifier."
)
_N = flags.DEFINE_integer(
  "n", None, "Training-set size (synthetic samples); default: the preset's tstr.n."
)


def main(argv):
  del argv
  policy = _POLICY.value
  spec = policies.get(policy)
  seeds = tstr.parse_seeds(_SEEDS.value)
  n = tstr.check_n(_N.value)
  cfg, mesh = cli.start(evaluation="tstr")
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  if spec.source != policies.REAL:
    pipeline_setup.ensure_generator(cfg, mesh, ds, workdir)
  if spec.source == policies.JUDGE_POOL:
    pipeline_setup.ensure_judge(cfg, mesh, ds, workdir)
  harness = tstr.Harness(cfg, mesh, ds, workdir)
  rows = [harness.run(policy, s, n=n) for s in seeds]
  tstr.print_table(rows)
  print(f"metrics: {harness.root}/tstr/{policy}/seed_<s>/metrics.json")


if __name__ == "__main__":
  errors.run(main)
