"""The transfer analysis (claims 5b-5d) on synthetic grids with a known per-locale effect, and the language
metadata it reads from langcodes, URIEL (lang2vec's data) and the CC-100 table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mkd.analysis.languages import cc100_gib, distance, family, iso639_3, language_table, script
from mkd.analysis.transfer import retention_table, transfer_family
from mkd.data.schema import LANGUAGE_SETS

ALL = LANGUAGE_SETS["all"]
TRAINED = {"en": ("en-US",)}


@pytest.fixture(scope="module")
def languages() -> pd.DataFrame:
    return language_table(ALL, TRAINED).set_index("locale", drop=False)


def test_language_metadata_from_its_sources():
    assert [script(l) for l in ("en-US", "ja-JP", "zh-CN", "zh-TW", "ru-RU", "am-ET")] == \
        ["Latn", "Jpan", "Hans", "Hant", "Cyrl", "Ethi"]
    assert [iso639_3(l) for l in ("de-DE", "tl-PH", "nb-NO")] == ["deu", "fil", "nob"]
    assert [family(c) for c in ("deu", "fin", "jpn", "swa", "nob")] == \
        ["Indo-European", "Uralic", "Japonic", "Atlantic-Congo", "Indo-European"]  # nob: through nor (empty in URIEL)
    assert distance("syntactic", "eng", "eng") == 0.0
    for kind in ("genetic", "syntactic"):
        assert distance(kind, "eng", "deu") < distance(kind, "eng", "jpn")
    # the CC-100 table's two Chinese rows, Bokmal as its Norwegian, and a language it lacks
    assert (cc100_gib("zh-CN"), cc100_gib("zh-TW"), cc100_gib("nb-NO"), cc100_gib("en-US")) == (46.9, 16.6, 49.0, 300.8)
    assert np.isnan(cc100_gib("haw-US"))


def test_every_massive_locale_has_its_metadata(languages):
    assert len(languages) == 52 and languages.cc100_gib.notna().all()
    assert languages.family.ne("unknown").all() and languages.script.str.len().eq(4).all()
    assert languages.loc["en-US", "en_trained"] and languages.en_trained.sum() == 1
    assert languages.loc["en-US", "en_syntactic"] == 0.0 and (languages.drop("en-US").en_syntactic > 0).all()


def test_missing_uriel_data_names_the_fix(monkeypatch):
    import importlib.metadata

    from mkd.analysis import languages as mod
    from mkd.core.errors import DataError

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    mod._uriel.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(DataError, match="lang2vec.*scripts/setup.sh"):
        mod.distance("syntactic", "eng", "deu")
    monkeypatch.undo()
    mod._uriel.cache_clear()


def test_uriel_data_is_found_when_the_wheel_s_bin_script_shadows_the_package(tmp_path, monkeypatch):
    """The lang2vec wheel puts a script lang2vec.py into bin/, first on sys.path of every console script (`mkd`):
    measured, `mkd analyze` then found that module instead of the package and its data."""
    import importlib.util
    import sys

    from mkd.analysis import languages as mod

    (tmp_path / "lang2vec.py").write_text("raise SystemExit('the bin script, not the package')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.util.find_spec("lang2vec").origin == str(tmp_path / "lang2vec.py")  # the shadowing is real
    mod._uriel.cache_clear()
    assert mod.distance("syntactic", "eng", "eng") == 0.0 and "lang2vec" not in sys.modules
    mod._uriel.cache_clear()


def _grid(languages, advantage_of, retention_of=None, seeds=(0, 1, 2), noise=0.01, rng_seed=0):
    """An English-trained low-resource slice on all 52 locales: pretrained init scores 0.4 + noise per locale;
    teacher init = pretrained + advantage_of(locale row); random init = retention_of(row) x the teacher (0.8)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for loc in ALL:
        lang = languages.loc[loc]
        base = 0.4 + rng.normal(0, 0.03)
        for s in seeds:
            run = {"pretrained": base, "teacher": base + advantage_of(lang),
                   "random": 0.8 * (retention_of(lang) if retention_of else 0.2)}
            for init, v in run.items():
                for kd in ("off", "on"):
                    rows.append({"language_set": "en", "resource": "low", "init": init, "kd": kd, "seed": s,
                                 "locale": loc, "accuracy": float(np.clip(v + rng.normal(0, noise), 0, 1))})
    refs = pd.DataFrame([{"reference": "teacher", "language_set": "en", "resource": "low", "locale": l, "accuracy": 0.8}
                         for l in ALL] + [{"reference": "probe", "language_set": "en", "resource": "low", "locale": l,
                                            "accuracy": 0.3} for l in ALL])
    return pd.DataFrame(rows), refs


def _verdicts(fam, claim, init=""):
    return set(fam[(fam.claim == claim) & (fam.init == init)].verdict)


