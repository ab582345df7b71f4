"""The grid's axes and the analysis' choices: one registry each, imported by config validation, the students,
the pipeline, the statistics and the report, so a value one of them cannot handle is refused before any work.

The claims compare inits and KD settings within a language set x resource slice, and read `low` as the
low-resource setting of the paper; other resource names would train and then have no claim to enter, so
validation refuses them (add one here and to the claims in mkd.analysis.claims to use it).
"""

KD_SETTINGS = ("off", "on")                              # each with its objective, student.objective.<kd> (mkd.training.losses.objective_for)
RESOURCES = ("high", "low")                              # data.train_sizes names the analysis knows
METRICS = ("accuracy", "macro_f1")                       # per-locale scores every cell writes
PRIMARY_TESTS = ("runs", "both", "wilcoxon", "t")        # which p-value a verdict rests on (mkd.analysis.claims)
HOLM_FAMILIES = ("claim", "all")


def initializations() -> tuple[str, ...]:
    """How a student starts: the names registered in mkd.models.students (`@register_init`), in registration order.
    Read at call time, so a strategy registered after import (a plugin, a test) reaches every table and claim."""
    from mkd.models.students import INITIALIZERS

    return tuple(INITIALIZERS)


def variant_name(language_set: str, resource: str, init: str, kd: str) -> str:
    """A grid variant's name (the cells of all its seeds) in summary.json and curves.csv."""
    return f"{language_set}/{resource}/{init}/kd_{kd}"


def parse_variant_name(name: str) -> tuple[str, str, str, str] | None:
    """(language_set, resource, init, kd) of a `variant_name`; None for another series (e.g. a teacher's curve)."""
    parts = name.split("/")
    if len(parts) != 4 or not parts[3].startswith("kd_"):
        return None
    return parts[0], parts[1], parts[2], parts[3][len("kd_"):]
