"""Fidelity and privacy audit of a synthetic cohort against real PTB-XL records.

  python -m experiments.audit --workdir=workdir --policy=real_matched
  python -m experiments.audit --workdir=workdir --cohort=workdir/cohorts/latent_diffusion/x
  python -m experiments.audit --workdir=workdir --policy=real_matched --config.generator.kind=simulator

--policy audits that policy's cohort in the workdir
(<workdir>/cohorts/<kind>/<policy>_seed<seed>, generated first when it is not
there, n = --n or the preset's tstr.n); --cohort audits any cohort directory
written by experiments.generate. Lead-identity residuals, amplitudes,
neurokit2 clinical measurements, distances in the judge's embedding
(Frechet, MMD, precision/recall/density/coverage, a detector's AUROC),
memorisation and a membership-inference attack, each beside two reference
rows (real train records as if synthetic; real held-out records): see
ecgjax/eval/audit.py for every definition. Writes
<workdir>/audit/<name>/{audit.md, audit.html, audit.json, *.png};
`experiments.report` links it. A finished audit is skipped on a rerun.
"""

import os

from absl import flags

from ecgjax import cli, errors, generators, policies, storage
from ecgjax.data import load_ptbxl
from ecgjax.errors import ConfigError
from ecgjax.eval import audit, cohorts, pipeline_setup
from ecgjax.eval import judge as judge_lib
from ecgjax.generators import cohort

cli.define_flags()
_COHORT = flags.DEFINE_string("cohort", None, "A cohort directory (manifest.json + shards).")
_POLICY = flags.DEFINE_enum(
  "policy",
  None,
  [p for p in policies.names() if policies.get(p).source != policies.REAL],
  "Audit this policy's cohort in the workdir, generating it first if needed.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the policy's cohort (with --policy).")
_N = flags.DEFINE_integer("n", None, "Size of the policy's cohort; default: the preset's tstr.n.")
_NAME = flags.DEFINE_string(
  "name",
  None,
  "Name of the audit (its directory under <workdir>/audit/); with --policy also the name of "
  "its cohort's directory. Default: <policy>_seed<seed> (plus _<kind> for another generator) "
  "or the cohort directory's name.",
)


def main(argv):
  del argv
  if (_COHORT.value is None) == (_POLICY.value is None):
    raise ConfigError("give exactly one of --cohort=DIR and --policy=NAME")
  cfg, mesh = cli.start(evaluation="audit")
  if _COHORT.value is not None:
    storage.check(_COHORT.value, "--cohort")
  ds = load_ptbxl(cli.data_dir())
  workdir = cli.workdir()
  kind = cfg.generator.kind
  if _POLICY.value is not None:
    out = cohorts.cohort_dir(workdir, kind, _POLICY.value, _SEED.value)
    if _NAME.value:  # a cohort of other settings (e.g. sample.limb_leads) gets its own dir
      out = os.path.join(os.path.dirname(out), _NAME.value)
    manifest = cohort.read_manifest(out)
    if manifest is None or not manifest.get("complete"):
      cohorts.make_cohort(
        cfg, mesh, ds, workdir, _N.value or cfg.tstr.n, out, _SEED.value,
        cohort.DEFAULT_SHARD_SIZE, policy=_POLICY.value,
      )  # fmt: skip
    name = _NAME.value or os.path.basename(out) + ("" if kind == generators.DEFAULT else f"_{kind}")
    about = {"source": f"policy {_POLICY.value}, seed {_SEED.value}, generator {kind}", "dir": out}
  else:
    out = _COHORT.value
    name = _NAME.value or os.path.basename(os.path.normpath(out))
    about = {"source": f"cohort {out}", "dir": out}
  made = cohort.read_cohort(out)
  manifest = cohort.read_manifest(out)
  about["identity"] = {k: v for k, v in manifest.items() if k not in ("shards", "last_run")}
  pipeline_setup.ensure_judge(cfg, mesh, ds, workdir)
  judge, _ = judge_lib.load(workdir, cfg)
  record = audit.Audit(cfg, mesh, ds, workdir, judge).run(
    name, made["signals"], made["labels"], about=about
  )
  print(audit.to_markdown(record))
  print(f"audit written to {audit.AUDIT.run(workdir, name=name).dir}")


if __name__ == "__main__":
  errors.run(main)
