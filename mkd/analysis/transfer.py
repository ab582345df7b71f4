"""Which languages keep the teacher's ability? Per-locale retention and the transfer claims 5b-5d.

Analysis only: reads the tidy cells frame (mkd.analysis.cell_scores' contract), the teacher's per-locale rows of
references.csv and the language table (mkd.analysis.languages). Every claim is stated here, before anything is
computed, with the direction it claims; the verdict rule is claim 1-5's (mkd.analysis.claims.verdict), Holm
corrects within each claim over its slices and KD settings, and a comparison resting on a failed sanity gate is
"not testable at this scale".

The locales a claim reads are those its students never trained on (zero-shot), so a training locale's own data
does not enter the question "what transfers".
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from mkd.analysis.claims import verdict
from mkd.analysis.stats import holm
from mkd.axes import KD_SETTINGS

# The claims, stated before they are computed; `covariate` is the language-table column they read, `sign` the
# claimed direction of the statistic (+1: the statistic is claimed > 0 after multiplying by sign).
TRANSFER_CLAIMS = {
    "5b": {"text": "The teacher-init advantage over pretrained init is larger on locales typologically farther from "
                   "the training languages (Spearman correlation of the per-locale advantage with the URIEL syntactic "
                   "distance to the nearest training language > 0).",
           "covariate": "syntactic", "sign": 1.0},
    "5c": {"text": "The teacher-init advantage over pretrained init is larger for languages with less pretraining data "
                   "(Spearman correlation of the per-locale advantage with log CC-100 GiB < 0).",
           "covariate": "cc100_gib", "sign": -1.0},
    "5d": {"text": "Non-Latin-script locales keep less of the teacher's accuracy than Latin-script locales (mean "
                   "retention, student / teacher accuracy, Latin minus non-Latin > 0), for each init.",
           "covariate": "latin_script", "sign": 1.0},
}
ADVANTAGE = ("teacher", "pretrained")  # 5b, 5c: teacher init minus pretrained init, same KD setting
# Fewer zero-shot locales than this and a slice has no transfer comparison: a rank correlation over 5 points
# cannot reach p < 0.05 after Holm, and a script split leaves one or two locales a side.
MIN_LOCALES = 8


def _matrix(cells: pd.DataFrame, ls: str, res: str, init: str, kd: str, metric: str) -> pd.DataFrame:
    """locale x seed matrix of one variant's scores within a slice."""
    sel = cells[(cells.language_set == ls) & (cells.resource == res) & (cells.init == init) & (cells.kd == kd)]
    return sel.pivot(index="locale", columns="seed", values=metric)


def teacher_by_locale(references: pd.DataFrame, metric: str) -> pd.Series:
    """The teacher's score per locale (the one teacher every slice's students learn from)."""
    t = references[references.reference == "teacher"]
    return t.groupby("locale")[metric].mean()


def retention_table(cells: pd.DataFrame, references: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per slice x variant x locale: the student's mean over seeds, the teacher's and the frozen probe's score on
    that locale, retention (student / teacher) and loss (teacher - student)."""
    teacher = teacher_by_locale(references, metric)
    probe = references[references.reference == "probe"].groupby(["language_set", "resource", "locale"])[metric].mean()
    g = cells.groupby(["language_set", "resource", "init", "kd", "locale"], sort=False)[metric].mean().rename("student")
    out = g.reset_index()
    out["teacher"] = out.locale.map(teacher)
    out["probe"] = [probe.get((ls, r, l), math.nan) for ls, r, l in zip(out.language_set, out.resource, out.locale)]
    out["retention"] = out.student / out.teacher
    out["loss"] = out.teacher - out.student
    return out


def _spearman(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of x with the same row of c (rows: resamples; ties get mean ranks)."""
    rx, rc = rankdata(x, axis=-1), rankdata(c, axis=-1)
    rx, rc = rx - rx.mean(-1, keepdims=True), rc - rc.mean(-1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(-1) * (rc * rc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * rc).sum(-1) / denom, np.nan)


def _latin_gap(x: np.ndarray, latin: np.ndarray) -> np.ndarray:
    """Mean of x on Latin-script locales minus its mean on the others, per row (nan where a group is empty)."""
    latin = latin.astype(bool)
    n_lat, n_other = latin.sum(-1), (~latin).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_lat > 0) & (n_other > 0),
                        (x * latin).sum(-1) / n_lat - (x * ~latin).sum(-1) / n_other, np.nan)


def _interval(per_seed: np.ndarray, covariate: np.ndarray, statistic: Callable, n_resamples: int,
              confidence: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """(statistic, CI low, CI high): `per_seed` is locales x seeds; the statistic reads the seed mean per locale.
    The interval resamples locales and seeds together (both are samples: of languages, of training runs)."""
    n_loc, n_seed = per_seed.shape
    stat = float(statistic(per_seed.mean(axis=1)[None], covariate[None])[0])
    li = rng.integers(0, n_loc, (n_resamples, n_loc))
    si = rng.integers(0, n_seed, (n_resamples, n_seed))
    boots = statistic(per_seed[li[:, :, None], si[:, None, :]].mean(axis=2), covariate[li])
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return stat, math.nan, math.nan
    a = (1 - confidence) / 2
    return stat, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def _permutation_p(values: np.ndarray, covariate: np.ndarray, statistic: Callable, n_resamples: int,
                   rng: np.random.Generator) -> float:
    """Two-sided permutation p-value of statistic(values, covariate), the covariate shuffled over locales."""
    observed = float(statistic(values[None], covariate[None])[0])
    if not math.isfinite(observed):
        return math.nan
    shuffled = rng.permuted(np.tile(covariate, (n_resamples, 1)), axis=1)
    null = statistic(np.tile(values, (n_resamples, 1)), shuffled)
    return float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + n_resamples))


