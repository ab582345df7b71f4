"""Verdicts that cannot mislead: adversarial grids, null grids, interval coverage, exact ties, degenerate models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.verdict_calibration import SCENARIOS, coverage, type_one_error
from mkd.axes import KD_SETTINGS, initializations
from mkd.analysis import stats
from mkd.analysis.claims import comparison_family, slice_verdict
from mkd.analysis.contrasts import compare
from mkd.analysis.stats import exact_diff, min_wilcoxon_p, wilcoxon_paired
from mkd.core.errors import MkdError

REPO = Path(__file__).resolve().parents[1]
LOCALES = [f"l{i:02d}" for i in range(52)]
VARIANTS = [(i, k) for i in initializations() for k in KD_SETTINGS]


def grid(scores: dict, seeds=(0, 1, 2), ls="cpu8", res="high") -> pd.DataFrame:
    """cells frame from {(init, kd): locale x seed array}."""
    rows = []
    for (init, kd), mat in scores.items():
        for li, loc in enumerate(LOCALES[: mat.shape[0]]):
            for si, seed in enumerate(seeds[: mat.shape[1]]):
                rows.append(["cpu", f"{ls}-{res}-{init}-kd{kd}-s{seed}", ls, res, init, kd, seed, "test", loc,
                             float(mat[li, si]), float(mat[li, si])])
    return pd.DataFrame(rows, columns=["profile", "cell", "language_set", "resource", "init", "kd", "seed", "split",
                                       "locale", "accuracy", "macro_f1"])


def _family(df, **kw):
    kw.setdefault("n_resamples", 200)
    fam = comparison_family(df, **kw)
    verdicts = {}
    for claim, g in fam.groupby("claim"):
        verdicts[int(claim)] = slice_verdict(g["verdict"])
    return fam, verdicts


def _few_locales_carry_the_mean(sign: float) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    base = 0.5 + rng.normal(0, 0.05, (52, 1)) + rng.normal(0, 0.002, (52, 3))
    effect = np.where(np.arange(52) < 8, 0.20, -0.01)[:, None] * sign
    scores = {}
    for init, kd in VARIANTS:
        noise = rng.normal(0, 0.002, (52, 3))
        scores[(init, kd)] = base + noise + (effect if init == "teacher" else 0.0)
    return grid(scores)


def test_a_mean_carried_by_a_few_locales_is_not_reproduced_when_most_locales_lose():
    fam, v = _family(_few_locales_carry_the_mean(+1))
    row = fam[(fam.claim == 1) & (fam.comparison.str.contains("KD off"))].iloc[0]
    assert row.delta > 0.02 and row.t_stat > 0 and row.rank_biserial < 0 and row.p_wilcoxon < 0.05  # the setup
    for claim in (1, 2, 3):
        assert v[claim] == "inconclusive (tests disagree)", (claim, fam[fam.claim == claim][["delta", "p_holm", "verdict"]])


def test_the_mirror_image_is_not_contradicted():
    fam, v = _family(_few_locales_carry_the_mean(-1))
    for claim in (1, 2, 3):
        assert v[claim] == "inconclusive (tests disagree)", claim


def test_unequal_run_counts_test_every_run_and_describe_the_shared_seeds():
    """grid.extra_seeds gives teacher and pretrained init 6 runs, random init 3: Δ and the run-level test read all
    runs of each variant, the per-seed descriptive statistics the 3 seeds every variant has."""
    rng = np.random.default_rng(2)
    scores = {v: 0.5 + rng.normal(0, 0.01, (52, 6)) + (0.05 if v[0] == "teacher" else 0) for v in VARIANTS}
    df = grid(scores, seeds=tuple(range(6)))
    df = df[~((df.init == "random") & (df.seed >= 3))]
    teacher_pre = compare(df, {"init": "teacher", "kd": "off"}, {"init": "pretrained", "kd": "off"}, "cpu8", "high",
                          n_resamples=200)
    runs = {i: [scores[(i, "off")][:, s].mean() for s in range(6)] for i in ("teacher", "pretrained")}
    assert teacher_pre["n_runs"] == 6 and teacher_pre["n_seeds"] == 6
    assert teacher_pre["delta"] == pytest.approx(np.mean(runs["teacher"]) - np.mean(runs["pretrained"]), abs=1e-12)
    teacher_random = compare(df, {"init": "teacher", "kd": "off"}, {"init": "random", "kd": "off"}, "cpu8", "high",
                             n_resamples=200)
    assert teacher_random["n_runs"] == 3 and teacher_random["seeds"] == [0, 1, 2]
    assert teacher_random["runs_per_variant"] == "6/3" and teacher_pre["runs_per_variant"] == "6/6"
    random_runs = [scores[("random", "off")][:, s].mean() for s in range(3)]
    assert teacher_random["delta"] == pytest.approx(np.mean(runs["teacher"]) - np.mean(random_runs), abs=1e-12)
    assert teacher_random["mean_a"] == pytest.approx(np.mean(runs["teacher"]), abs=1e-12)
    ref = stats.run_contrast([(1.0, runs["teacher"]), (-1.0, random_runs)])
    assert teacher_random["p_runs"] == pytest.approx(ref.pvalue) and teacher_random["df_runs"] == pytest.approx(ref.df)
    fam = comparison_family(df, n_resamples=200)   # the whole family runs on unequal run counts
    assert set(fam.n_runs.dropna()) == {3, 6}


def test_variants_sharing_no_seed_are_an_error_naming_their_seeds():
    rng = np.random.default_rng(2)
    scores = {v: 0.5 + rng.normal(0, 0.01, (52, 4)) for v in VARIANTS}
    df = grid(scores, seeds=(0, 1, 2, 3))
    df = df[~((df.init == "random") & (df.seed < 2)) & ~((df.init == "teacher") & (df.seed >= 2))]
    with pytest.raises(MkdError, match=r"share no seed: .*teacher init, KD off has 0, 1.*random init, KD off has 2, 3"):
        compare(df, {"init": "teacher", "kd": "off"}, {"init": "random", "kd": "off"}, "cpu8", "high", n_resamples=200)


def test_collapsed_models_with_no_seed_variance_are_not_evidence():
    rng = np.random.default_rng(3)
    scores = {v: 0.5 + rng.normal(0, 0.02, (52, 3)) for v in VARIANTS}
    # two collapsed models: every seed predicts one constant class; per-locale accuracy is that class's share
    scores[("random", "off")] = np.full((52, 3), 0.02)
    scores[("random", "on")] = np.full((52, 3), 0.0333)
    fam, _ = _family(grid(scores))
    kd_random = fam[(fam.claim == 4) & fam.comparison.str.contains("random init, KD on vs")].iloc[0]
    assert math.isnan(kd_random.p_t) and "no seed-to-seed variation" in kd_random.not_testable
    assert kd_random.verdict == "not testable at this scale"


def test_exact_ties_stay_ties_on_the_landed_cpu_results():
    """Seed-averaged differences computed on floats turn ties into round-off; on integer correct counts they
    cannot. The rounded differences must match the integer ones exactly, and so must the Wilcoxon p."""
    df = pd.read_csv(REPO / "results" / "cpu" / "cells.csv")
    df = df[df.split == "test"]
    n_rows = 50  # data.eval_per_locale.test of the cpu profile
    counts = df.accuracy * n_rows
    assert np.allclose(counts, counts.round(), atol=1e-6)
    df = df.assign(count=counts.round().astype(int))
    checked = 0
    for (ls, res), sl in df.groupby(["language_set", "resource"]):
        for a, b in (("teacher", "random"), ("teacher", "pretrained")):
            for kd in KD_SETTINGS:
                ma = sl[(sl.init == a) & (sl.kd == kd)].pivot(index="locale", columns="seed", values="accuracy")
                mb = sl[(sl.init == b) & (sl.kd == kd)].pivot(index="locale", columns="seed", values="accuracy")
                ca = sl[(sl.init == a) & (sl.kd == kd)].pivot(index="locale", columns="seed", values="count")
                cb = sl[(sl.init == b) & (sl.kd == kd)].pivot(index="locale", columns="seed", values="count")
                shared = sorted(set(ma.columns) & set(mb.columns))  # the seeds both have, as the analysis reads them
                ma, mb, ca, cb = (m[shared] for m in (ma, mb, ca, cb))
                exact = (ca.sum(axis=1) - cb.sum(axis=1)).to_numpy()  # integers: ties are ties
                ours = exact_diff(ma.mean(axis=1).to_numpy(), mb.mean(axis=1).to_numpy())
                assert np.array_equal(ours == 0, exact == 0)
                assert np.array_equal(sps.rankdata(np.abs(ours[ours != 0])), sps.rankdata(np.abs(exact[exact != 0])))
                if (exact != 0).any():
                    assert wilcoxon_paired(ours, np.zeros_like(ours)).pvalue == pytest.approx(sps.wilcoxon(exact).pvalue, rel=1e-9)
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_crossed_interval_covers_at_the_nominal_rate(scenario):
    cov = coverage(scenario, n_sim=1000)
    # nominal 0.95; Monte Carlo standard error ~0.007 at 1,000 simulations; the floor makes it mildly conservative
    assert 0.93 <= cov["crossed"] <= 0.99, (scenario, cov)
    if scenario == "seed-dominated":
        assert cov["locale_only"] < 0.6, cov  # the interval it replaces misses most of the time


@pytest.mark.parametrize("scenario", ["seed-dominated", "locale-dominated"])
def test_type_one_error_of_the_verdict_rule_under_null_grids(scenario):
    """Null grids shaped like the cpu grid (52 locales x 3 seeds): how often does a comparison get a verdict?"""
    n_sim = 1000
    rate = type_one_error(scenario, n_sim=n_sim)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / n_sim), (scenario, rate)  # nominal 5 %, within 2 MC SE


def test_smallest_wilcoxon_p_follows_scipy_past_fifty_locales():
    assert min_wilcoxon_p(8) == pytest.approx(2 / 2**8)
    assert min_wilcoxon_p(50) == pytest.approx(2 / 2**50)
    assert min_wilcoxon_p(52) == pytest.approx(sps.wilcoxon(np.arange(1.0, 53)).pvalue)
    assert min_wilcoxon_p(52) > 2 / 2**52
