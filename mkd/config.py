"""Parameters: loading params.yaml, applying a profile, and validating everything before any work starts.

The schema below is the single list of valid keys and their types (the training recipe's, shared by `teacher`
and `student`, come from mkd/training/recipe.py with their allowed values); params.yaml holds the `paper` values.
A profile (mkd/profiles/<name>.yaml) is a partial tree of overrides, applied with `dvc exp run -S` so DVC
records it (see `overrides_as_set_params`).
"""

from __future__ import annotations

import difflib
import math
import re
from copy import deepcopy
from pathlib import Path
from typing import Any

from mkd.axes import HOLM_FAMILIES, KD_SETTINGS, METRICS, PRIMARY_TESTS, RESOURCES
from mkd.core.errors import ConfigError, MkdError
from mkd.core.kernels import CPU_ISAS
from mkd.training.recipe import NUMBER, check_by_init, check_recipe, recipe_schema

PROFILE_DIR = Path(__file__).with_name("profiles")

NULLABLE_INT = (int, type(None))
# key -> accepted types, or a nested schema. `dict` = free-form mapping checked by semantic validation.
SCHEMA: dict[str, Any] = {
    "profile": str,
    "scale": str,
    "threads": int,
    "cell_threads": NULLABLE_INT,
    "cpu_isa": (str, type(None)),
    "data": {
        "massive": str,
        "seed": int,
        "draw_per_seed": bool,
        "train_sizes": dict,
        "eval_per_locale": {"dev": NULLABLE_INT, "test": NULLABLE_INT},
        "selection_dev_rows": NULLABLE_INT,
        "eval_languages": (str, list),
        "language_sets": dict,
        "max_length": int,
        "allow_partial": bool,
    },
    "base": {"model": str, "trim_vocab": bool, "pooling": str},
    "teacher": {
        "scope": str,
        "language_set": str,
        "resource": str,
        **recipe_schema(),
        "seed": int,
    },
    "student": {
        "layers": int,
        "layer_map": (str, list),
        "hidden_size": NULLABLE_INT,          # widths below the teacher's (null: the teacher's): weight selection
        "intermediate_size": NULLABLE_INT,
        "num_attention_heads": NULLABLE_INT,
        "objective": dict,
        **recipe_schema(),
        "by_init": dict,          # init -> {lr, head_lr, ...}: per-init recipe values (mkd.training.recipe.PER_INIT_KEYS)
        "save_model": bool,
    },
    "probe": {"c_grid": list},
    "grid": {"language_sets": list, "resources": list, "inits": list, "kd": list, "seeds": list,
             "extra_seeds": {"inits": list, "seeds": list}},
    "analysis": {"metric": str, "split": str, "bootstrap_resamples": int, "primary_test": str, "holm_family": str,
                 "min_chance_multiple": NUMBER, "min_distinct_fraction": NUMBER, "equivalence_margin": NUMBER,
                 "allow_no_claims": bool},
}
OPTIONAL = {("data", "language_sets"), ("cell_threads",), ("cpu_isa",), ("student", "by_init"), ("student", "hidden_size"),
            ("student", "intermediate_size"), ("student", "num_attention_heads")}  # keys that may be absent (default {} / null)
_OBJECTIVE_FORM = ("the objective is data, one per KD setting: student.objective: {off: {ce: 1.0}, on: {ce: 0.5, "
                   "logit_mse: 0.5}} (a weight per registered loss; options beside the weight, e.g. logit_kl: {weight: "
                   "0.5, temperature: 2.0})")
REPLACED = {f"student.{k}": f"student.{k} is gone: {_OBJECTIVE_FORM}"
            for k in ("kd_loss", "kd_weight", "ce_weight", "hidden_weight", "temperature")}
_BUDGET_FORM = ("a run's length is a step budget now: max_steps (optimizer steps, the same for every cell whatever "
                "its data size), eval_every (steps between dev evaluations) and patience (evaluations without a new "
                "best before it stops; 0 = the whole budget), min_steps (no early stop before it). For E epochs of N rows at batch B: max_steps = E x ceil(N / B)")
REPLACED.update({f"{s}.epochs": f"{s}.epochs is gone: {_BUDGET_FORM}" for s in ("teacher", "student")})
TEACHER_SCOPES = ("shared", "per_language_set", "per_cell_data")


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join("null" if x is type(None) else x.__name__ for x in t)
    return t.__name__


