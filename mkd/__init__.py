"""mkd: replicate 'The Privileged Students' (Wibowo, Solorio, Aji; arXiv 2406.16524) at any scale.

Packages, lowest first; each imports only those above it in this list (tests/test_layout.py checks it):
  core        plumbing: errors, atomic writes, the one hasher, the one cache root ($MKD_CACHE)
  data        MASSIVE 1.1: schema (locales, intents, language sets), source (folder, tarball, checked download),
              reader, arrow_cache, labels, subsets (seed_for, nested low/high), prepared
  models      base-model sources (Hub, local, e5 wheels: e5), vocab_trim, students (layer maps, the init
              registry), heads (pooling, head parameters), probe (the frozen-probe floor), features (token cache,
              length-grouped batches: the models' inputs, used by the probe, evaluation and the loop)
  axes        the grid's axes and the analysis' choices, one registry each (module)
  evaluation  predict (a model's logits), predictions (a cell's per-example file), scores, metrics (the
              `evaluate` modules in evaluation/metric_modules, loaded by path)
  training    recipe (one dataclass), losses (registry), loop (fit: teachers and students)
  analysis    cell_scores, stats, contrasts, claims, gates; writers tables, figures, claims_report, formatting;
              report runs them (imports only core and axes: no torch)
  config      params.yaml loading, profiles and validation (module)
  pipeline    grid (cells, teachers, paths; no torch), stages/ (one module per dvc.yaml stage), fingerprints,
              encoder, results (collect's tables), provenance, verify, lockfile, fanout
  studies     designs beside the grid that reuse its stages: budget (the step-budget study)
  cli         the `mkd` command (module)
"""

__version__ = "0.1.0"
