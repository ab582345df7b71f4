"""mkd.analysis.report.run_analysis on synthetic grids with known effects: files, tables, verdicts, validation, LaTeX."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mkd.core.errors import ConfigError, DataError
from mkd.analysis.report import OUTPUT_FILES, run_analysis
from mkd.analysis.cell_scores import load_cells
from mkd.analysis.tables import latex_escape
from synthetic_cells import make_synthetic_cells, write_companions

REPO = Path(__file__).resolve().parents[1]

FAST = {"n_resamples": 200}
CLAIM_HEADING = re.compile(r"^### Language set `(?P<ls>[^`]+)`, (?P<res>\w+) resource: \*\*(?P<v>[\w ()]+)\*\*$")


def parse_claims(md: str) -> dict[int, dict[str, str]]:
    """{claim: {"ls/res": verdict}} from the headings of claims.md."""
    out: dict[int, dict[str, str]] = {}
    claim = None
    for line in md.splitlines():
        m = re.match(r"^## Claim (\d+)$", line)
        if m:
            claim = int(m.group(1))
            out[claim] = {}
            continue
        m = CLAIM_HEADING.match(line)
        if m and claim is not None:
            out[claim][f"{m['ls']}/{m['res']}"] = m["v"]
    return out


def tabular_rows(tex: str) -> list[int]:
    """Data rows of each tabular in a .tex file (lines between \\midrule and \\bottomrule)."""
    counts = []
    for block in re.findall(r"\\midrule\n(.*?)\\bottomrule", tex, flags=re.S):
        counts.append(sum(1 for line in block.splitlines() if line.rstrip().endswith("\\\\")))
    return counts


def _run(tmp: Path, name: str, grid_kw: dict, **kw) -> tuple[Path, dict]:
    csv = tmp / f"{name}.csv"
    make_synthetic_cells(csv, **grid_kw)
    out = tmp / name
    kw.setdefault("figures", False)
    res = run_analysis(csv, out, "cpu", scale_note="multilingual-e5-small teacher, not xlm-roberta-base", **FAST, **kw)
    return out, res


@pytest.fixture(scope="module")
def effect_run(tmp_path_factory):
    # 3 inits x 2 kd x 2 resources x 3 seeds x 16 locales; large teacher-init effect, no KD effect.
    return _run(tmp_path_factory.mktemp("effect"), "effect", {"teacher_effect": 0.15}, figures=True)


def test_all_files_exist(effect_run):
    out, res = effect_run
    for name in OUTPUT_FILES:
        p = out / name
        assert p.is_file() and p.stat().st_size > 0, name
    assert sorted(res["files"]) == sorted(OUTPUT_FILES)
    assert (out / "fig_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fig_variants.pdf").read_bytes()[:4] == b"%PDF"
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_the_same_cells_give_the_same_bytes_in_every_file(effect_run, tmp_path):
    """Figures carry no creation date or software version (matplotlib stamps a PDF's CreationDate by default): a
    re-run of the analysis on the same cells.csv leaves paper_tables/ unchanged, byte for byte."""
    out, _ = effect_run
    again = tmp_path / "again"
    run_analysis(out.parent / "effect.csv", again, "cpu", scale_note="multilingual-e5-small teacher, not xlm-roberta-base",
                 figures=True, **FAST)
    differ = [name for name in OUTPUT_FILES if (out / name).read_bytes() != (again / name).read_bytes()]
    assert not differ, differ


def test_large_teacher_effect_reproduces_claims_1_to_3_not_kd(effect_run):
    out, res = effect_run
    claims = parse_claims((out / "claims.md").read_text())
    assert set(claims) == {1, 2, 3, 4, 5}
    for c in (1, 2, 3):
        assert claims[c] == {"cpu8/high": "reproduced", "cpu8/low": "reproduced"}, c
    assert set(claims[4].values()) == {"no effect"}  # no KD effect in the grid, and the runs show it within ±2 pp
    assert claims[5] == {"cpu8/low": "reproduced"}
    assert claims == {int(k): v for k, v in res["verdicts"].items()}


def test_claims_md_content(effect_run):
    md = (effect_run[0] / "claims.md").read_text()
    assert "cpu profile: multilingual-e5-small teacher, not xlm-roberta-base" in md
    assert "## Which test answers which question" in md
    assert "## Verdict rule" in md
    assert re.search(r"Δ = \+1\d\.\d\d pp, 95% CI over runs \[\+1\d\.\d\d, \+1\d\.\d\d\]", md)
    assert "Holm p (runs) = " in md and "equivalence within ±2 pp p = " in md


def test_tables_parse(effect_run):
    out, _ = effect_run
    main = (out / "main_table.tex").read_text()
    assert tabular_rows(main) == [10]  # init x KD, then frozen probe, its chosen C, teacher, chance
    assert re.search(r"probe C \(chosen on dev\) *& *& *0\.1 *& *0\.1", main)
    assert "±" in main and "\\toprule" in main
    assert "frozen probe (floor)" in main and "teacher (ceiling)" in main and "1.7" in main  # chance = 1/60
    assert tabular_rows((out / "per_locale_table.tex").read_text()) == [17, 17]  # 16 locales + average, 2 slices
    sig = (out / "significance_table.tex").read_text()
    assert tabular_rows(sig) == [20]
    assert "r\\_rb" in sig  # underscores escaped


def test_stats_json_and_summary(effect_run):
    out, res = effect_run
    js = json.loads((out / "stats.json").read_text())
    assert js["profile"] == "cpu" and len(js["comparisons"]) == 20
    assert js["family_size"] == {"1": 4, "2": 4, "3": 2, "4": 6, "5": 4}
    row = next(c for c in js["comparisons"] if c["claim"] == 1)
    for key in ("delta", "ci_lo", "ci_hi", "p_wilcoxon", "p_holm", "rank_biserial", "p_t", "cohen_dz", "n_locales",
                "n_seeds", "verdict"):
        assert key in row
    assert row["n_locales"] == 16 and row["n_seeds"] == 3
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 12  # 3 inits x 2 kd x 2 resources
    t = summ[(summ.init == "teacher") & (summ.kd == "off") & (summ.resource == "high")]["mean"].iloc[0]
    r = summ[(summ.init == "random") & (summ.kd == "off") & (summ.resource == "high")]["mean"].iloc[0]
    assert t - r == pytest.approx(0.15, abs=0.02)


def test_no_effect_is_no_effect_and_too_few_runs_is_inconclusive(tmp_path):
    """A grid without effects whose runs are steady shows "no effect" (equivalent within ±2 pp); the same grid
    with noisy runs cannot tell, and says how large an effect it could have seen."""
    out, res = _run(tmp_path, "null", {})
    claims = parse_claims((out / "claims.md").read_text())
    for c in (1, 2, 3, 4, 5):
        assert set(claims[c].values()) == {"no effect"}, c
    out, res = _run(tmp_path, "noisy", {"seed_sd": 0.03})
    claims = parse_claims((out / "claims.md").read_text())
    for c in (1, 2, 3, 4, 5):
        assert set(claims[c].values()) == {"inconclusive"}, c
    assert "MDE " in (out / "claims.md").read_text() and "runs a variant would decide" in (out / "claims.md").read_text()


def test_reversed_effect_is_contradicted(tmp_path):
    out, res = _run(tmp_path, "rev", {"teacher_effect": -0.15})
    claims = parse_claims((out / "claims.md").read_text())
    for c in (1, 2, 3):
        assert set(claims[c].values()) == {"contradicted"}, c
    assert set(claims[4].values()) == {"no effect"}


def test_kd_effect_alone_reproduces_claim_4_and_contradicts_claim_3(tmp_path):
    # Low seed noise: with 3 seeds the seed-level t-test (part of the default test) needs a very stable effect.
    out, res = _run(tmp_path, "kd", {"kd_effect": 0.08, "seed_sd": 0.0005})
    v = res["verdicts"]
    assert set(v["4"].values()) == {"reproduced"}
    assert set(v["3"].values()) == {"contradicted"}
    assert set(v["1"].values()) == {"no effect"}


def test_seed_noise_fools_wilcoxon_alone_but_not_the_default(tmp_path):
    # No true effect; each training run shifts all its locales together (seed_sd) more than locale noise.
    # The Wilcoxon test across locales alone is fooled (Holm p < 0.05 somewhere), but no verdict follows: the
    # interval a verdict needs covers seed variation, and the default also needs the seed-level t-test.
    grid = {"seed_sd": 0.01, "noise_sd": 0.005}
    out, w = _run(tmp_path, "w", grid, primary_test="wilcoxon")
    fooled = [c for c in json.loads((out / "stats.json").read_text())["comparisons"] if c["p_holm"] < 0.05]
    assert fooled and all(c["ci_lo"] <= 0 <= c["ci_hi"] for c in fooled)
    assert any(not (c["loc_ci_lo"] <= 0 <= c["loc_ci_hi"]) for c in fooled)  # a locale-only interval would be fooled
    assert all(v == "inconclusive" for per in w["verdicts"].values() for v in per.values())
    _, both = _run(tmp_path, "both", grid)
    assert all(v == "inconclusive" for per in both["verdicts"].values() for v in per.values())


def test_eight_locales_warns_about_the_wilcoxon_floor(tmp_path):
    # Holm over all 20 comparisons: 20 x 2/2^8 >= 0.05, nothing can pass
    out, res = _run(tmp_path, "eight", {"teacher_effect": 0.15, "n_locales": 8}, holm_family="all",
                    primary_test="both")  # the older rule, which rests on the Wilcoxon
    assert any("smallest possible Wilcoxon p" in w for w in res["warnings"])
    assert "smallest possible Wilcoxon p" in (out / "claims.md").read_text()
    assert set(res["verdicts"]["1"].values()) == {"inconclusive"}
    _, t = _run(tmp_path, "eight_t", {"teacher_effect": 0.15, "n_locales": 8, "seed_sd": 0.001}, primary_test="t")
    assert set(t["verdicts"]["1"].values()) == {"reproduced"} and not t["warnings"]
    # Holm within a claim (at most 6 comparisons): 6 x 2/2^8 < 0.05, so no floor warning
    _, per_claim = _run(tmp_path, "eight_claim", {"teacher_effect": 0.15, "n_locales": 8}, primary_test="wilcoxon")
    assert not any("smallest possible Wilcoxon p" in w for w in per_claim["warnings"])


def test_english_only_language_set_tests_unseen_locales(tmp_path):
    out, res = _run(tmp_path, "en", {"teacher_effect": 0.15, "language_sets": ("cpu8", "en"), "n_locales": 12})
    js = json.loads((out / "stats.json").read_text())
    subsets = {(c["language_set"], c["locale_subset"]) for c in js["comparisons"] if c["claim"] == 5}
    assert subsets == {("cpu8", "non-English"), ("en", "non-English = unseen in training")}
    assert res["verdicts"]["5"] == {"cpu8/low": "reproduced", "en/low": "reproduced"}
    assert tabular_rows((out / "main_table.tex").read_text()) == [10]
    assert "en low" in (out / "main_table.tex").read_text()


# ------------------------------------------------------------------------------------------ validation


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    p = tmp_path / "cells.csv"
    df.to_csv(p, index=False)
    if df["init"].isin(["random", "pretrained", "teacher"]).any():
        write_companions(df, tmp_path)
    return p


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return make_synthetic_cells(n_locales=4, seeds=(0, 1))


def test_missing_columns(tmp_path, small):
    with pytest.raises(DataError, match="lacks column.*macro_f1"):
        load_cells(_write(tmp_path, small.drop(columns=["macro_f1"])))


def test_empty_inputs(tmp_path, small):
    p = tmp_path / "cells.csv"
    p.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_cells(p)
    with pytest.raises(DataError, match="no rows"):
        load_cells(_write(tmp_path, small.iloc[:0]))
    with pytest.raises(DataError, match="not found"):
        load_cells(tmp_path / "nope.csv")


def test_missing_locale_in_one_cell(tmp_path, small):
    bad = small.drop(small[(small.cell == "cpu8-low-teacher-kd_on-s1") & (small.locale == "am-ET")
                           & (small.split == "test")].index)
    with pytest.raises(DataError, match=r"cpu8-low-teacher-kd_on-s1.*lacks 1 locale.*am-ET"):
        load_cells(_write(tmp_path, bad))


def test_duplicate_rows(tmp_path, small):
    bad = pd.concat([small, small.iloc[[5]]])
    with pytest.raises(DataError, match="duplicate"):
        load_cells(_write(tmp_path, bad))


def test_several_profiles_or_wrong_profile(tmp_path, small):
    two = pd.concat([small, small.assign(profile="gpu")])
    with pytest.raises(DataError, match="2 profiles.*never be mixed"):
        load_cells(_write(tmp_path, two))
    with pytest.raises(DataError, match="asked for 'gpu'"):
        run_analysis(_write(tmp_path, small), tmp_path / "out", "gpu")
    assert not (tmp_path / "out").exists()


def test_bad_values(tmp_path, small):
    with pytest.raises(DataError, match="no rows for split 'validation'"):
        load_cells(_write(tmp_path, small), split="validation")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_cells(_write(tmp_path, small.assign(accuracy=small.accuracy * 100)))
    with pytest.raises(DataError, match="column kd"):
        load_cells(_write(tmp_path, small.assign(kd=small.kd.replace({"on": "yes"}))))
    with pytest.raises(ConfigError, match="metric"):
        load_cells(_write(tmp_path, small), metric="bleu")


def test_teacher_model_rows_are_ignored(tmp_path, small):
    df = load_cells(_write(tmp_path, small))
    assert set(df["init"]) == {"random", "pretrained", "teacher"}
    assert set(df["split"]) == {"test"}
    with pytest.raises(DataError, match="no student rows"):
        load_cells(_write(tmp_path, small[small.init == "teacher_model"]))


def test_macro_f1_metric(tmp_path, small):
    out = tmp_path / "f1"
    res = run_analysis(_write(tmp_path, small), out, "cpu", metric="macro_f1", figures=False, **FAST)
    assert "macro_f1" in (out / "main_table.tex").read_text().replace("\\_", "_")
    assert res["n_comparisons"] == 20


# ------------------------------------------------------------------------------------------ LaTeX


def test_latex_escape():
    assert latex_escape("a_b & 50% #1 {x} $") == r"a\_b \& 50\% \#1 \{x\} \$"


def test_tables_compile_with_pdflatex(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (CI installs texlive-latex-base + texlive-latex-recommended)")
    # An underscore in the language-set name must not break LaTeX.
    out, _ = _run(tmp_path, "tex", {"teacher_effect": 0.1, "language_sets": ("cpu_8",), "n_locales": 10})
    assert "cpu\\_8" in (out / "main_table.tex").read_text()
    doc = out / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\usepackage{booktabs}\n"
        "\\begin{document}\n\\input{main_table}\n\n\\input{per_locale_table}\n\n"
        "{\\tiny\\input{significance_table}}\n\\end{document}\n"
    )
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=out,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (out / "doc.pdf").is_file() and (out / "doc.pdf").stat().st_size > 1000
    log = (out / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log  # e.g. an unsupported Unicode symbol like ±


def test_every_variant_table_reads_each_variant_s_runs_on_the_committed_cpu_results():
    """claims.md's "Every variant" rows, recomputed by hand from the committed cpu results: runs, best step
    (median, range) and mean ± sd over runs on all locales and on the training locales, with the slice's floor."""
    from mkd.analysis.claims_report import variant_lines
    from mkd.analysis.gates import load_references, load_training
    from mkd.data import resolve_language_set

    res = REPO / "results" / "cpu"
    df = load_cells(res / "cells.csv", profile="cpu")
    refs = load_references(res / "references.csv", "test", "accuracy")
    training = load_training(res / "training.csv")
    cpu8 = list(resolve_language_set("cpu8"))
    lines = variant_lines(df, training, refs, {"cpu8": cpu8, "en": ["en-US"]}, "accuracy")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| cpu8/high")}
    for init, label in (("teacher", "teacher+KD"), ("pretrained", "pretrained")):
        kd = "on" if label.endswith("+KD") else "off"
        sel = df[(df.language_set == "cpu8") & (df.resource == "high") & (df.init == init) & (df.kd == kd)]
        runs = sel.groupby("seed").accuracy.mean()
        runs_train = sel[sel.locale.isin(cpu8)].groupby("seed").accuracy.mean()
        steps = training[(training.language_set == "cpu8") & (training.resource == "high") & (training.init == init)
                         & (training.kd == kd)].best_step
        row = rows[("cpu8/high", label)]
        assert row[2] == str(len(runs)) and row[3] == f"{int(steps.median())} ({steps.min()}-{steps.max()})"
        for cell, scores in ((row[4], runs), (row[5], runs_train)):
            # printed to 0.1: a mean that sums in another order may round the other way at a .x5 boundary
            mean, sd = (float(x) for x in cell.split(" ± "))
            assert abs(mean - 100 * scores.mean()) <= 0.05 + 1e-9 and abs(sd - 100 * scores.std(ddof=1)) <= 0.05 + 1e-9, cell
    probe = refs[(refs.reference == "probe") & (refs.language_set == "cpu8") & (refs.resource == "high")]
    floor = next(v for k, v in rows.items() if k[1].startswith("frozen probe"))
    assert floor[4] == f"{100 * probe.groupby('locale').accuracy.mean().mean():.1f}"
