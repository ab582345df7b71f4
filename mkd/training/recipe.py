"""The training recipe: the hyperparameters the `teacher` and `student` sections of params.yaml share.

`Recipe` is their one list. Each field carries its params.yaml type and its allowed values as data, so the
schema (`recipe_schema`), validation (`check_recipe`) and the training config (`Recipe.from_section`, inherited
by mkd.training.loop.TrainConfig) all read it: a new hyperparameter is a field here plus its value in params.yaml.
No torch here: `mkd validate` imports this module and must stay cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from mkd.core.errors import ConfigError

NUMBER = (int, float)  # YAML writes 1 or 1.0; the training code gets a float either way


@dataclass(frozen=True)
class Allowed:
    """The values a recipe field admits beyond its type, in JSON Schema's terms."""

    minimum: float | None = None            # value >= minimum
    exclusive_minimum: float | None = None  # value > exclusive_minimum
    exclusive_maximum: float | None = None  # value < exclusive_maximum
    choices: tuple[str, ...] = ()

    def admits(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        return ((self.minimum is None or value >= self.minimum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.exclusive_maximum is None or value < self.exclusive_maximum)
                and math.isfinite(value))

    def rule(self) -> str:
        """The rule as an error message states it, e.g. 'must be in [0, 1)'."""
        if self.choices:
            return f"must be {', '.join(self.choices[:-1])} or {self.choices[-1]}"
        if self.exclusive_maximum is not None:
            return f"must be in [{self.minimum:g}, {self.exclusive_maximum:g})"
        if self.exclusive_minimum is not None:
            return f"must be a finite number > {self.exclusive_minimum:g}"
        return f"must be >= {self.minimum:g}"


def recipe_field(default: Any, types: type | tuple, allowed: Allowed | None = None):
    """A Recipe field: its default (what TrainConfig takes when a test or benchmark gives none), the types
    params.yaml may hold (as in mkd.config.SCHEMA) and the values it admits."""
    return field(default=default, metadata={"types": types, "allowed": allowed})


@dataclass(frozen=True)
class Recipe:
    # The budget in optimizer steps: every run of a section gets the same number, whatever its data size (a
    # low-resource student sees its few rows many times); the LR schedule spans it. Epochs are derived (logs).
    max_steps: int = recipe_field(100, int, Allowed(minimum=1))
    # Optimizer steps between evaluations on the training locales' dev rows (and one at the budget's end).
    eval_every: int = recipe_field(50, int, Allowed(minimum=1))
    # Early stopping: stop after this many evaluations without a new best dev accuracy (0: use the whole budget).
    # The best-on-dev weights are kept either way.
    patience: int = recipe_field(0, int, Allowed(minimum=0))
    # No early stop before this many optimizer steps (0: patience may stop a run at any evaluation). A run that
    # starts slowly (a random-init student near chance for its first ~200 steps) is not ended by the patience
    # counted over its flat start; it still may stop at the first evaluation from here on (the step budget).
    min_steps: int = recipe_field(0, int, Allowed(minimum=0))
    batch_size: int = recipe_field(32, int, Allowed(minimum=1))
    lr: float = recipe_field(5e-5, NUMBER, Allowed(exclusive_minimum=0))
    # The classification head's own learning rate (None: lr); see params.yaml.
    head_lr: float | None = recipe_field(None, NUMBER, Allowed(exclusive_minimum=0))
    freeze_word_embeddings: bool = recipe_field(False, bool)
    weight_decay: float = recipe_field(0.01, NUMBER, Allowed(minimum=0))
    warmup_ratio: float = recipe_field(0.1, NUMBER, Allowed(minimum=0, exclusive_maximum=1))
    # Optimizer steps between checkpoints (0: at each evaluation); a run also checkpoints when it ends.
    checkpoint_every: int = recipe_field(200, int, Allowed(minimum=0))
    mixed_precision: str = recipe_field("no", str, Allowed(choices=("no", "fp16", "bf16")))

    @classmethod
    def from_section(cls, section: dict, **others: Any):
        """The recipe of a validated params section (teacher or student), plus a subclass's own fields.
        Reads exactly the recipe's keys: the cell stage's declared = read check sees no other."""
        values = {}
        for f in fields(Recipe):
            value = section[f.name]
            values[f.name] = float(value) if f.metadata["types"] == NUMBER else value
        return cls(**values, **others)


# What `student.by_init` may set for one init: the optimizer's rates and regularization, the values a recipe
# search tunes per init so every init gets the same tuning effort. The budget (max_steps, eval_every,
# patience, min_steps) and the batch size stay one for all inits: the grid compares inits at equal optimizer steps.
PER_INIT_KEYS = ("lr", "head_lr", "weight_decay", "warmup_ratio")


def section_for_init(section: dict, init: str) -> dict:
    """The recipe a student of `init` trains with: the section's recipe values, with its `by_init[init]` values
    over them (empty: one recipe for every init). Reads only those keys, so a cell of one init declares (and
    re-runs for) its own `by_init` entry, never another init's."""
    return {**{f.name: section[f.name] for f in fields(Recipe)}, **section.get("by_init", {}).get(init, {})}


def recipe_schema() -> dict[str, type | tuple]:
    """The recipe's entries of mkd.config.SCHEMA: key -> accepted types."""
    return {f.name: f.metadata["types"] for f in fields(Recipe)}


def epoch_budget(rows: int, batch_size: int, epochs: int) -> dict:
    """The budget keys that train `epochs` full passes over `rows` rows, evaluating once an epoch and never
    stopping early: the epoch-based recipe in steps (benchmarks that compare with an epoch-based Trainer)."""
    per_epoch = -(-rows // batch_size)
    return {"max_steps": per_epoch * epochs, "eval_every": per_epoch, "patience": 0, "min_steps": 0}


def check_by_init(section: dict, name: str) -> None:
    """Refuse a `by_init` entry that sets anything but PER_INIT_KEYS, or a value of the wrong type or range; the
    init names themselves are checked by the caller (mkd.models.students.check_init)."""
    types = recipe_schema()
    for init, values in section.get("by_init", {}).items():
        where = f"{name}.by_init.{init}"
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping of recipe values for {init}-init students, e.g. "
                              f"{{lr: 3.0e-4, head_lr: 1.0e-2}}; got {values!r}")
        for key, value in values.items():
            if key not in PER_INIT_KEYS:
                raise ConfigError(f"{where}.{key} cannot differ per init: only {', '.join(PER_INIT_KEYS)} may (every "
                                  f"init trains under the same step budget and batch size); set {name}.{key} instead")
            if isinstance(value, bool) or not isinstance(value, types[key]):
                raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
        check_recipe(section_for_init(section, init), where)


def check_recipe(section: dict, name: str) -> None:
    """Refuse a value outside its field's allowed range, or a min_steps beyond the budget; the section's types
    are checked already (SCHEMA)."""
    for f in fields(Recipe):
        allowed, value = f.metadata["allowed"], section[f.name]
        if allowed is not None and not allowed.admits(value):
            raise ConfigError(f"{name}.{f.name} {allowed.rule()}, got {value!r}")
    if section["min_steps"] > section["max_steps"]:
        raise ConfigError(f"{name}.min_steps ({section['min_steps']}) is beyond {name}.max_steps ({section['max_steps']}): "
                          f"a run cannot be kept from stopping past its budget; set min_steps <= max_steps "
                          f"(e.g. {section['max_steps'] // 2}, half the budget) or 0")
