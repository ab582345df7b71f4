"""From a model to scores: its logits over sequences, per-example predictions, and the accuracy / macro-F1 computed
from them (plain functions, and the `evaluate` modules collect uses). Imports core, data, models and axes."""
