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

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    language_set: str
    resource: str
    init: str
    kd: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.language_set}-{self.resource}-{self.init}-kd{self.kd}-s{self.seed}"

    @property
    def stage(self) -> str:
        """The DVC stage that makes this cell (dvc.yaml's matrix names it by its values)."""
        return f"cell@{self.language_set}-{self.resource}-{self.init}-{self.kd}-{self.seed}"


def grid_cells(params: dict) -> list[Cell]:
    g = params["grid"]
    return [
        Cell(ls, res, init, kd, seed)
        for ls in g["language_sets"]
        for res in g["resources"]
        for init in g["inits"]
        for kd in g["kd"]
        for seed in g["seeds"]
    ]


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
