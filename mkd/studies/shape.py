"""The shape studies: two questions the paper leaves open, asked on one slice of a profile's grid.

    layer_maps  does teacher init's privilege depend on *which* teacher layers the student copies?
                student.layer_map in {spread, bottom, top, alternate_top, symmetric} x {pretrained, teacher} init
    widths      does it survive a student narrower than the teacher, where copying becomes weight selection?
                student.hidden_size in {the teacher's, 2/3 of it, 1/2 of it} x {pretrained, teacher, random} init

    mkd study layer_maps --profile cpu              # train what is missing (resumes: a finished run is kept)
    mkd study widths --profile cpu --analyze        # tables, figure and verdicts from the finished runs

Every run is a grid cell of the slice (`run_cell`, the profile's recipe and per-init rates: the same tuning
effort for every init, none re-searched per map or width; an assumption the docs state) with one shape of the
student changed. The two studies share one runs folder, results/<profile>-shape/runs, so the run both need (the
profile's own map at full width) trains once. Runs per init follow the grid's power rule: the profile's
grid.seeds for every init, its extra seeds for the inits it gives them.

The analysis is the grid's (mkd.analysis.stats, mkd.analysis.claims.decide_family): per shape, teacher init minus
pretrained init over training runs (Welch), Holm over the study's comparisons; and whether the advantage depends
on the shape: (teacher - pretrained at a shape) - (teacher - pretrained at the reference shape), the same test,
"no effect" meaning equal within the analysis margin.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from mkd.analysis.formatting import mean_sd
from mkd.core.errors import ConfigError, MkdError

log = logging.getLogger("mkd")

REFERENCE_MAP = "spread"
LOCALE_SETS = ("all", "train")
LOCALE_SET_LABELS = {"all": "all eval locales", "train": "training locales"}


@dataclass(frozen=True)
class Shape:
    """A student shape: its layer map and hidden width (None: the teacher's width)."""

    layer_map: str
    hidden_size: int | None = None

    @property
    def id(self) -> str:
        return f"{self.layer_map}-h{self.hidden_size or 'full'}"

    def label(self, full_width: int | None = None) -> str:
        width = self.hidden_size or full_width
        return f"{self.layer_map}, width {width if width else 'full'}"


@dataclass(frozen=True)
class Run:
    """One student of a shape study: a grid cell's coordinates plus its shape."""

    language_set: str
    resource: str
    init: str
    kd: str
    shape: Shape
    seed: int

    @property
    def id(self) -> str:
        return f"{self.language_set}-{self.resource}-{self.init}-kd{self.kd}-{self.shape.id}-s{self.seed}"


@dataclass(frozen=True)
class ShapeStudy:
    """One question, its shapes and inits, on one slice and KD setting (assumptions, docs/shape-studies.md):
    cpu8-low (low resource, 8 languages: where the paper says teacher init keeps multilingual ability) with KD on
    (the paper's setting: a student distilled from its teacher)."""

    name: str
    question: str
    shapes: tuple[Shape, ...]
    inits: tuple[str, ...]
    language_set: str = "cpu8"
    resource: str = "low"
    kd: str = "on"

    @property
    def reference(self) -> Shape:
        """The grid's own shape (the profile's map at full width): what every other shape is compared with."""
        return self.shapes[0]

    def seeds(self, params: dict, init: str) -> list[int]:
        """The grid's runs per init (grid.seeds, plus grid.extra_seeds' for the inits it lists): the power rule."""
        g = params["grid"]
        return list(g["seeds"]) + (list(g["extra_seeds"]["seeds"]) if init in g["extra_seeds"]["inits"] else [])

    def runs(self, params: dict) -> list[Run]:
        return [Run(self.language_set, self.resource, init, self.kd, shape, seed)
                for shape in self.shapes for init in self.inits for seed in self.seeds(params, init)]

    def check(self, params: dict) -> None:
        """Refuse a study the profile cannot run, naming the value and the fix, before any work."""
        from mkd.axes import KD_SETTINGS, initializations
        from mkd.models.students import LAYER_MAPS
        from mkd.pipeline.grid import language_set

        language_set(params, self.language_set)
        if self.resource not in params["grid"]["resources"]:
            raise ConfigError(f"{self.name} study: resource {self.resource!r} is not in the profile's grid.resources "
                              f"{params['grid']['resources']}: its runs read the grid's draws and logits")
        bad = [i for i in self.inits if i not in initializations()] + ([self.kd] if self.kd not in KD_SETTINGS else [])
        bad += [s.layer_map for s in self.shapes if s.layer_map not in LAYER_MAPS]
        if bad:
            raise ConfigError(f"{self.name} study: unknown init, KD setting or layer map {bad}")
        if params["student"]["layer_map"] != REFERENCE_MAP:
            raise ConfigError(f"{self.name} study compares with the {REFERENCE_MAP} map; the profile's student.layer_map "
                              f"is {params['student']['layer_map']!r}")


def full_width(params: dict) -> int | None:
    """The teacher's hidden width where the base model's shape is known without loading it (e5-small: 384)."""
    from mkd.models.sources import base_shape

    _, hidden, known = base_shape(params["base"]["model"])
    return hidden if known else None


def studies(params: dict) -> dict[str, ShapeStudy]:
    """The two studies of a profile, by name (the widths follow the base: full, 2/3 and 1/2 of its width)."""
    width = full_width(params) or 384
    return {
        "layer_maps": ShapeStudy(
            "layer_maps", "Does the privilege of teacher init depend on which teacher layers are copied?",
            tuple(Shape(m) for m in ("spread", "bottom", "top", "alternate_top", "symmetric")),
            ("pretrained", "teacher")),
        "widths": ShapeStudy(
            "widths", "Does the privilege of teacher init survive a student narrower than its teacher (weight selection)?",
            (Shape(REFERENCE_MAP), Shape(REFERENCE_MAP, width * 2 // 3), Shape(REFERENCE_MAP, width // 2)),
            ("random", "pretrained", "teacher")),
    }


STUDY_NAMES = ("layer_maps", "widths")


def run_params(params: dict, run: Run) -> dict:
    """The profile's params with this run's student shape; everything else as the profile has it."""
    import copy

    p = copy.deepcopy(params)
    p["student"]["layer_map"] = run.shape.layer_map
    if run.shape.hidden_size is not None:
        p["student"]["hidden_size"] = run.shape.hidden_size
    return p


def study_paths(params: dict, study: ShapeStudy, root: str | Path = ".") -> tuple[Path, Path]:
    """(runs folder shared by both studies, this study's tables folder)."""
    return (Path(root) / "results" / f"{params['profile']}-shape" / "runs",
            Path(root) / "paper_tables" / f"{params['profile']}-shape")


def is_done(runs_dir: Path, run: Run) -> bool:
    from mkd.evaluation.predictions import FILE_NAME

    return (runs_dir / run.id / FILE_NAME).is_file()  # run_cell writes the predictions last


def _train(params: dict, run: dict, out_dir: str, root: str) -> str:
    from mkd.pipeline.grid import Cell
    from mkd.pipeline.stages.cell import run_cell

    r = Run(**{**run, "shape": Shape(**run["shape"])})
    run_cell(params, Cell(r.language_set, r.resource, r.init, r.kd, r.seed), root=root, out_dir=Path(out_dir))
    return r.id


def train(params: dict, study: ShapeStudy, workers: int, threads: int, root: str | Path = ".") -> int:
    """Train every run not yet finished, `workers` at a time (one process each, `threads` torch threads). A stopped
    study resumes here. Returns how many runs were trained."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from mkd.studies.budget import _start_worker, build_upstream

    study.check(params)
    runs = study.runs(params)
    for run in {r.shape: r for r in runs}.values():  # every shape's params valid before any work
        from mkd.config import validate

        validate(run_params(params, run))
    seeds = sorted({r.seed for r in runs})
    build_upstream(params, [(study.language_set, study.resource)], seeds, root)
    runs_dir, _ = study_paths(params, study, root)
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not is_done(runs_dir, r)]
    log.info("%s study: %d of %d run(s) to train", study.name, len(todo), len(runs))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(params["cpu_isa"], threads)) as pool:
        futures = [pool.submit(_train, run_params(params, r), asdict(r), str(runs_dir / r.id), str(root)) for r in todo]
        for f in as_completed(futures):
            log.info("%s study: finished %s", study.name, f.result())
    return len(todo)


# --- analysis ---------------------------------------------------------------------------------------------------

def run_rows(params: dict, study: ShapeStudy, root: str | Path = ".") -> list[dict]:
    """One row per finished run: its shape, init, seed, training, test accuracy (%, locale means) on every
    evaluation locale and on its training locales."""
    from mkd.data import load_prepared
    from mkd.evaluation.predictions import FILE_NAME, Predictions
    from mkd.pipeline.grid import Paths, language_set

    runs_dir, _ = study_paths(params, study, root)
    labels = load_prepared(Paths(params, root).data).labels
    train_locales = language_set(params, study.language_set)
    rows = []
    for run in study.runs(params):
        if not is_done(runs_dir, run):
            continue
        info = json.loads((runs_dir / run.id / "info.json").read_text(encoding="utf-8"))
        test = Predictions.read(runs_dir / run.id / FILE_NAME).scores(labels)["test"]["accuracy"]
        t = info["training"]
        rows.append({"run": run.id, "shape": run.shape.id, "layer_map": run.shape.layer_map,
                     "hidden_size": run.shape.hidden_size or full_width(params), "init": run.init, "seed": run.seed,
                     "teacher_layers": " ".join(map(str, info["layer_map"])), "parameters": info.get("parameters"),
                     "initial_dev": 100 * t["initial_dev_accuracy"], "best_dev": 100 * t["best_dev_accuracy"],
                     "best_step": t["best_step"], "test_all": 100 * test["avg"],
                     "test_train": 100 * sum(test[loc] for loc in train_locales) / len(train_locales),
                     "seconds": info["wall_seconds"]})
    return rows


def _scores(rows: list[dict], shape: Shape, init: str, locales: str) -> list[float]:
    return [r[f"test_{locales}"] for r in rows if r["shape"] == shape.id and r["init"] == init]


def comparisons(rows: list[dict], study: ShapeStudy, margin: float, alpha: float = 0.05) -> list[dict]:
    """Per shape and locale set: teacher init − pretrained init ("advantage"); per non-reference shape: its
    advantage minus the reference shape's ("dependence"). Welch over runs, Holm within each kind; a verdict and,
    where inconclusive, the smallest effect the runs could have detected (80 % power at Holm's first step)."""
    from mkd.analysis.claims import decide_family
    from mkd.analysis.stats import equivalence_p, run_contrast

    def contrast(kind, shape, where, groups):
        if any(len(v) < 2 for _, v in groups):
            return None
        c = run_contrast(groups)
        return {"kind": kind, "shape": shape.id, "locales": where, "delta": c.delta, "ci_lo": c.ci_lo,
                "ci_hi": c.ci_hi, "p": c.pvalue, "se": c.se, "df": c.df, "p_equivalent": equivalence_p(c, margin),
                "n_runs": "/".join(map(str, c.n_runs))}

    out = []
    for where in LOCALE_SETS:
        ref_t, ref_p = (_scores(rows, study.reference, i, where) for i in ("teacher", "pretrained"))
        for shape in study.shapes:
            t, p = (_scores(rows, shape, i, where) for i in ("teacher", "pretrained"))
            out.append(contrast("advantage", shape, where, [(1.0, t), (-1.0, p)]))
            if shape != study.reference:
                out.append(contrast("dependence", shape, where, [(1.0, t), (-1.0, p), (-1.0, ref_t), (1.0, ref_p)]))
    out = [c for c in out if c is not None]
    for kind in ("advantage", "dependence"):
        decide_family([c for c in out if c["kind"] == kind], alpha)
    return out


def references(params: dict, study: ShapeStudy, root: str | Path = ".") -> dict[str, float]:
    """The slice's frozen-probe floor and the teacher (test %, all eval locales / training locales), from the grid's
    results/<profile>/references.csv (the base at full width), and chance."""
    import csv

    from mkd.pipeline.grid import language_set

    path = Path(root) / "results" / params["profile"] / "references.csv"
    out = {"chance": 100.0 / 60}
    if not path.is_file():
        return out
    train = set(language_set(params, study.language_set))
    rows = [r for r in csv.DictReader(path.open(encoding="utf-8")) if r["split"] == "test"]
    for name, pick in (("probe", lambda r: r["reference"] == "probe" and r["language_set"] == study.language_set
                        and r["resource"] == study.resource),
                       ("teacher", lambda r: r["reference"] == "teacher")):
        sel = [r for r in rows if pick(r)]
        if sel:
            out[f"{name}_all"] = 100 * sum(float(r["accuracy"]) for r in sel) / len(sel)
            tr = [r for r in sel if r["locale"] in train]
            out[f"{name}_train"] = 100 * sum(float(r["accuracy"]) for r in tr) / max(len(tr), 1)
    return out


def accuracy_table(rows: list[dict], study: ShapeStudy, refs: dict[str, float], width: int | None) -> str:
    """Markdown: per shape, each init's test accuracy (mean ± sd over runs: all eval locales / training locales),
    beside the probe floor, the teacher and chance."""
    def ref(name):
        return (f"{refs[name + '_all']:.1f} / {refs[name + '_train']:.1f}" if name + "_all" in refs else "n/a")

    head = "| shape | teacher layers | " + " | ".join(study.inits) + " | probe floor | teacher model | chance |"
    lines = [head, "|---|---|" + "---|" * (len(study.inits) + 3)]
    for shape in study.shapes:
        mine = [r for r in rows if r["shape"] == shape.id]
        if not mine:
            continue
        cells = []
        for init in study.inits:
            rs = [r for r in mine if r["init"] == init]
            cells.append(f"{mean_sd([r['test_all'] for r in rs])} / {mean_sd([r['test_train'] for r in rs])} ({len(rs)})"
                         if rs else "")
        lines.append(f"| {shape.label(width)} | {mine[0]['teacher_layers']} | " + " | ".join(cells)
                     + f" | {ref('probe')} | {ref('teacher')} | {refs['chance']:.1f} |")
    return "\n".join(lines)


def comparison_table(comps: list[dict], study: ShapeStudy, width: int | None) -> str:
    from mkd.analysis.formatting import format_p

    labels = {s.id: s.label(width) for s in study.shapes}
    lines = ["| comparison | shape | locales | Δ, pp [95 % CI] | runs | p (Holm) | p equivalent (Holm) | verdict | "
             "MDE, pp |", "|---|---|---|---|---|---:|---:|---|---:|"]
    what = {"advantage": "teacher − pretrained", "dependence": f"advantage − advantage at {study.reference.label(width)}"}
    for c in comps:
        mde = f"{c['mde']:.1f}" if c["verdict"] == "inconclusive" else ""
        lines.append(f"| {what[c['kind']]} | {labels[c['shape']]} | {LOCALE_SET_LABELS[c['locales']]} | "
                     f"{c['delta']:+.1f} [{c['ci_lo']:+.1f}, {c['ci_hi']:+.1f}] | {c['n_runs']} | {format_p(c['p_holm'])} | "
                     f"{format_p(c['p_equivalent_holm'])} | {c['verdict']} | {mde} |")
    return "\n".join(lines)


def findings(comps: list[dict], study: ShapeStudy, width: int | None) -> list[str]:
    """One sentence per shape (all eval locales): the advantage and, beside the reference, whether it differs."""
    labels = {s.id: s.label(width) for s in study.shapes}
    out = []
    for shape in study.shapes:
        adv = [c for c in comps if c["kind"] == "advantage" and c["shape"] == shape.id and c["locales"] == "all"]
        dep = [c for c in comps if c["kind"] == "dependence" and c["shape"] == shape.id and c["locales"] == "all"]
        if not adv:
            continue
        a = adv[0]
        text = (f"{labels[shape.id]}: teacher init {a['delta']:+.1f} pp [{a['ci_lo']:+.1f}, {a['ci_hi']:+.1f}] over "
                f"pretrained init, **{a['verdict']}**" + (f" (MDE {a['mde']:.1f} pp)" if a["verdict"] == "inconclusive" else ""))
        if dep:
            d = dep[0]
            text += (f"; vs the reference {d['delta']:+.1f} pp [{d['ci_lo']:+.1f}, {d['ci_hi']:+.1f}], "
                     f"**{'differs' if d['verdict'] in ('reproduced', 'contradicted') else d['verdict']}**"
                     + (f" (MDE {d['mde']:.1f} pp)" if d["verdict"] == "inconclusive" else ""))
        out.append(text)
    return out


def figure(rows: list[dict], study: ShapeStudy, width: int | None, refs: dict[str, float], n_eval: int):
    """Test accuracy (all eval locales) per shape and init: a dot per run, the mean as a bar; the probe floor, the
    teacher model and chance as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.8 + 1.5 * len(study.shapes), 3.6))
    colors = {"random": "tab:gray", "pretrained": "tab:blue", "teacher": "tab:orange"}
    n = len(study.inits)
    for i, shape in enumerate(study.shapes):
        for j, init in enumerate(study.inits):
            v = _scores(rows, shape, init, "all")
            if not v:
                continue
            x = i + (j - (n - 1) / 2) * 0.8 / n
            ax.bar(x, sum(v) / len(v), width=0.8 / n, color=colors.get(init), alpha=0.35,
                   label=init if i == 0 else None)
            ax.scatter([x] * len(v), v, s=9, color=colors.get(init), zorder=3)
    for key, name, style in (("teacher_all", "teacher model", "-"), ("probe_all", "probe floor", "--"), ("chance", "chance", ":")):
        if key in refs:
            ax.axhline(refs[key], color="black", lw=0.8, ls=style, label=name)
    ax.set_xticks(range(len(study.shapes)), [s.label(width).replace(", ", "\n") for s in study.shapes], fontsize=8)
    ax.set_ylabel(f"test accuracy, all {n_eval} eval locales (%)")
    ax.set_title(f"{study.language_set}-{study.resource}, KD {study.kd}: {study.name.replace('_', ' ')}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: it hides no bar
    fig.tight_layout()
    return fig


def analyze(params: dict, study: ShapeStudy, root: str | Path = ".") -> str:
    """Write results/<profile>-shape/<study>.csv and paper_tables/<profile>-shape/{<study>.md, fig_<study>.*};
    return the markdown."""
    from mkd.analysis.figures import save_figure
    from mkd.core import atomic
    from mkd.pipeline.grid import language_set
    from mkd.pipeline.results import write_csv

    runs_dir, tables = study_paths(params, study, root)
    rows = run_rows(params, study, root)
    if not rows:
        raise MkdError(f"{study.name} study: no finished runs in {runs_dir}; run `mkd study {study.name} "
                       f"--profile {params['profile']}`")
    columns = list(rows[0])
    write_csv(runs_dir.parent / f"{study.name}.csv", columns, [[r[c] for c in columns] for r in rows])
    margin = params["analysis"]["equivalence_margin"]
    width = full_width(params)
    comps = comparisons(rows, study, margin)
    refs = references(params, study, root)
    n_eval = len(language_set(params, params["data"]["eval_languages"]))
    tables.mkdir(parents=True, exist_ok=True)
    text = "\n".join([
        f"# {study.question}", "",
        f"{params['profile']} profile, {study.language_set}-{study.resource}, KD {study.kd}; every run the grid's cell "
        f"recipe with one shape changed. Verdicts over training runs (Welch), Holm within each kind of comparison; "
        f"no effect = equal within ±{margin:g} pp; MDE = the smallest effect the runs could have detected (80 % power).",
        "", "## Findings (all eval locales)", ""] + [f"- {s}" for s in findings(comps, study, width)] + [
        "", f"## Test accuracy, % (mean ± sd over runs: all {n_eval} eval locales / training locales; runs)", "",
        accuracy_table(rows, study, refs, width), "",
        "## Comparisons", "", comparison_table(comps, study, width), ""])
    atomic.write_text(tables / f"{study.name}.md", text)
    save_figure(lambda: figure(rows, study, width, refs, n_eval), tables, f"fig_{study.name}")
    return text
