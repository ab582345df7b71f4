"""The analysis of one profile: from `cells.csv` (and its companions `references.csv`, `training.csv`) to the
LaTeX tables, figures, claims.md, stats.json and summary.csv under paper_tables/<profile>.

This module only runs the steps in order and writes the files; the steps live in `mkd.analysis.cell_scores` (reading),
`mkd.analysis.gates` (sanity gates), `mkd.analysis.claims` (comparisons, Holm, verdicts), `mkd.analysis.tables`, `mkd.analysis.figures` and
`mkd.analysis.claims_report` (claims.md), `mkd.analysis.curves` (the learning curves). Only results are read: no
training code is imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mkd.core.atomic import atomic_path, write_json, write_text
from mkd.analysis.claims import (
    claim_verdicts, claim_verdicts_by_init, comparison_family, family_sizes, scale_warnings,
)
from mkd.analysis.specs import CLAIMS, DEFAULT_TRAIN_LOCALES, VERDICTS
from mkd.analysis.claims_report import claims_markdown, variant_lines
from mkd.analysis.curves import BUDGET_FRACTIONS, advantage_lines, budget_advantage, curves_figure, load_curves
from mkd.analysis.figures import make_figures, save_figure
from mkd.analysis.gates import check_gates, load_references, load_training
from mkd.analysis.cell_scores import load_cells, reference_means, summary_frame
from mkd.analysis.tables import main_table, per_locale_tables, significance_table
from mkd.analysis.languages import language_table
from mkd.analysis.transfer import TRANSFER_CLAIMS, family_retention, retention_table, transfer_family
from mkd.analysis.transfer_report import family_table, retention_heatmap, retention_scatter, transfer_lines

OUTPUT_FILES = (
    "main_table.tex", "per_locale_table.tex", "significance_table.tex",
    "fig_heatmap.pdf", "fig_heatmap.png", "fig_variants.pdf", "fig_variants.png",
    "fig_resource.pdf", "fig_resource.png", "fig_curves.pdf", "fig_curves.png", "claims.md", "stats.json", "summary.csv",
    "transfer_table.tex", "fig_retention.pdf", "fig_retention.png", "fig_transfer.pdf", "fig_transfer.png",
)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else (None if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def run_analysis(
    cells_csv: Path,
    out_dir: Path,
    profile: str,
    metric: str = "accuracy",
    split: str = "test",
    scale_note: str = "",
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    primary_test: str = "runs",
    holm_family: str = "claim",
    equivalence_margin: float = 0.02,
    train_locales: Mapping[str, Sequence[str]] | None = None,
    figures: bool = True,
    references_csv: Path | None = None,
    training_csv: Path | None = None,
    min_chance_multiple: float = 5.0,
    min_distinct_fraction: float = 0.1,
    resource_sizes: Mapping[str, float] | None = None,
    curves_csv: Path | None = None,
    budget_steps: int | None = None,
) -> dict:
    """Analyse one profile's `cells.csv` and write tables, figures, claims.md, stats.json and summary.csv.

    `train_locales` maps a language set to the locales it was trained on (default: {"en": ["en-US"]}); claim 5
    then also tests the locales a language set never saw. `curves_csv` (default: curves.csv beside cells.csv)
    gives the learning-curve figure and the teacher-init advantage at fractions of `budget_steps` (the students'
    max_steps; default: the last step in the curves). Returns {"out_dir", "files", "verdicts", "warnings",
    "n_comparisons"}.
    """
    out_dir = Path(out_dir)
    df = load_cells(Path(cells_csv), profile=profile, metric=metric, split=split)
    cells_dir = Path(cells_csv).parent
    refs = load_references(Path(references_csv or cells_dir / "references.csv"), split, metric)
    training = load_training(Path(training_csv or cells_dir / "training.csv"))
    gates = check_gates(df, refs, training,
                        {**DEFAULT_TRAIN_LOCALES, **(train_locales or {})}, metric=metric,
                        min_chance_multiple=min_chance_multiple, min_distinct_fraction=min_distinct_fraction,
                        resource_sizes=resource_sizes)
    fam = comparison_family(df, metric=metric, split=split, n_resamples=n_resamples, seed=seed, alpha=alpha,
                              primary_test=primary_test, train_locales=train_locales,
                              holm_family=holm_family, blockers=gates.blockers, equivalence_margin=equivalence_margin)
    verdicts = claim_verdicts(fam)
    by_init = claim_verdicts_by_init(fam)
    curves = load_curves(Path(curves_csv or cells_dir / "curves.csv"))
    budget_steps = int(budget_steps or curves["step"].max())
    advantage = budget_advantage(curves, budget_steps)
    # Which languages keep the teacher's ability (claims 5b-5d): over the locales each set never trained on.
    trained = {**DEFAULT_TRAIN_LOCALES, **(train_locales or {})}
    languages = language_table(sorted(df.locale.unique()), {ls: trained[ls] for ls in df.language_set.unique() if ls in trained})
    transfer = transfer_family(df, refs, languages, metric, n_resamples=n_resamples, seed=seed, alpha=alpha,
                               blockers=gates.blockers)
    retention = retention_table(df, refs, metric)
    by_family = family_retention(retention, languages, trained)
    warns = scale_warnings(fam, alpha)
    summary = summary_frame(df, metric)
    out_dir.mkdir(parents=True, exist_ok=True)

    files = []
    write_text(out_dir / "main_table.tex", main_table(summary, metric, refs))
    per_loc, _ = per_locale_tables(df, metric, refs)
    write_text(out_dir / "per_locale_table.tex", per_loc)
    write_text(out_dir / "significance_table.tex", significance_table(fam))
    write_text(out_dir / "transfer_table.tex", family_table(by_family))
    files += ["main_table.tex", "per_locale_table.tex", "significance_table.tex", "transfer_table.tex"]
    if figures:
        files += make_figures(df, out_dir, metric, seed=seed, refs=refs)
        files += save_figure(lambda: curves_figure(curves, budget_steps), out_dir, "fig_curves")
        files += save_figure(lambda: retention_heatmap(retention, languages, trained), out_dir, "fig_retention")
        files += save_figure(lambda: retention_scatter(retention, languages, trained), out_dir, "fig_transfer")
    write_text(out_dir / "claims.md",
               claims_markdown(fam, verdicts, profile, scale_note, metric, split, alpha, n_resamples, warns,
                               gates=gates, refs=refs, by_init=by_init,
                               variant_table=variant_lines(df, training, refs, trained, metric),
                               curve_lines=advantage_lines(advantage, budget_steps) + transfer_lines(transfer, languages)))
    files.append("claims.md")
    records = fam.drop(columns=["locales"], errors="ignore").to_dict(orient="records")
    write_json(out_dir / "stats.json", _jsonable({
        "profile": profile, "scale_note": scale_note, "metric": metric, "split": split, "alpha": alpha,
        "n_resamples": n_resamples, "bootstrap_seed": seed, "primary_test": primary_test,
        "equivalence_margin": equivalence_margin, "verdict_values": list(VERDICTS),
        "holm_family": holm_family,
        "family_size": family_sizes(fam), "claims": {str(k): v for k, v in CLAIMS.items()},
        "verdicts": verdicts, "verdicts_by_init": by_init, "warnings": warns, "comparisons": records,
        "budget_steps": budget_steps, "budget_fractions": list(BUDGET_FRACTIONS),
        "teacher_init_advantage_over_budget": advantage.to_dict(orient="records"),
        "gates": [c.__dict__ for c in gates.checks],
        "transfer_claims": {k: v["text"] for k, v in TRANSFER_CLAIMS.items()},
        "transfer": transfer.to_dict(orient="records"),
        "languages": languages.to_dict(orient="records"),
        "references": reference_means(refs, metric).to_dict(orient="records"),
        "variants": summary.to_dict(orient="records"),
    }))
    files.append("stats.json")
    with atomic_path(out_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    files.append("summary.csv")
    return {"out_dir": str(out_dir), "files": files, "verdicts": verdicts, "warnings": warns,
            "n_comparisons": int(len(fam))}
