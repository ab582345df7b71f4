"""mkd.analysis.stats, mkd.analysis.contrasts and mkd.analysis.claims against scipy and hand computations on constructed inputs with
known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mkd.axes import initializations
from mkd.analysis.claims import comparison_family, slice_verdict, verdict
from mkd.analysis.contrasts import compare, contrast
from mkd.analysis.stats import bootstrap_ci, holm, min_wilcoxon_p, paired_t_seeds, rank_biserial, wilcoxon_paired
from mkd.core.errors import ConfigError, MkdError
from synthetic_cells import make_synthetic_cells

# ------------------------------------------------------------------------------------------ Holm


def test_holm_hand_computation():
    # sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> max-accumulated 0.06
    got = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_capped_and_keeps_nan():
    got = holm([0.5, 0.6, 0.001, np.nan])
    assert math.isnan(got[3])
    np.testing.assert_allclose(got[:3], [1.0, 1.0, 0.003])  # m = 3 non-NaN values
    p = np.random.default_rng(1).uniform(size=30)
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_holm_differs_from_bonferroni_and_bh():
    p = [0.01, 0.02, 0.03]
    np.testing.assert_allclose(holm(p), [0.03, 0.04, 0.04])
    assert not np.allclose(holm(p), sps.false_discovery_control(p))  # BH would give 0.03 for all


def test_holm_rejects_bad_pvalues():
    with pytest.raises(MkdError):
        holm([0.1, 1.5])


# ------------------------------------------------------------------------------------------ Wilcoxon


def test_wilcoxon_matches_scipy_and_rank_biserial_by_hand():
    a = np.array([0.71, 0.64, 0.80, 0.90, 0.50, 0.77])
    b = a - np.array([0.01, -0.02, 0.03, 0.04, -0.05, 0.06])
    res = wilcoxon_paired(a, b)
    ref = sps.wilcoxon(a, b)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.pvalue == pytest.approx(ref.pvalue)
    # |d| ranks 1..6; T+ = 1 + 3 + 4 + 6 = 14, T- = 2 + 5 = 7; r = (14 - 7) / 21
    assert res.rank_biserial == pytest.approx(1 / 3)
    assert res.n == 6


def test_rank_biserial_with_ties_and_zeros():
    d = [0.0, 1.0, 1.0, -2.0]  # zero dropped; |d| ranks: 1.5, 1.5, 3 -> T+ = 3, T- = 3
    assert rank_biserial(d) == pytest.approx(0.0)
    assert rank_biserial([1, 2, 3]) == 1.0
    assert rank_biserial([-1, -2]) == -1.0


def test_wilcoxon_all_zero_differences():
    res = wilcoxon_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (res.statistic, res.pvalue, res.rank_biserial) == (0.0, 1.0, 0.0)


def test_wilcoxon_rejects_unequal_lengths_and_nan():
    with pytest.raises(MkdError):
        wilcoxon_paired([1, 2], [1])
    with pytest.raises(MkdError):
        wilcoxon_paired([1, np.nan], [1, 2])


# ------------------------------------------------------------------------------------------ paired t


def test_paired_t_matches_scipy_and_dz_by_hand():
    a = [0.70, 0.72, 0.69, 0.75]
    b = [0.66, 0.70, 0.68, 0.70]
    res = paired_t_seeds(a, b)
    ref = sps.ttest_rel(a, b)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.pvalue == pytest.approx(ref.pvalue)
    d = np.array(a) - np.array(b)  # 0.04 0.02 0.01 0.05
    assert res.cohen_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.cohen_dz == pytest.approx(res.statistic / math.sqrt(4))  # t = d_z * sqrt(n)
    assert res.ci_lo < d.mean() < res.ci_hi


def test_paired_t_degenerate():
    assert paired_t_seeds([0.5], [0.4]) is None
    assert paired_t_seeds([], []) is None
    z = paired_t_seeds([0.5, 0.6], [0.5, 0.6])
    assert (z.statistic, z.pvalue, z.cohen_dz) == (0.0, 1.0, 0.0)
    c = paired_t_seeds([0.6, 0.7], [0.5, 0.6])  # constant shift, no seed noise: degenerate, never p = 0
    assert math.isnan(c.pvalue) and c.cohen_dz == math.inf


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_true_shift_and_excludes_zero():
    rng = np.random.default_rng(0)
    diffs = 0.05 + rng.normal(0, 0.01, size=40)
    lo, hi = bootstrap_ci(diffs, n_resamples=2000, seed=0)
    assert lo < 0.05 < hi
    assert lo > 0
    null = rng.normal(0, 0.01, size=40)
    lo0, hi0 = bootstrap_ci(null, n_resamples=2000, seed=0)
    assert lo0 < 0 < hi0


def test_bootstrap_ci_matches_scipy():
    x = np.array([0.1, 0.3, -0.2, 0.5, 0.4, 0.0, 0.2])
    lo, hi = bootstrap_ci(x, n_resamples=999, seed=3)
    ref = sps.bootstrap((x,), np.mean, n_resamples=999, rng=np.random.default_rng(3), vectorized=True).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    lo90, hi90 = bootstrap_ci(x, n_resamples=999, seed=3, confidence=0.9)
    assert lo < lo90 < hi90 < hi


def test_bootstrap_ci_degenerate():
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    with pytest.raises(MkdError):
        bootstrap_ci([])
    with pytest.raises(ConfigError):
        bootstrap_ci([0.1, 0.2], confidence=1.5)


# ------------------------------------------------------------------------------------------ compare


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return make_synthetic_cells(teacher_effect=0.10, kd_effect=0.02, n_locales=10)


def _hand_scores(df, init, kd, ls="cpu8", res="low"):
    sub = df[(df.split == "test") & (df.language_set == ls) & (df.resource == res) & (df.init == init) & (df.kd == kd)]
    return sub.pivot(index="locale", columns="seed", values="accuracy")


def test_compare_equals_hand_computation(grid):
    out = compare(grid, {"init": "teacher", "kd": "off"}, {"init": "random", "kd": "off"}, "cpu8", "low",
                  n_resamples=200)
    a, b = _hand_scores(grid, "teacher", "off"), _hand_scores(grid, "random", "off")
    per_locale = a.mean(axis=1) - b.mean(axis=1)
    assert out["delta"] == pytest.approx(per_locale.mean())
    assert out["mean_a"] == pytest.approx(a.mean(axis=1).mean())
    ref_w = sps.wilcoxon(a.mean(axis=1), b.mean(axis=1))
    assert out["p_wilcoxon"] == pytest.approx(ref_w.pvalue)
    ref_t = sps.ttest_rel(a.mean(axis=0), b.mean(axis=0))
    assert out["p_t"] == pytest.approx(ref_t.pvalue)
    assert (out["n_locales"], out["n_seeds"]) == (10, 3)
    assert out["ci_lo"] < out["delta"] < out["ci_hi"] and out["ci_lo"] > 0.05
    assert out["delta"] == pytest.approx(0.10, abs=0.02)


def test_compare_locale_subset(grid):
    out = compare(grid, {"init": "teacher", "kd": "on"}, {"init": "pretrained", "kd": "on"}, "cpu8", "high",
                  locales=["en-US", "af-ZA", "am-ET"], n_resamples=100)
    assert out["n_locales"] == 3 and out["locales"] == ["af-ZA", "am-ET", "en-US"]


def test_init_vs_kd_contrast_is_teacher_off_minus_pretrained_on(grid):
    t_off, p_off, p_on = (_hand_scores(grid, i, k) for i, k in [("teacher", "off"), ("pretrained", "off"),
                                                               ("pretrained", "on")])
    init_eff = t_off.mean(axis=1) - p_off.mean(axis=1)
    kd_eff = p_on.mean(axis=1) - p_off.mean(axis=1)
    out = contrast(grid, [(1, {"init": "teacher", "kd": "off"}), (-1, {"init": "pretrained", "kd": "off"})],
                   [(1, {"init": "pretrained", "kd": "on"}), (-1, {"init": "pretrained", "kd": "off"})],
                   "cpu8", "low", n_resamples=200)
    assert out["mean_a"] == pytest.approx(init_eff.mean())
    assert out["mean_b"] == pytest.approx(kd_eff.mean())
    assert out["delta"] == pytest.approx((init_eff - kd_eff).mean())
    assert out["p_wilcoxon"] == pytest.approx(sps.wilcoxon(init_eff, kd_eff).pvalue)
    assert out["mean_a"] == pytest.approx(0.10, abs=0.02) and out["mean_b"] == pytest.approx(0.02, abs=0.02)


def test_compare_missing_variant_raises(grid):
    with pytest.raises(MkdError, match="no rows"):
        compare(grid, {"init": "teacher", "kd": "off"}, {"init": "random", "kd": "off"}, "nope", "low")


# ------------------------------------------------------------------------------------------ family & verdicts


def test_verdict_rule():
    assert verdict(0.1, 0.05, 0.15, 0.01) == "reproduced"
    assert verdict(0.1, -0.01, 0.15, 0.01) == "inconclusive"  # CI includes 0
    assert verdict(0.1, 0.05, 0.15, 0.06) == "inconclusive"  # not significant after Holm
    assert verdict(-0.1, -0.15, -0.05, 0.01) == "contradicted"
    assert verdict(0.1, 0.05, 0.15, float("nan")) == "inconclusive"
    assert slice_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert slice_verdict(["reproduced", "inconclusive"]) == "inconclusive"
    assert slice_verdict(["contradicted", "inconclusive"]) == "contradicted"
    assert slice_verdict(["contradicted", "reproduced"]) == "inconclusive"


def test_family_holm_over_all_rows(grid):
    test = grid[grid.split == "test"]
    fam = comparison_family(test, n_resamples=100, primary_test="wilcoxon", holm_family="all")
    assert list(fam["claim"].value_counts().sort_index()) == [4, 4, 2, 6, 4]  # 2 slices; claim 5 low only
    np.testing.assert_allclose(fam["p_holm"], holm(fam["p_wilcoxon"].to_numpy()))
    assert (fam["family_size"] == len(fam)).all()
    # default family: each claim on its own, Holm within it
    per_claim = comparison_family(test, n_resamples=100, primary_test="wilcoxon")
    for claim, g in per_claim.groupby("claim"):
        np.testing.assert_allclose(g["p_holm"], holm(g["p_wilcoxon"].to_numpy()))
        assert (g["family_size"] == len(g)).all()
    assert (per_claim["p_holm"] <= fam["p_holm"] + 1e-12).all()  # a smaller family never corrects more
    with pytest.raises(ConfigError):
        comparison_family(test, holm_family="table")
    both = comparison_family(test, n_resamples=100, primary_test="both")  # the older rule: max of Wilcoxon and t
    np.testing.assert_allclose(both["p_primary"], np.maximum(both["p_wilcoxon"], both["p_t"].astype(float)))
    runs = comparison_family(test, n_resamples=100)  # default: Welch over training runs
    np.testing.assert_allclose(runs["p_primary"], runs["p_runs"].astype(float))
    with pytest.raises(ConfigError):
        comparison_family(test, primary_test="anova")


def test_family_skips_missing_variant(grid):
    test = grid[(grid.split == "test") & ~((grid.init == "random") & (grid.kd == "on"))]
    fam = comparison_family(test, n_resamples=100)
    skipped = fam[fam.status != "ok"]
    assert len(skipped) == 2 + 2 + 1  # claim 1 kd=on x 2 slices, claim 4 random x 2, claim 5 (low only) x 1
    assert (skipped["verdict"] == "skipped").all()
    ok = fam[fam.status == "ok"]
    assert (ok.groupby("claim")["family_size"].first() == ok.groupby("claim").size()).all()


def test_family_claim5_subsets():
    df = make_synthetic_cells(language_sets=("cpu8", "en"), n_locales=6, teacher_effect=0.1)
    test = df[(df.split == "test") & df.init.isin(initializations())]
    fam = comparison_family(test, n_resamples=50, train_locales={"cpu8": ["en-US", "af-ZA"]})
    c5 = fam[fam.claim == 5]
    assert set(c5[c5.language_set == "en"]["locale_subset"]) == {"non-English = unseen in training"}
    assert set(c5[c5.language_set == "cpu8"]["locale_subset"]) == {"non-English", "unseen in training"}
    assert set(c5[c5.locale_subset == "unseen in training"]["n_locales"]) == {4}
    assert set(c5[c5.locale_subset == "non-English"]["n_locales"]) == {5}


def test_min_wilcoxon_p_is_the_exact_floor():
    x = np.arange(1, 9, dtype=float)
    assert sps.wilcoxon(x).pvalue == pytest.approx(min_wilcoxon_p(8))
