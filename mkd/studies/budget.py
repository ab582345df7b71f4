"""The budget study: is the teacher-init advantage a head start or a lasting privilege?

The grid trains every student under one step budget. This study trains the students of a few slices under
several budgets, each run on its own schedule annealed to its budget (linear warmup and decay to zero), with
no early stop (patience 0: the best-on-dev weights of the whole annealed run are kept), and each init's
learning rate chosen on dev **at each budget** from the same small grid for every init. Then it asks, per
slice, whether the advantage of teacher init over pretrained init at the largest budget is still there
(lasting), equivalent to zero within the analysis margin (fading to no effect), or undecided (inconclusive,
with the smallest effect the runs could have detected), with the verdict machinery of the grid
(mkd.analysis.stats, mkd.analysis.claims.decide_family).

    mkd study budget --profile cpu                # train what is missing (resumes: a finished run is kept)
    mkd study budget --profile cpu --analyze      # tables, figure and verdicts from the finished runs

The runs reuse the profile's upstream (prepared data, base model, teacher, cached logits: `mkd exp --profile
cpu` or `dvc repro` builds them) and the grid's own `run_cell`; only the student recipe differs. Outputs:
results/<profile>-budget/runs/<run>/{info.json,predictions.csv.gz} and paper_tables/<profile>-budget/.

The order of work: first the learning-rate search (every rate of the grid, at every budget, on the search seed
with KD off), then, at each (slice, init, budget)'s chosen rate, the other seeds and KD on. The KD-on runs use
the rate chosen with KD off (assumption: one search per init and budget, not per objective, halves its cost).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mkd.analysis.formatting import mean_sd
from mkd.core.errors import ConfigError, MkdError

log = logging.getLogger("mkd")


@dataclass(frozen=True)
class Run:
    """One student of the study: a grid cell's coordinates plus its budget and learning rate."""

    language_set: str
    resource: str
    init: str
    kd: str
    budget: int
    lr: float
    seed: int

    @property
    def id(self) -> str:
        return (f"{self.language_set}-{self.resource}-{self.init}-kd{self.kd}-b{self.budget}"
                f"-lr{self.lr:g}-s{self.seed}")

    @property
    def group(self) -> tuple[str, str, str, int]:
        """The runs that share one learning-rate choice: a slice, an init and a budget."""
        return (self.language_set, self.resource, self.init, self.budget)


