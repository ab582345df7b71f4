"""Fitting a model: the recipe (one dataclass), the loss registry, the loop. Imports core, data, models, evaluation."""