def _check_tree(values: Any, schema: dict, path: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'params'} must be a mapping, got {type(values).__name__}")
    for key in values:
        if key not in schema:
            where = f"{path}." if path else ""
            if f"{where}{key}" in REPLACED:
                raise ConfigError(REPLACED[f"{where}{key}"])
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {', '.join(schema)}"
            raise ConfigError(f"unknown parameter {where}{key}{hint}")
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if key not in values:
            if tuple(full.split(".")) in OPTIONAL:
                continue
            raise ConfigError(f"missing parameter {full}; see params.yaml for its documented default")
        value = values[key]
        if isinstance(spec, dict):
            _check_tree(value, spec, full)
            continue
        types = spec if isinstance(spec, tuple) else (spec,)
        # bool is an int in Python; never accept it where a number is meant.
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise ConfigError(f"parameter {full} must be {_type_name(spec)}, got {value!r} ({type(value).__name__})")


PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_numbers(values: Any, path: str = "") -> None:
    """Every number in the tree is finite: YAML's .inf and .nan parse as floats and pass a type check."""
    if isinstance(values, dict):
        for k, v in values.items():
            _check_numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(values, list):
        for i, v in enumerate(values):
            _check_numbers(v, f"{path}[{i}]")
    elif isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"parameter {path} must be a finite number, got {values}")


def check_seeds(grid: dict) -> None:
    """grid.seeds (every init's runs) and grid.extra_seeds (more runs of some inits): distinct non-negative integers,
    the extra ones new, their inits the grid's, and neither list of extra_seeds empty while the other is not."""
    extra = grid["extra_seeds"]
    for key, seeds in (("grid.seeds", grid["seeds"]), ("grid.extra_seeds.seeds", extra["seeds"])):
        for seed in seeds:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ConfigError(f"{key} must be non-negative integers, got {seed!r}")
    for key in ("inits", "seeds"):
        if len(set(extra[key])) != len(extra[key]):
            raise ConfigError(f"grid.extra_seeds.{key} repeats a value: {extra[key]}")
    again = sorted(set(extra["seeds"]) & set(grid["seeds"]))
    if again:
        raise ConfigError(f"grid.extra_seeds.seeds repeats grid.seeds' {', '.join(map(str, again))}: the extra seeds are "
                          "runs beyond grid.seeds, so list only new ones")
    outside = [i for i in extra["inits"] if i not in grid["inits"]]
    if outside:
        raise ConfigError(f"grid.extra_seeds.inits names {', '.join(map(repr, outside))}, not in grid.inits "
                          f"{grid['inits']}: extra runs are for inits the grid trains")
    if bool(extra["inits"]) != bool(extra["seeds"]):
        empty = "inits" if not extra["inits"] else "seeds"
        raise ConfigError(f"grid.extra_seeds.{empty} is empty but the other list is not: give both (the inits that get "
                          "more runs, and the seeds of those runs) or neither")