def _covariate(languages: pd.DataFrame, ls: str, claim: str) -> pd.Series:
    kind = TRANSFER_CLAIMS[claim]["covariate"]
    col = {"cc100_gib": "cc100_gib", "latin_script": "latin_script"}.get(kind, f"{ls}_{kind}")
    values = languages.set_index("locale")[col]
    return np.log(values.astype(float)) if kind == "cc100_gib" else values


def transfer_family(
    cells: pd.DataFrame,
    references: pd.DataFrame,
    languages: pd.DataFrame,
    metric: str = "accuracy",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
    blockers=None,
) -> pd.DataFrame:
    """Claims 5b-5d on every slice (and KD setting; 5d also per init) over the locales the slice's students never
    trained on. One row per comparison: claim, language_set, resource, kd, init, statistic, delta (the statistic
    in the claimed direction), ci_lo, ci_hi (of delta), p, p_holm, n_locales, n_seeds, not_testable, verdict."""
    rng = np.random.default_rng(seed)
    teacher = teacher_by_locale(references, metric)
    rows = []
    for (ls, res), sl in cells.groupby(["language_set", "resource"], sort=False):
        if f"{ls}_trained" not in languages:
            continue  # which locales this set trained on is unknown: no zero-shot locales to read
        trained = set(languages.locale[languages[f"{ls}_trained"]])
        for claim, spec in TRANSFER_CLAIMS.items():
            cov = _covariate(languages, ls, claim)
            inits = ADVANTAGE[:1] if claim != "5d" else tuple(sorted(sl.init.unique()))
            for init in inits:
                for kd in KD_SETTINGS:
                    if claim == "5d":
                        m = _matrix(sl, ls, res, init, kd, metric)
                        variants = [{"init": init, "kd": kd}]
                        per_seed = m.div(teacher.reindex(m.index), axis=0)
                        statistic, label = _latin_gap, f"retention, Latin - non-Latin script ({init} init, KD {kd})"
                    else:
                        a, b = (_matrix(sl, ls, res, i, kd, metric) for i in ADVANTAGE)
                        variants = [{"init": i, "kd": kd} for i in ADVANTAGE]
                        per_seed = (a - b).dropna(how="all")
                        statistic, label = _spearman, f"Spearman(teacher - pretrained init, {spec['covariate']}) (KD {kd})"
                    per_seed = per_seed.dropna()  # a locale scored in every seed, or not at all
                    locales = [l for l in per_seed.index if l not in trained and l in cov.index and pd.notna(cov[l])]
                    if len(locales) < MIN_LOCALES:
                        continue
                    x = per_seed.loc[locales].to_numpy(dtype=float)
                    c = cov.loc[locales].to_numpy()
                    c = c.astype(bool) if claim == "5d" else c.astype(float)
                    stat, lo, hi = _interval(x, c, statistic, n_resamples, confidence, rng)
                    p = _permutation_p(x.mean(axis=1), c, statistic, n_resamples, rng)
                    s = spec["sign"]
                    lo_d, hi_d = sorted((s * lo, s * hi))
                    reasons = list(blockers(ls, res, variants)) if blockers else []
                    rows.append({"claim": claim, "language_set": ls, "resource": res, "kd": kd,
                                 "init": init if claim == "5d" else "", "comparison": label, "statistic": stat,
                                 "delta": s * stat, "ci_lo": lo_d, "ci_hi": hi_d, "p": p, "n_locales": len(locales),
                                 "n_seeds": x.shape[1], "not_testable": "; ".join(dict.fromkeys(reasons))})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_primary"] = out.p.where(out.not_testable == "")
    out["p_holm"] = np.nan
    for _, idx in out.groupby("claim").groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_primary"].to_numpy())
    out["verdict"] = ["not testable at this scale" if r.not_testable else verdict(r.delta, r.ci_lo, r.ci_hi, r.p_holm, alpha)
                      for r in out.itertuples()]
    return out


def zero_shot(rows: pd.DataFrame, trained: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The rows of locales their language set never trained on (a set whose training locales are unknown: none)."""
    return rows[[ls in trained and l not in set(trained[ls]) for ls, l in zip(rows.language_set, rows.locale)]]


def family_retention(retention: pd.DataFrame, languages: pd.DataFrame, trained: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Mean retention per slice x variant x language family over the zero-shot locales (the per-family table)."""
    fam = languages.set_index("locale")["family"]
    r = zero_shot(retention, trained)
    r = r.assign(family=r.locale.map(fam))
    return (r.groupby(["language_set", "resource", "init", "kd", "family"], sort=False)
             .agg(retention=("retention", "mean"), locales=("locale", "nunique")).reset_index())
