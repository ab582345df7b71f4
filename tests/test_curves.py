"""The learning curves as a result: the teacher-init advantage read at fractions of the step budget from
curves.csv as `mkd collect` writes it, its course (head start or lasting), the figure, claim 4 per init, and the
tuned probe's C in the tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mkd.analysis.curves import budget_advantage, course, load_curves
from mkd.analysis.report import run_analysis
from mkd.axes import variant_name
from mkd.core.errors import DataError
from mkd.pipeline.results import CURVE_COLUMNS, learning_curve
from synthetic_cells import make_synthetic_cells, write_companions

FAST = {"n_resamples": 200}


def _curves(tmp_path, dev_by_init: dict, seeds: int = 2, eval_every: int = 20, budget: int = 120):
    """curves.csv of one slice (cpu8/high, KD off) through the collect stage's writer; dev_by_init[init](step)
    is each seed's dev accuracy at an evaluation (step 0: before training)."""
    rows = []
    for init, dev in dev_by_init.items():
        histories = [[{"step": s, "train_loss": 1.0, "dev_accuracy": dev(s)} for s in range(eval_every, budget + 1, eval_every)]
                     for _ in range(seeds)]
        rows += [[variant_name("cpu8", "high", init, "off")] + r for r in learning_curve(histories, [dev(0)] * seeds)]
    rows += [["teacher[shared]", 20, 1, 1.0, 0.7, 0.7, 0.7, 0.7]]  # a teacher's curve is not a student variant
    path = tmp_path / "curves.csv"
    pd.DataFrame(rows, columns=CURVE_COLUMNS).to_csv(path, index=False)
    return load_curves(path)


def test_a_head_start_the_others_catch_up_on_fades_and_one_they_never_close_lasts(tmp_path):
    curves = _curves(tmp_path, {"teacher": lambda s: 0.6,
                                "pretrained": lambda s: 0.02 + 0.58 * s / 120,  # reaches the teacher init at the end
                                "random": lambda s: 0.02})
    assert set(curves["init"]) == {"teacher", "pretrained", "random"}  # the teacher's own curve is dropped
    adv = budget_advantage(curves, max_steps=120)
    # evaluations every 20 steps: 10 % of 120 (12) reads step 0, 25 % (30) step 20, 50 % step 60, 100 % step 120
    assert list(adv[adv.other == "pretrained"]["step"]) == [0, 20, 60, 120]
    pre = list(adv[adv.other == "pretrained"]["advantage"])
    assert pre[0] == pytest.approx(0.58) and pre[-1] == pytest.approx(0.0, abs=1e-6)
    assert course(pre) == "fades"
    rnd = list(adv[adv.other == "random"]["advantage"])
    assert rnd == pytest.approx([0.58] * 4) and course(rnd) == "lasting"
    assert course([-0.01, 0.2]) == "none at first"


def test_an_early_stopped_run_keeps_its_best_in_the_reading(tmp_path):
    # pretrained init peaks at step 40 (0.5) and then falls: the best weights are kept, so the curve stays at 0.5
    curves = _curves(tmp_path, {"teacher": lambda s: 0.6, "pretrained": lambda s: 0.5 - abs(s - 40) / 400})
    adv = budget_advantage(curves, max_steps=120)
    assert adv[adv.fraction == 1.0]["other_init"].item() == pytest.approx(0.5)


def test_a_curves_file_without_student_series_is_refused_with_its_name(tmp_path):
    path = tmp_path / "curves.csv"
    pd.DataFrame([["teacher[shared]", 20, 1, 1.0, 0.7, 0.7, 0.7, 0.7]], columns=CURVE_COLUMNS).to_csv(path, index=False)
    with pytest.raises(DataError, match="curves.csv holds no student curve"):
        load_curves(path)
    pd.DataFrame({"series": ["x"], "step": [1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks column.*best_dev_accuracy"):
        load_curves(path)


def test_the_analysis_writes_the_curves_figure_the_budget_reading_and_the_chosen_probe_c(tmp_path):
    csv = tmp_path / "cells.csv"
    make_synthetic_cells(csv, teacher_effect=0.15)
    write_companions(pd.read_csv(csv), tmp_path, probe_c=0.01)
    res = run_analysis(csv, tmp_path / "out", "cpu", budget_steps=100, **FAST)
    out = tmp_path / "out"
    assert {"fig_curves.pdf", "fig_curves.png"} <= set(res["files"])
    assert (out / "fig_curves.png").stat().st_size > 10_000
    stats = json.loads((out / "stats.json").read_text())
    assert stats["budget_steps"] == 100 and stats["budget_fractions"] == [0.1, 0.25, 0.5, 1.0]
    # the synthetic curves rise linearly from the initial dev accuracy (teacher init 0.5, others chance) to the
    # variant's score: the teacher-init head start of ~48 pp at step 10 shrinks to the ~15 pp test effect
    adv = pd.DataFrame(stats["teacher_init_advantage_over_budget"])
    assert len(adv) == 2 * 2 * 2 * 4  # slices x KD x other inits x fractions
    first, last = adv[adv.fraction == 0.1]["advantage"], adv[adv.fraction == 1.0]["advantage"]
    assert (first > 0.4).all() and last.between(0.12, 0.18).all()
    md = (out / "claims.md").read_text()
    assert "## Head start or lasting advantage? (learning curves)" in md
    assert "| cpu8/high | off | pretrained | +4" in md and md.count("| fades |") == 8
    assert "(C = 0.01)" in md
    assert "probe C (chosen on dev)" in (out / "main_table.tex").read_text()


def test_claim_4_per_init_answers_where_random_init_cannot_be_tested(tmp_path):
    csv = tmp_path / "cells.csv"
    cells = make_synthetic_cells(csv, teacher_effect=0.15, kd_effect=0.08, seed_sd=0.0005)
    cells.loc[cells.init == "random", ["accuracy", "macro_f1"]] = 0.02  # random init at chance: fails init_learns
    cells.to_csv(csv, index=False)
    write_companions(cells, tmp_path)
    res = run_analysis(csv, tmp_path / "out", "cpu", figures=False, **FAST)
    assert set(res["verdicts"]["4"].values()) == {"not testable at this scale"}  # one init blocks the slice verdict
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    by_init = stats["verdicts_by_init"]["4"]
    assert set(by_init["random"].values()) == {"not testable at this scale"}
    assert set(by_init["pretrained"].values()) == {"reproduced"} and set(by_init["teacher"].values()) == {"reproduced"}
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "| 4, pretrained init | **reproduced**" in md and "| 4, random init | **not testable at this scale**" in md


def test_a_slice_probed_on_several_draws_reports_each_draws_c():
    """references.csv records one C per slice, or a probe per seed's draw joined ("1/10"): both read back as text."""
    from mkd.analysis.cell_scores import probe_c

    refs = pd.DataFrame({"reference": ["probe", "probe", "teacher"], "language_set": ["cpu8", "en", "cpu8"],
                         "resource": ["low", "low", "low"], "probe_c": ["1/10", "0.10", None]})
    assert probe_c(refs) == {("cpu8", "low"): "1/10", ("en", "low"): "0.1"}
    assert probe_c(refs.assign(probe_c=[0.01, 10.0, None])) == {("cpu8", "low"): "0.01", ("en", "low"): "10"}