def validate(params: dict) -> dict:
    """Check keys, types and meaning. Returns the params with optional keys filled in."""
    _check_tree(params, SCHEMA, "")
    _check_numbers(params)
    name = params["profile"]
    if not PROFILE_NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"profile {name!r} is not a safe folder name: it names artifacts/<profile>, results/<profile> and "
            "paper_tables/<profile>, so it must be 1-64 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit (no '/', no '..')")
    if params["threads"] < 0:
        raise ConfigError(f"threads must be >= 0 (0 = torch's default), got {params['threads']}")
    if (params.get("cell_threads") or 0) < 0:
        raise ConfigError(f"cell_threads must be >= 0 or null (null = threads), got {params['cell_threads']}")
    if params.get("cpu_isa") is not None and params["cpu_isa"] not in CPU_ISAS:
        raise ConfigError(f"cpu_isa must be null (the machine's widest) or one of {', '.join(CPU_ISAS)}, "
                          f"got {params['cpu_isa']!r}")
    if params["data"]["max_length"] < 8:
        raise ConfigError(f"data.max_length must be >= 8 tokens (an utterance needs its special tokens and words), "
                          f"got {params['data']['max_length']}")
    for section in ("teacher", "student"):
        check_recipe(params[section], section)
    c_grid = params["probe"]["c_grid"]
    if not c_grid or not all(isinstance(c, NUMBER) and not isinstance(c, bool) and c > 0 for c in c_grid):
        raise ConfigError(f"probe.c_grid must be a non-empty list of positive numbers (the frozen probe's inverse "
                          f"L2 penalties, chosen on dev), got {c_grid!r}")
    p = deepcopy(params)
    p["data"].setdefault("language_sets", {})
    p.setdefault("cell_threads", None)
    p.setdefault("cpu_isa", None)

    from mkd.data import LANGUAGE_SETS, resolve_language_set
    from mkd.training.losses import LOSSES, objective_for

    custom = p["data"]["language_sets"]
    for name, locales in custom.items():
        if name in LANGUAGE_SETS:
            raise ConfigError(f"data.language_sets.{name} would shadow the built-in language set {name!r}; pick another name")
        if not isinstance(locales, list) or not locales:
            raise ConfigError(f"data.language_sets.{name} must be a non-empty list of locales")
        resolve_language_set(locales)

    def check_set(spec, key):
        if isinstance(spec, str) and spec in custom:
            return tuple(custom[spec])
        try:
            return resolve_language_set(spec)
        except Exception as e:  # re-raise naming the parameter
            raise ConfigError(f"{key}: {e}") from None

    sizes = p["data"]["train_sizes"]
    if not sizes:
        raise ConfigError("data.train_sizes is empty; give at least one training-set size, e.g. {low: 100, high: 1.0}")
    for name, size in sizes.items():
        ok = (isinstance(size, int) and not isinstance(size, bool) and size > 0) or (isinstance(size, float) and 0 < size <= 1)
        if not ok:
            raise ConfigError(f"data.train_sizes.{name} must be a positive count or a fraction in (0, 1], got {size!r}")
    if "low" in sizes and "high" in sizes and _size_key(sizes["low"]) > _size_key(sizes["high"]):
        raise ConfigError(
            f"data.train_sizes.low ({sizes['low']}) is larger than data.train_sizes.high ({sizes['high']}); "
            "the low-resource set must be a subset of the high-resource one"
        )
    for split, cap in p["data"]["eval_per_locale"].items():
        if cap is not None and cap < 1:
            raise ConfigError(f"data.eval_per_locale.{split} must be null or >= 1, got {cap}")
    rows = p["data"]["selection_dev_rows"]
    if rows is not None and rows < 1:
        raise ConfigError(f"data.selection_dev_rows must be null or >= 1, got {rows}")
    check_set(p["data"]["eval_languages"], "data.eval_languages")

    grid = p["grid"]
    for axis, values in grid.items():
        if not values:
            raise ConfigError(f"grid.{axis} is empty; every grid axis needs at least one value")
        if len(set(map(str, values))) != len(values):
            raise ConfigError(f"grid.{axis} repeats a value: {values}")
    for ls in grid["language_sets"]:
        if not isinstance(ls, str):
            raise ConfigError(f"grid.language_sets holds names; define {ls!r} under data.language_sets and use its name")
        check_set(ls, "grid.language_sets")
    for r in grid["resources"] + [p["teacher"]["resource"]]:
        if r not in sizes:
            raise ConfigError(f"resource {r!r} is not defined in data.train_sizes ({', '.join(sizes)})")
    for r in grid["resources"]:  # the teacher's may be any size; the students' enter the claims
        if r not in RESOURCES:
            raise ConfigError(f"grid.resources: the analysis compares the resources {' and '.join(RESOURCES)} (the "
                              f"paper's settings), not {r!r}; name your sizes high/low in data.train_sizes, or add "
                              "the resource to mkd/axes.py and its claims to mkd/analysis/claims.py")
    from mkd.models.students import check_init, layer_map

    for init in grid["inits"]:
        check_init(init, "grid.inits")
    for init in p["student"].get("by_init", {}):
        check_init(init, "student.by_init")
    check_by_init(p["student"], "student")
    # Each cell declares its own init's entry (dvc.yaml: student.by_init.${item.init}), so a per-init rate re-runs
    # that init's cells only; DVC refuses a declared key that is absent, so every grid init needs one, maybe {}.
    absent = [i for i in grid["inits"] if i not in p["student"].get("by_init", {})]
    if absent:
        raise ConfigError(f"student.by_init has no entry for {', '.join(absent)}: every init of the grid needs one (its "
                          "own rates, or {} for the section's), because each cell declares its init's entry to DVC; "
                          "add " + ", ".join(f"{i}: {{}}" for i in absent) + " under student.by_init")
    for kd in grid["kd"]:
        if kd not in KD_SETTINGS:
            raise ConfigError(f"grid.kd values are 'off' and 'on' (quote them in YAML: \"off\"), got {kd!r}")
    check_seeds(grid)

    from mkd.models.heads import check_pooling
    from mkd.models.sources import check_source

    check_pooling(p["base"]["pooling"], "base.pooling")
    try:
        check_source(p["base"]["model"])
    except MkdError as e:
        raise ConfigError(str(e)) from None
    t = p["teacher"]
    if t["scope"] not in TEACHER_SCOPES:
        raise ConfigError(f"teacher.scope must be one of {', '.join(TEACHER_SCOPES)}, got {t['scope']!r}")
    check_set(t["language_set"], "teacher.language_set")
    s = p["student"]
    objectives = s["objective"]
    if any(name in LOSSES for name in objectives):
        raise ConfigError(f"student.objective is one objective per KD setting now: {_OBJECTIVE_FORM}; got {objectives!r}")
    unknown = sorted(set(objectives) - set(KD_SETTINGS))
    if unknown:
        raise ConfigError(f"student.objective.{unknown[0]}: the KD settings are {' and '.join(KD_SETTINGS)}; {_OBJECTIVE_FORM}")
    for kd in grid["kd"]:
        if kd not in objectives:
            raise ConfigError(f"student.objective has no entry for grid.kd {kd!r}; {_OBJECTIVE_FORM}")
        objective_for(s, kd)  # what a cell of this KD setting trains on: the same function builds it there
    if s["layers"] < 1:
        raise ConfigError(f"student.layers must be >= 1, got {s['layers']}")
    check_width(p)
    known_depth = teacher_depth_hint(p["base"]["model"])
    if known_depth is not None:
        layer_map(s["layer_map"], known_depth, s["layers"])  # raises on a map that cannot exist
    elif isinstance(s["layer_map"], list) and len(s["layer_map"]) != s["layers"]:
        raise ConfigError(f"student.layer_map has {len(s['layer_map'])} entries but student.layers={s['layers']}")
    if p["analysis"]["metric"] not in METRICS:
        raise ConfigError(f"analysis.metric must be accuracy or macro_f1, got {p['analysis']['metric']!r}")
    if p["analysis"]["primary_test"] not in PRIMARY_TESTS:
        raise ConfigError(f"analysis.primary_test must be one of {', '.join(PRIMARY_TESTS)}, got {p['analysis']['primary_test']!r}")
    if p["analysis"]["holm_family"] not in HOLM_FAMILIES:
        raise ConfigError(f"analysis.holm_family must be claim or all, got {p['analysis']['holm_family']!r}")
    a = p["analysis"]
    if a["bootstrap_resamples"] < 100:
        raise ConfigError(f"analysis.bootstrap_resamples must be >= 100 (a bootstrap CI needs resamples), got {a['bootstrap_resamples']}")
    if not 1 <= a["min_chance_multiple"] < math.inf:
        raise ConfigError(f"analysis.min_chance_multiple must be a finite number >= 1, got {a['min_chance_multiple']}")
    if not 0 < a["equivalence_margin"] < 100:
        raise ConfigError(f"analysis.equivalence_margin is the ±margin of a 'no effect' verdict in percentage points, "
                          f"a number in (0, 100), e.g. 2; got {a['equivalence_margin']}")
    if not 0 <= a["min_distinct_fraction"] <= 1:
        raise ConfigError(f"analysis.min_distinct_fraction must be in [0, 1], got {a['min_distinct_fraction']}")
    if p["analysis"]["split"] not in ("dev", "test"):
        raise ConfigError(f"analysis.split must be dev or test, got {p['analysis']['split']!r}")
    _check_the_grid_tests_a_claim(grid, a["allow_no_claims"])
    return p