@dataclass(frozen=True)
class BudgetStudy:
    """The study's design; every value is an assumption chosen for a 2-core machine (docs/budget-study.md).

    slices: (language set, resource, budgets): budgets 4-8x from the smallest to the largest, the grid's 480 among
    them (8x at high resource, where the best variant still rose at 4x; 4x at low, 16-32 epochs of its rows at
    the largest); lrs: the body learning rates
    searched for every init at every budget (the cpu profile's head rates per init stay: they were searched
    with these inits before, benchmark/recipe_search_logs/s4_step_budget.md); evals_per_run: dev evaluations
    per run (every 5 % of its budget, as the grid); search_seed / search_kd: the runs the rate is chosen on.
    """

    slices: tuple[tuple[str, str, tuple[int, ...]], ...] = (("cpu8", "high", (240, 480, 960, 1920)),
                                                            ("cpu8", "low", (240, 480, 960)))
    inits: tuple[str, ...] = ("teacher", "pretrained")
    kd: tuple[str, ...] = ("off", "on")
    lrs: tuple[float, ...] = (1.0e-4, 3.0e-4)
    seeds: tuple[int, ...] = (0, 1, 2)
    evals_per_run: int = 20
    search_seed: int = 0
    search_kd: str = "off"

    @property
    def budgets(self) -> tuple[int, ...]:
        """Every budget of any slice, ascending."""
        return tuple(sorted({b for _, _, bs in self.slices for b in bs}))

    def slice_index(self, run: Run) -> int:
        return [(ls, res) for ls, res, _ in self.slices].index((run.language_set, run.resource))

    def search_runs(self) -> list[Run]:
        return [Run(ls, res, init, self.search_kd, b, lr, self.search_seed)
                for ls, res, budgets in self.slices for init in self.inits for b in budgets for lr in self.lrs]

    def runs_at(self, chosen: dict[tuple, float]) -> list[Run]:
        """Every run at the chosen rate of its group (the search runs at that rate included)."""
        return [Run(ls, res, init, kd, b, chosen[(ls, res, init, b)], seed)
                for ls, res, budgets in self.slices for init in self.inits for b in budgets
                if (ls, res, init, b) in chosen for kd in self.kd for seed in self.seeds]

    def check(self, params: dict) -> None:
        """Refuse a design the profile cannot run, naming the value and the fix, before any work."""
        from mkd.axes import KD_SETTINGS, initializations
        from mkd.pipeline.grid import language_set

        for ls, res, _ in self.slices:
            language_set(params, ls)  # raises on an unknown set, naming it
            if res not in params["data"]["train_sizes"]:
                raise ConfigError(f"budget study: resource {res!r} is not in data.train_sizes "
                                  f"({', '.join(params['data']['train_sizes'])})")
        bad = [i for i in self.inits if i not in initializations()] + [k for k in self.kd if k not in KD_SETTINGS]
        if bad:
            raise ConfigError(f"budget study: unknown init or KD setting {bad}")
        if any(b < self.evals_per_run for b in self.budgets) or not self.lrs or not self.seeds:
            raise ConfigError(f"budget study: budgets must be >= {self.evals_per_run} steps, with rates and seeds")
        # the runs read the grid's per-seed draws and logits: its seeds and resources, nothing beyond them
        from mkd.pipeline.grid import all_seeds

        outside = ([f"seed {s}" for s in self.seeds if s not in all_seeds(params)]
                   + [f"resource {res}" for _, res, _ in self.slices if res not in params["grid"]["resources"]])
        if outside:
            raise ConfigError(f"budget study: {', '.join(outside)} not in the profile's grid (seeds "
                              f"{all_seeds(params)}, grid.resources {params['grid']['resources']}); "
                              "add them there or drop them from the study")
        if self.search_seed not in self.seeds or self.search_kd not in self.kd:
            raise ConfigError("budget study: the search seed and KD setting must be among the study's")