@pytest.mark.parametrize("effect, expected", [
    (lambda l: 0.5 * l.en_syntactic, "reproduced"),     # farther from English: more advantage
    (lambda l: 0.3 - 0.5 * l.en_syntactic, "contradicted"),
    (lambda l: 0.1, "inconclusive"),                   # the same advantage everywhere: no correlation to find
])
def test_claim_5b_advantage_and_typological_distance(languages, effect, expected):
    cells, refs = _grid(languages, effect)
    fam = transfer_family(cells, refs, languages, n_resamples=500)
    assert _verdicts(fam, "5b") == {expected}
    assert (fam[fam.claim == "5b"].n_locales == 51).all()  # every locale but the training one


def test_claim_5c_advantage_and_pretraining_data(languages):
    cells, refs = _grid(languages, lambda l: 0.3 - 0.04 * np.log(l.cc100_gib))  # less data: more advantage
    fam = transfer_family(cells, refs, languages, n_resamples=500)
    assert _verdicts(fam, "5c") == {"reproduced"}
    r = fam[fam.claim == "5c"].iloc[0]
    assert r.statistic < 0 < r.delta and r.ci_lo > 0  # claimed direction: a negative correlation


@pytest.mark.parametrize("retention, expected", [
    (lambda l: 0.6 if l.latin_script else 0.4, "reproduced"),
    (lambda l: 0.5, "inconclusive"),
])
def test_claim_5d_script_and_retention(languages, retention, expected):
    cells, refs = _grid(languages, lambda l: 0.1, retention_of=retention)
    fam = transfer_family(cells, refs, languages, n_resamples=500)
    assert _verdicts(fam, "5d", "random") == {expected}
    ret = retention_table(cells, refs)
    r = ret[(ret.init == "random") & (ret.kd == "off")].set_index("locale")
    assert r.loc["de-DE", "retention"] == pytest.approx(retention(languages.loc["de-DE"]), abs=0.05)


def test_a_failed_gate_makes_a_transfer_comparison_not_testable(languages):
    cells, refs = _grid(languages, lambda l: 0.5 * l.en_syntactic)
    blocked = lambda ls, res, variants: ["random init below its gate"] if any(v["init"] == "random" for v in variants) else []
    fam = transfer_family(cells, refs, languages, n_resamples=200, blockers=blocked)
    assert _verdicts(fam, "5d", "random") == {"not testable at this scale"}
    assert _verdicts(fam, "5b") == {"reproduced"}
    assert fam[fam.verdict == "not testable at this scale"].p_holm.isna().all()  # out of the Holm family


def test_too_few_zero_shot_locales_give_no_transfer_comparison(languages):
    from mkd.analysis.transfer import MIN_LOCALES

    cells, refs = _grid(languages, lambda l: 0.5 * l.en_syntactic)
    few = ("en-US",) + ALL[:MIN_LOCALES - 1]  # the training locale and MIN_LOCALES - 1 zero-shot ones
    assert transfer_family(cells[cells.locale.isin(few)], refs, languages, n_resamples=100).empty
    enough = ("en-US",) + ALL[:MIN_LOCALES]
    assert set(transfer_family(cells[cells.locale.isin(enough)], refs, languages, n_resamples=100).n_locales) == {MIN_LOCALES}


def test_family_retention_table_reads_the_zero_shot_locales_per_family_and_kd(languages):
    from mkd.analysis.transfer import family_retention
    from mkd.analysis.transfer_report import family_table

    # random init keeps 60 % of the teacher on Latin-script locales and 40 % elsewhere; KD on adds nothing
    cells, refs = _grid(languages, lambda l: 0.1, retention_of=lambda l: 0.6 if l.latin_script else 0.4, noise=0.0)
    by_family = family_retention(retention_table(cells, refs), languages, TRAINED)
    assert by_family.locales.sum() == 3 * 2 * 51  # inits x KD settings x the 51 zero-shot locales (en-US left out)
    uralic = by_family[(by_family.family == "Uralic") & (by_family.init == "random")]
    assert set(uralic.locales) == {2} and uralic.retention.to_numpy() == pytest.approx([0.6, 0.6])  # fi-FI, hu-HU
    indo = by_family[(by_family.family == "Indo-European") & (by_family.init == "random") & (by_family.kd == "off")].iloc[0]
    zero_shot_ie = languages[(languages.family == "Indo-European") & ~languages.en_trained]
    latin = zero_shot_ie.latin_script.mean()
    assert indo.locales == len(zero_shot_ie) and indo.retention == pytest.approx(0.6 * latin + 0.4 * (1 - latin))
    tex = family_table(by_family)
    lines = [l for l in tex.splitlines() if l.strip().startswith("Uralic")]
    assert len(lines) == 2 and all(l.split("&")[3].strip() == "60" for l in lines)  # KD off and on; random column
    assert tex.splitlines()[2].split("&")[2].strip() == "en locales"


def test_figures_of_a_profile_without_zero_shot_locales_say_so(languages):
    from mkd.analysis.transfer_report import NO_ZERO_SHOT, retention_heatmap, retention_scatter

    cells, refs = _grid(languages, lambda l: 0.1)
    only_trained = cells[cells.locale == "en-US"]
    ret = retention_table(only_trained, refs)
    for make in (retention_heatmap, retention_scatter):
        fig = make(ret, languages, TRAINED)
        assert [t.get_text() for t in fig.axes[0].texts] == [NO_ZERO_SHOT]
