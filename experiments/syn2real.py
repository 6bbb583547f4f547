"""Paper 002's Syn-to-Real experiments: simulated pre-training for rare arrhythmias.

  python -m experiments.syn2real --preset=mini --workdir=workdir --seeds=0,1
  python -m experiments.syn2real --preset=paper --data_dir=/data/ptb-xl/1.0.3 --seeds=0,1,2,3,4

For AFIB, AFLT, PVC and WPW against NORM, with lead II alone and with all 12
leads: train Real only, Syn only (paper 002's simulator; no patient data) and
Syn then Real (fine-tuned), each picking its epoch on real fold 9; score F1 at
0.5 and AUPRC on real fold 10. Then the reduced-positives sweep
(--config.syn2real.caps). The classifier is --config.classifier.arch. Writes
<workdir>/syn2real/report/{syn2real.md,syn2real.csv,sweep.csv,gain_vs_positives.png}
and one metrics.json per run (finished runs are skipped on a rerun).
"""

import os

from absl import flags

from ecgjax import cli, errors
from ecgjax.data import load_ptbxl
from ecgjax.eval import syn2real, tstr

cli.define_flags()
_SEEDS = flags.DEFINE_string("seeds", "0,1", "Comma-separated seeds (data subsets and weights).")


def main(argv):
  del argv
  seeds = tstr.parse_seeds(_SEEDS.value)
  cfg, mesh = cli.start(evaluation="syn2real")
  s = cfg.syn2real
  classes = syn2real.check_choice("classes", s.classes, syn2real.CLASSES)
  leads = syn2real.check_choice("leads", s.leads, tuple(syn2real.LEAD_SETTINGS))
  caps = syn2real.parse_caps(s.caps)
  ds = load_ptbxl(cli.data_dir())
  exp = syn2real.Syn2Real(cfg, mesh, ds, cli.workdir())
  print(syn2real.markdown(exp.counts()))
  for lead in leads:
    for code in classes:
      for seed in seeds:
        for regime in ("syn", "real", "syn_real"):
          for cap in caps if regime != "syn" else [None]:
            record, skipped = exp.run(lead, code, regime, seed, cap if cap is not None else "all")
            t = record["test"]
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
            print(
              f"lead {lead:2s} {code:4s} {regime:8s} cap {str(record['cap']):>4s} seed {seed}: "
              f"F1 {fmt(t['f1'])} AUPRC {fmt(t['auprc'])} (train positives {record['n_train_pos']})"
              + ("  (finished earlier)" if skipped else "")
              + (f"  [{record['note']}]" if record.get("note") else "")
            )
  out = os.path.join(exp.dir, "report")
  if cli.is_writer():
    for path in syn2real.write_report(syn2real.collect(exp.root), exp.counts(), caps, out).values():
      print("wrote", path)


if __name__ == "__main__":
  errors.run(main)