def _check_the_grid_tests_a_claim(grid: dict, allowed: bool) -> None:
    """A grid in which no claim has a pair of variants to compare would train every cell for an analysis that can
    only skip every comparison: refused before any work, unless `analysis.allow_no_claims` says it is meant."""
    from mkd.analysis.specs import testable_claims

    if allowed or testable_claims(grid["inits"], grid["kd"]):
        return
    raise ConfigError(
        f"no claim can be tested on this grid (grid.inits {grid['inits']}, grid.kd {grid['kd']}): claims 1 and 5 "
        "compare teacher with random init, claim 2 teacher with pretrained init, claim 3 needs teacher and pretrained "
        "init with KD off and pretrained with KD on, claim 4 KD off and on of one init; add the missing values to "
        "grid.inits or grid.kd, or set analysis.allow_no_claims: true to train such a grid anyway")


def _size_key(size) -> float:
    """Comparable magnitude of a size: fractions of the 11,514 MASSIVE training rows per locale."""
    return size * 11514 if isinstance(size, float) else float(size)


WIDTH_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads")


def check_width(p: dict) -> None:
    """A narrower student (student.hidden_size, intermediate_size, num_attention_heads; null = the teacher's): whole
    numbers >= 1, a hidden width no wider than a base of known shape, and no objective comparing hidden states or
    attention maps with the teacher's, whose widths would differ. mkd.models.students.student_width checks the rest
    against the teacher's config when a cell builds it."""
    from mkd.models.sources import base_shape
    from mkd.training.losses import LOSSES

    s = p["student"]
    given = {k: s.get(k) for k in WIDTH_KEYS if s.get(k) is not None}
    for key, value in given.items():
        if isinstance(value, bool) or value < 1:
            raise ConfigError(f"student.{key} must be a whole number >= 1 or null (the teacher's), got {value!r}")
    _, hidden, known = base_shape(p["base"]["model"])
    if known and given.get("hidden_size", hidden) > hidden:
        raise ConfigError(f"student.hidden_size {given['hidden_size']} is wider than {p['base']['model']}'s {hidden}; "
                          "a student is at most as wide as its teacher")
    if not given or (known and set(given) == {"hidden_size"} and given["hidden_size"] == hidden):
        return
    for kd, objective in s["objective"].items():
        reads = sorted(n for n in objective if n in LOSSES and LOSSES[n].reads & {"hidden", "attentions"})
        if reads:
            raise ConfigError(f"student.objective.{kd} has {', '.join(reads)}, which compare the student's hidden states "
                              f"or attention maps with the teacher's; a narrower student's ({', '.join(f'{k}={v}' for k, v in given.items())}) "
                              "have other widths. Use logit losses (ce, logit_mse, logit_kl) or the teacher's width")


