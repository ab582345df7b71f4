"""The grid's names and places: its cells, the teachers they need, and where every artifact of a profile lives.

Light (no torch): `mkd validate` and `mkd grid` read it. Layout, everything keyed by the profile so two
profiles never share an output:
  artifacts/<profile>/data          prepared MASSIVE subsets + label vocabulary      (stage prepare)
  artifacts/<profile>/draws/s<seed> each grid seed's own training rows (nested low/high) (stage prepare)
  artifacts/<profile>/base          base model, vocabulary trimmed to the data      (stage base)
  artifacts/<profile>/teachers/<k>  fine-tuned teacher(s)                           (stage teachers)
  artifacts/<profile>/logits        cached teacher logits per language set x resource x seed (stage logits)
  artifacts/<profile>/checkpoints   resumable training state; not a DVC output, so an interrupted stage keeps it
  results/<profile>/cells/<cell>/   predictions.csv.gz (every evaluation row) + info.json (description, provenance)
  results/<profile>/cells.csv       every cell x split x locale, long format          (stage collect)
  paper_tables/<profile>/           LaTeX tables, figures, claims.md                  (stage analyze)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# dvc.yaml's two matrix stages of cells: `cell` trains every init once per grid.seeds, `cell_extra` the inits of
# grid.extra_seeds once more per extra seed (a claim may need more runs of some inits than of others).
CELL_STAGES = ("cell", "cell_extra")


def is_cell_stage(name: str) -> bool:
    """Whether a DVC stage name (cell@..., cell_extra@...) is one grid cell."""
    return name.partition("@")[0] in CELL_STAGES


@dataclass(frozen=True)
class Cell:
    language_set: str
    resource: str
    init: str
    kd: str
    seed: int
    matrix: str = field(default="cell", compare=False)   # which of CELL_STAGES makes it

    @property
    def identity(self) -> dict:
        """What names the cell (its axis values), whichever matrix stage makes it: its digests read this."""
        return {"language_set": self.language_set, "resource": self.resource, "init": self.init, "kd": self.kd,
                "seed": self.seed}

    @property
    def id(self) -> str:
        return f"{self.language_set}-{self.resource}-{self.init}-kd{self.kd}-s{self.seed}"

    @property
    def stage(self) -> str:
        """The DVC stage that makes this cell (dvc.yaml's matrix names it by its values)."""
        return f"{self.matrix}@{self.language_set}-{self.resource}-{self.init}-{self.kd}-{self.seed}"


def grid_cells(params: dict) -> list[Cell]:
    """Every cell of the grid: each init once per grid.seeds, then grid.extra_seeds' inits once per extra seed."""
    g = params["grid"]
    extra = g["extra_seeds"]
    blocks = (("cell", g["inits"], g["seeds"]), ("cell_extra", extra["inits"], extra["seeds"]))
    return [
        Cell(ls, res, init, kd, seed, matrix)
        for matrix, inits, seeds in blocks
        for ls in g["language_sets"]
        for res in g["resources"]
        for init in inits
        for kd in g["kd"]
        for seed in seeds
    ]


def all_seeds(params: dict) -> list[int]:
    """Every seed some cell trains with (grid.seeds, then grid.extra_seeds'): one draw of training rows each."""
    g = params["grid"]
    return list(g["seeds"]) + list(g["extra_seeds"]["seeds"])   # validated disjoint (config.check_seeds)


class Paths:
    def __init__(self, params: dict, root: str | Path = "."):
        root = Path(root)
        p = params["profile"]
        self.artifacts = root / "artifacts" / p
        self.data = self.artifacts / "data"
        self.draws = self.artifacts / "draws"
        self.base = self.artifacts / "base"
        self.teachers = self.artifacts / "teachers"
        self.logits = self.artifacts / "logits"
        self.checkpoints = self.artifacts / "checkpoints"
        self.students = self.artifacts / "students"
        self.tokens = root / "artifacts" / ".cache" / "tokens"
        self.results = root / "results" / p
        self.cells = self.results / "cells"
        self.tables = root / "paper_tables" / p

    def cell_dir(self, cell: Cell) -> Path:
        return self.cells / cell.id

    def draw(self, seed: int) -> Path:
        """Grid seed `seed`'s training rows (a prepared folder of train rows only)."""
        return self.draws / f"s{seed}"

    def logits_file(self, ls: str, res: str, seed: int) -> Path:
        """The teacher's logits for the training rows of (ls, res) as grid seed `seed` drew them."""
        return self.logits / f"{ls}-{res}-s{seed}.pt"


def language_set(params: dict, name: str) -> tuple[str, ...]:
    from mkd.data import resolve_language_set

    custom = params["data"].get("language_sets", {})
    return tuple(custom[name]) if name in custom else resolve_language_set(name)


def teacher_key(params: dict, ls: str, res: str) -> tuple[str, str, str]:
    """(key, language set, resource) of the teacher that distils into cells of (ls, res).

    Default `shared`: one teacher fine-tuned on teacher.language_set x teacher.resource, as in the paper,
    where a single fine-tuned teacher is distilled under different data conditions.
    """
    t = params["teacher"]
    if t["scope"] == "shared":
        return "shared", t["language_set"], t["resource"]
    if t["scope"] == "per_language_set":
        return ls, ls, t["resource"]
    return f"{ls}-{res}", ls, res


def needed_teachers(params: dict) -> dict[str, tuple[str, str]]:
    keys = {}
    for ls in params["grid"]["language_sets"]:
        for res in params["grid"]["resources"]:
            key, tls, tres = teacher_key(params, ls, res)
            keys[key] = (tls, tres)
    return keys


def prepared_locales(params: dict) -> list[str]:
    """Every locale prepare reads: the evaluation set, the grid's training sets and the teacher's."""
    locales: set[str] = set(language_set(params, params["data"]["eval_languages"]))
    for ls in params["grid"]["language_sets"]:
        locales |= set(language_set(params, ls))
    locales |= set(language_set(params, params["teacher"]["language_set"]))
    return sorted(locales)


def student_summary(params: dict) -> str:
    """One line on the students every cell builds: depth, the layer map as teacher layers, widths."""
    from mkd.config import WIDTH_KEYS
    from mkd.models.sources import base_shape
    from mkd.models.students import layer_map

    s = params["student"]
    depth, hidden, known = base_shape(params["base"]["model"])
    teacher_layers = (layer_map(s["layer_map"], depth, s["layers"]) if known
                      else "teacher layers known once the base is loaded")
    widths = {k: s.get(k) for k in WIDTH_KEYS if s.get(k) is not None}
    width = (", ".join(f"{k} {v}" for k, v in widths.items()) + " (weight selection)" if widths
             else f"the teacher's width{f' ({hidden})' if known else ''}")
    return (f"students: {s['layers']} layers, layer map {s['layer_map']} -> {teacher_layers}, {width}; "
            f"objectives: " + "; ".join(f"KD {kd} {dict(s['objective'][kd])}" for kd in params["grid"]["kd"]))
