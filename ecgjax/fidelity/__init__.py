"""Fidelity and privacy measures of a synthetic ECG cohort against real records.

Pure functions of numpy arrays that return floats, dicts and DataFrames; each
module's docstring states its definitions exactly.

* `leads`: limb-lead consistency (Einthoven and Goldberger residuals) per cohort.
* `distances`: Frechet distance, MMD^2 (Gaussian kernel, median heuristic),
  precision / recall / density / coverage, and a held-out real-vs-synthetic
  detection AUROC, on (n, d) feature arrays such as classifier embeddings.
* `privacy`: nearest-neighbour distances, memorisation against a holdout, a
  distance-based membership-inference attack, and signal-space features.
* `clinical`: heart rate, PR, QRS, QT and per-lead R amplitudes measured with
  neurokit2 (optional: `pip install -e ".[audit]"`), and their comparison.
* `pairwise`: the bounded-memory Euclidean distance blocks the others use.

The package itself imports nothing: `from ecgjax.fidelity import distances`.
"""