def teacher_depth_hint(model: str) -> int | None:
    """Depth of a base model known before any download (mkd.models.sources.base_shape), so an impossible layer
    map is caught first; None where it is not known."""
    from mkd.models.sources import base_shape

    layers, _, known = base_shape(model)
    return layers if known else None


def parse_yaml(text: str, where: str = "YAML") -> Any:
    """Parse YAML exactly as DVC does (YAML 1.2, ruamel): `off` stays the string 'off', as in ${item.kd}.
    The one params reader of mkd: PyYAML (YAML 1.1) reads DVC's unquoted `kd: [off, on]` as booleans, so a
    params.yaml DVC wrote back would compare unequal to itself."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return _plain(YAML(typ="safe", pure=True).load(text))
    except YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None


def read_yaml(path: str | Path) -> Any:
    return parse_yaml(Path(path).read_text(), str(path))


def dump_yaml(tree: Any) -> str:
    """YAML text that `parse_yaml` (and DVC) reads back as `tree`."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run mkd from the repository root (where params.yaml is)")
    return validate(read_yaml(path))


def load_profile(name: str) -> dict:
    path = PROFILE_DIR / f"{name}.yaml"
    if name == "paper":
        return {}
    if not path.exists():
        names = ["paper"] + sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(names)}")
    return read_yaml(path) or {}


FREE_FORM = {("data", "train_sizes"), ("data", "language_sets"), ("student", "by_init"),  # user-named keys may be
             ("student", "objective")}                                                 # added here (at any depth below)


def merge(base: dict, overrides: dict, path: str = "") -> dict:
    """Deep-merge overrides into a copy of base, as `dvc exp run -S` does; a key the base lacks is a typo,
    except inside the free-form mappings (named training sizes and language sets)."""
    out = deepcopy(base)
    for key, value in overrides.items():
        full = f"{path}.{key}" if path else key
        free = tuple(path.split("."))[:2] in FREE_FORM
        if key not in out and not free and tuple(full.split(".")) not in OPTIONAL:
            close = difflib.get_close_matches(str(key), list(out), n=1)
            raise ConfigError(f"profile overrides unknown parameter {full}" + (f"; did you mean '{close[0]}'?" if close else ""))
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, full)
        else:
            out[key] = deepcopy(value)
    return out


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            items += _flatten(value, full)
        else:
            items.append((full, value))
    return items


def _hydra_value(value: Any) -> str:
    """A value in the override grammar `dvc exp run -S` parses (Hydra's): quoted strings, JSON-like lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def overrides_as_set_params(overrides: dict, base: dict) -> list[str]:
    """`-S key=value` arguments that apply a profile through `dvc exp run` (Hydra's grammar: `+key` adds)."""
    args = []
    for key, value in _flatten(overrides):
        node, present = base, True
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                present = False
                break
            node = node[part]
        args += ["-S", f"{'' if present else '+'}{key}={_hydra_value(value)}"]
    return args