def run_params(params: dict, study: BudgetStudy, run: Run) -> dict:
    """The profile's params with this run's student recipe: its budget, annealed schedule, no early stop, its
    init's learning rate; everything else (head rate, batch, warmup, objective) as the profile has it."""
    p = copy.deepcopy(params)
    s = p["student"]
    s.update(max_steps=run.budget, eval_every=max(1, run.budget // study.evals_per_run), patience=0, min_steps=0)
    s["by_init"] = {**s["by_init"], run.init: {**s["by_init"].get(run.init, {}), "lr": run.lr}}
    return p


def study_paths(params: dict, root: str | Path = ".") -> tuple[Path, Path]:
    """(runs folder, tables folder) of the profile's study."""
    name = f"{params['profile']}-budget"
    return Path(root) / "results" / name / "runs", Path(root) / "paper_tables" / name


def is_done(runs_dir: Path, run: Run) -> bool:
    from mkd.evaluation.predictions import FILE_NAME

    return (runs_dir / run.id / FILE_NAME).is_file()  # run_cell writes the predictions last


def read_info(runs_dir: Path, run: Run) -> dict:
    return json.loads((runs_dir / run.id / "info.json").read_text(encoding="utf-8"))


def choose_rates(study: BudgetStudy, runs_dir: Path) -> dict[tuple, float]:
    """Each (slice, init, budget)'s rate: the best dev accuracy of its search runs (ties: the smaller rate). Only
    groups whose every search run has finished."""
    by_group: dict[tuple, list[Run]] = {}
    for r in study.search_runs():
        by_group.setdefault(r.group, []).append(r)
    chosen = {}
    for g, runs in by_group.items():
        if all(is_done(runs_dir, r) for r in runs):
            best = max(runs, key=lambda r: (read_info(runs_dir, r)["training"]["best_dev_accuracy"], -r.lr))
            chosen[g] = best.lr
    return chosen


def pending(study: BudgetStudy, runs_dir: Path) -> list[Run]:
    """What can be trained now, in the order it should run: the search runs not finished, and the runs at the
    rates chosen so far. Smaller budgets first, so a study stopped early has its budgets complete from the
    smallest up; within a budget the search first, then KD off, then on."""
    todo = [r for r in study.search_runs() + study.runs_at(choose_rates(study, runs_dir)) if not is_done(runs_dir, r)]
    searched = set(study.search_runs())
    return sorted(dict.fromkeys(todo), key=lambda r: (r.budget, r not in searched, r.kd != study.search_kd,
                                                     study.slice_index(r), r.init, r.seed))


# --- training, in worker processes --------------------------------------------------------------------------

def _start_worker(cpu_isa: str | None, threads: int) -> None:
    """A worker's first act: pin the float kernels before torch is imported, then its thread count."""
    from mkd.core.kernels import pin_cpu_isa

    pin_cpu_isa(cpu_isa)
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _train(params: dict, run: dict, out_dir: str, root: str) -> str:
    from mkd.pipeline.grid import Cell
    from mkd.pipeline.stages.cell import run_cell

    r = Run(**run)
    run_cell(params, Cell(r.language_set, r.resource, r.init, r.kd, r.seed), root=root, out_dir=Path(out_dir))
    return r.id


def build_upstream(params: dict, slices: Sequence[tuple[str, str]], seeds: Sequence[int], root: str | Path = ".") -> None:
    """Build what a study's runs read and is not there yet, in this process, with the grid's own stages: the
    prepared data and every seed's draw, the base model, the teachers of the (language set, resource) slices, the
    cached logits. What is there is read as it is (the grid's DVC stages keep it current with params; a study does
    not re-check it). Every study beside the grid (mkd.studies) starts here."""
    from mkd.pipeline import stages
    from mkd.pipeline.grid import Paths, teacher_key

    paths = Paths(params, root)
    teachers = [paths.teachers / teacher_key(params, ls, res)[0] / "config.json" for ls, res in slices]
    steps = [("prepare", stages.prepare, [paths.data] + [paths.draw(s) for s in seeds]),
             ("build-base", stages.build_base, [paths.base]),
             ("train-teachers", stages.train_teachers, teachers),
             ("cache-logits", stages.cache_logits, [paths.logits_file(ls, res, s)
                                                    for ls, res in slices for s in seeds])]
    for name, stage, outputs in steps:
        if not all(p.exists() for p in outputs):
            log.info("study: building the profile's upstream: %s", name)
            stage(params, root)


def train(params: dict, study: BudgetStudy, workers: int, threads: int, root: str | Path = ".") -> int:
    """Train every run not yet finished, `workers` at a time (one process each, `threads` torch threads: the
    grid's cell threads, `mkd study` passes them).
    Returns how many runs were trained. A stopped study resumes here: finished runs are kept; an interrupted
    run continues from its checkpoint."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from mkd.core import atomic

    study.check(params)
    build_upstream(params, [(ls, res) for ls, res, _ in study.slices], study.seeds, root)
    runs_dir, _ = study_paths(params, root)
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(runs_dir.parent / "study.json", json.dumps(asdict(study), indent=1) + "\n")
    trained = 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(params["cpu_isa"], threads)) as pool:
        while todo := pending(study, runs_dir):
            log.info("budget study: %d run(s) to train in this phase", len(todo))
            futures = [pool.submit(_train, run_params(params, study, r), asdict(r), str(runs_dir / r.id), str(root))
                       for r in todo]
            for f in as_completed(futures):
                log.info("budget study: finished %s", f.result())
                trained += 1
    return trained


# --- analysis ---------------------------------------------------------------------------------------------------

LOCALE_SETS = ("all", "train")  # test accuracy on every evaluation locale, and on the slice's training locales
LOCALE_SET_LABELS = {"all": "all eval locales", "train": "training locales"}
CLAIM_FAMILY = 8  # comparisons in claim 2's Holm family in the cpu grid (2 language sets x 2 resources x 2 KD)
VERDICT_WORDS = {"reproduced": "lasting", "no effect": "fading to no effect", "contradicted": "reversed"}


def run_rows(params: dict, study: BudgetStudy, root: str | Path = ".") -> list[dict]:
    """One row per finished run at its group's chosen rate: its recipe, training and test accuracy (%, locale
    means) on every evaluation locale and on its training locales."""
    from mkd.data import load_prepared
    from mkd.evaluation.predictions import FILE_NAME, Predictions
    from mkd.pipeline.grid import Paths, language_set

    runs_dir, _ = study_paths(params, root)
    labels = load_prepared(Paths(params, root).data).labels
    chosen = choose_rates(study, runs_dir)
    rows = []
    for run in study.runs_at(chosen):
        if not is_done(runs_dir, run):
            continue
        info = read_info(runs_dir, run)
        test = Predictions.read(runs_dir / run.id / FILE_NAME).scores(labels)["test"]["accuracy"]
        train_locales = language_set(params, run.language_set)
        t = info["training"]
        rows.append({**asdict(run), "steps": t["steps"], "best_step": t["best_step"], "stopped": t["stopped"],
                     "best_dev": 100 * t["best_dev_accuracy"], "test_all": 100 * test["avg"],
                     "test_train": 100 * sum(test[loc] for loc in train_locales) / len(train_locales),
                     "seconds": info["wall_seconds"]})
    return rows


def compared_runs(rows: list[dict], where_run: tuple[str, str, str, int], locales: str) -> dict[str, list[float]]:
    """{"teacher": [...], "pretrained": [...]}: the test accuracy (on `locales`, a LOCALE_SETS key) of each init's
    runs at (language set, resource, KD, budget), the two sides of the advantage."""
    ls, res, kd, b = where_run
    return {init: [r[f"test_{locales}"] for r in rows if (r["language_set"], r["resource"], r["init"], r["kd"],
                                                           r["budget"]) == (ls, res, init, kd, b)]
            for init in ("teacher", "pretrained")}


def advantages(rows: list[dict], study: BudgetStudy, margin: float, alpha: float = 0.05) -> list[dict]:
    """Teacher init minus pretrained init, per slice x KD x budget x locale set, over training runs (Welch, as the
    grid's verdicts); verdicts at each budget, Holm over the slices x KD x locale sets of that budget."""
    from mkd.analysis.claims import decide_family
    from mkd.analysis.stats import equivalence_p, run_contrast

    out = []
    for ls, res, budgets in study.slices:
        for kd in study.kd:
            for b in budgets:
                for where in LOCALE_SETS:
                    runs = compared_runs(rows, (ls, res, kd, b), where)
                    if min(len(v) for v in runs.values()) < 2:
                        continue
                    c = run_contrast([(1.0, runs["teacher"]), (-1.0, runs["pretrained"])])
                    out.append({"language_set": ls, "resource": res, "kd": kd, "budget": b, "locales": where,
                                "delta": c.delta, "ci_lo": c.ci_lo, "ci_hi": c.ci_hi, "p": c.pvalue, "se": c.se, "df": c.df,
                                "p_equivalent": equivalence_p(c, margin), "n_runs": c.n_runs})
    for b in study.budgets:
        decide_family([a for a in out if a["budget"] == b], alpha)
    return out


def search_table(params: dict, study: BudgetStudy, root: str | Path = ".") -> str:
    """Markdown: the learning-rate search (search seed, KD off): best dev % per slice x init x budget x rate."""
    runs_dir, _ = study_paths(params, root)
    chosen = choose_rates(study, runs_dir)
    lines = ["| slice | init | budget | " + " | ".join(f"lr {lr:g}" for lr in study.lrs) + " | chosen |",
             "|---|---|---:|" + "---:|" * (len(study.lrs) + 1)]
    for ls, res, budgets in study.slices:
        for init in study.inits:
            for b in budgets:
                cells = []
                for lr in study.lrs:
                    r = Run(ls, res, init, study.search_kd, b, lr, study.search_seed)
                    cells.append(f"{100 * read_info(runs_dir, r)['training']['best_dev_accuracy']:.1f}"
                                 if is_done(runs_dir, r) else "")
                pick = chosen.get((ls, res, init, b))
                lines.append(f"| {ls}-{res} | {init} | {b} | " + " | ".join(cells) + f" | {'' if pick is None else f'{pick:g}'} |")
    return "\n".join(lines)


def study_table(rows: list[dict], study: BudgetStudy) -> str:
    """Markdown: per slice x budget x init x KD: the chosen rate, runs, steps, best dev, test (mean ± sd over runs)."""
    import statistics

    lines = ["| slice | budget | init | KD | lr | runs | best step (median) | best dev % | test, all eval locales % | "
             "test, training locales % |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for ls, res, budgets in study.slices:
        for b in budgets:
            for init in study.inits:
                for kd in study.kd:
                    rs = [r for r in rows if (r["language_set"], r["resource"], r["budget"], r["init"], r["kd"])
                          == (ls, res, b, init, kd)]
                    if not rs:
                        continue
                    lines.append(f"| {ls}-{res} | {b} | {init} | {kd} | {rs[0]['lr']:g} | {len(rs)} | "
                                 f"{statistics.median(r['best_step'] for r in rs):g} | {mean_sd([r['best_dev'] for r in rs])} | "
                                 f"{mean_sd([r['test_all'] for r in rs])} | {mean_sd([r['test_train'] for r in rs])} |")
    return "\n".join(lines)


def advantage_table(adv: list[dict]) -> str:
    from mkd.analysis.formatting import format_p

    lines = ["| slice | KD | budget | locales | Δ teacher − pretrained, pp [95 % CI] | runs | p (Holm) | "
             "p equivalent (Holm) | verdict | MDE, pp |", "|---|---|---:|---|---|---|---:|---:|---|---:|"]
    for a in adv:
        mde = f"{a['mde']:.1f}" if a["verdict"] == "inconclusive" else ""
        lines.append(f"| {a['language_set']}-{a['resource']} | {a['kd']} | {a['budget']} | {LOCALE_SET_LABELS[a['locales']]} | "
                     f"{a['delta']:+.1f} [{a['ci_lo']:+.1f}, {a['ci_hi']:+.1f}] | {'/'.join(map(str, a['n_runs']))} | "
                     f"{format_p(a['p_holm'])} | {format_p(a['p_equivalent_holm'])} | {a['verdict']} | {mde} |")
    return "\n".join(lines)


def seeds_table(rows: list[dict], study: BudgetStudy, family: int, alpha: float = 0.05,
                seeds: Sequence[int] = (3, 4, 5, 6, 8)) -> str:
    """Markdown: the advantage (all eval locales) detectable with 80 % power at Holm's first step (alpha / family)
    if each init had n runs with the run spread measured here (sd over this study's runs, every seed drawing its
    own rows): what the grid's seed count buys for claim 2."""
    import numpy as np

    from mkd.analysis.stats import minimum_detectable_effect, welch_se_df

    lines = ["| slice | KD | budget | run sd, teacher / pretrained init, pp | " + " | ".join(f"{n} runs" for n in seeds)
             + " |", "|---|---|---:|---|" + "---:|" * len(seeds)]
    for ls, res, budgets in study.slices:
        for kd in study.kd:
            for b in budgets:
                runs = [np.array(v) for v in compared_runs(rows, (ls, res, kd, b), "all").values()]
                if min(len(v) for v in runs) < 2:
                    continue
                var = [float(v.var(ddof=1)) for v in runs]
                mdes = [minimum_detectable_effect(*welch_se_df([(1.0, var[0], n), (-1.0, var[1], n)]), alpha / family)
                        for n in seeds]
                lines.append(f"| {ls}-{res} | {kd} | {b} | {var[0] ** 0.5:.1f} / {var[1] ** 0.5:.1f} | "
                             + " | ".join(f"{m:.1f}" for m in mdes) + " |")
    return "\n".join(lines)


def slice_findings(adv: list[dict], study: BudgetStudy) -> list[str]:
    """One sentence per slice x KD: the advantage at the largest budget with runs of both inits (the slice's
    largest, unless the study was stopped before it), as lasting, fading or inconclusive."""
    out = []
    for ls, res, budgets in study.slices:
        for kd in study.kd:
            pts = sorted((a for a in adv if (a["language_set"], a["resource"], a["kd"], a["locales"]) == (ls, res, kd, "all")),
                         key=lambda a: a["budget"])
            if not pts:
                continue
            first, last = pts[0], pts[-1]
            word = VERDICT_WORDS.get(last["verdict"], "inconclusive")
            detail = f" (MDE {last['mde']:.1f} pp)" if word == "inconclusive" else ""
            short = "" if last["budget"] == max(budgets) else f"; {max(budgets)} steps not run yet"
            out.append(f"{ls}-{res}, KD {kd}: **{word}**{detail}: teacher init's advantage {first['delta']:+.1f} pp at "
                       f"{first['budget']} steps, {last['delta']:+.1f} pp [{last['ci_lo']:+.1f}, {last['ci_hi']:+.1f}] at "
                       f"{last['budget']} (all eval locales){short}")
    return out


def advantage_figure(adv: list[dict], study: BudgetStudy):
    """Advantage (teacher − pretrained, pp) against the step budget: a panel per slice, a line per KD setting and
    locale set, the 95 % interval over runs as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(study.slices), figsize=(5.0 * len(study.slices), 3.6), squeeze=False, sharey=True)
    styles = {("off", "all"): ("tab:blue", "-"), ("off", "train"): ("tab:blue", "--"),
              ("on", "all"): ("tab:orange", "-"), ("on", "train"): ("tab:orange", "--")}
    for ax, (ls, res, budgets) in zip(axes[0], study.slices):
        for (kd, where), (color, style) in styles.items():
            pts = sorted((a for a in adv if (a["language_set"], a["resource"], a["kd"], a["locales"]) == (ls, res, kd, where)),
                         key=lambda a: a["budget"])
            if not pts:
                continue
            x = [a["budget"] for a in pts]
            ax.plot(x, [a["delta"] for a in pts], style, color=color, marker="o", label=f"KD {kd}, {LOCALE_SET_LABELS[where]}")
            ax.fill_between(x, [a["ci_lo"] for a in pts], [a["ci_hi"] for a in pts], color=color, alpha=0.12)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(budgets), [str(b) for b in budgets])
        ax.set_title(f"{ls}-{res}")
        ax.set_xlabel("step budget (each run annealed to its own)")
    axes[0][0].set_ylabel("teacher init − pretrained init, test pp")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def analyze(params: dict, study: BudgetStudy, root: str | Path = ".") -> str:
    """Write results/<profile>-budget/runs.csv and paper_tables/<profile>-budget/{budget.md, fig_budget.*};
    return budget.md's text."""
    from mkd.analysis.figures import save_figure
    from mkd.core import atomic
    from mkd.pipeline.results import write_csv

    runs_dir, tables = study_paths(params, root)
    rows = run_rows(params, study, root)
    if not rows:
        raise MkdError(f"budget study: no finished runs in {runs_dir}; run `mkd study budget --profile {params['profile']}`")
    columns = list(rows[0])
    write_csv(runs_dir.parent / "runs.csv", columns, [[r[c] for c in columns] for r in rows])
    margin = params["analysis"]["equivalence_margin"]
    adv = advantages(rows, study, margin)
    tables.mkdir(parents=True, exist_ok=True)
    parts = [f"# Budget study: {params['profile']} profile", "",
             f"Teacher init vs pretrained init across step budgets (every run annealed to its own budget, no early "
             f"stop, best-on-dev weights; learning rate chosen on dev per init and budget). Verdicts over training "
             f"runs (Welch), Holm within each budget; no effect = equivalent within ±{margin:g} pp.", "",
             "## Findings (largest budget run)", ""] + [f"- {s}" for s in slice_findings(adv, study)] + [
             "", "## Advantage by budget", "", advantage_table(adv), "",
             "## Runs at the chosen rates (mean ± sd over runs)", "", study_table(rows, study), "",
             "## Seeds: the advantage detectable with 80 % power, by runs per init", "",
             f"All eval locales, Welch over runs at Holm's first step for a family of {CLAIM_FAMILY} (claim 2 in the "
             "grid: 4 slices x 2 KD settings), with each variant's run spread as measured here.", "",
             seeds_table(rows, study, CLAIM_FAMILY), "",
             f"## Learning-rate search (seed {study.search_seed}, KD {study.search_kd}; best dev %)", "",
             search_table(params, study, root), ""]
    text = "\n".join(parts)
    atomic.write_text(tables / "budget.md", text)
    if adv:
        save_figure(lambda: advantage_figure(adv, study), tables, "fig_budget")
    return text
