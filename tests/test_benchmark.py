"""The benchmark's own machinery: the interleaving scheduler, span accounting, FLOP formulas, and the
benchmark's cell sizes laid over the cpu profile. (The speed figures themselves are measured by
`python -m benchmark.cell_speed`, never asserted in tests.)"""

from __future__ import annotations

import pytest

from benchmark.common import (CellSize, active_seconds, bench_params, formula_training_flops, matmul_flops,
                              span_totals)
from benchmark.pipeline_cost import _matrix_size
from benchmark.scheduler import Job, WorkerFailed, run_interleaved


def test_active_seconds_counts_only_the_running_intervals():
    intervals = [(0.0, 1.0), (2.0, 3.0), (5.0, 6.0)]
    assert active_seconds(0.5, 5.5, intervals) == pytest.approx(0.5 + 1.0 + 0.5)
    assert active_seconds(3.0, 5.0, intervals) == 0.0  # paused the whole time
    spans = [("fit", 0.0, 2.5), ("eval", 2.5, 6.0), ("fit", 5.0, 5.25)]
    assert span_totals(spans, intervals) == pytest.approx({"fit": 1.5 + 0.25, "eval": 0.5 + 1.0})


def test_flop_formulas():
    assert matmul_flops(2048) == 2 * 2048 ** 3
    # 6 N T: a 10.8M-parameter encoder on a batch of 32 x 10 tokens
    assert formula_training_flops(10_800_000, 320) == pytest.approx(6 * 10_800_000 * 320)


def test_bench_params_extend_the_cpu_profile_with_nested_sizes():
    p = bench_params([CellSize(2, 32, 1), CellSize(8, 300, 3)])
    assert p["profile"] == "cpu"
    assert p["data"]["train_sizes"]["r300"] == 300 and p["data"]["train_sizes"]["r32"] == 32
    assert p["data"]["language_sets"]["bench2"] == p["data"]["language_sets"]["bench8"][:2]
    assert "sw-KE" in p["data"]["language_sets"]["bench8"]
    assert set(p["grid"]["resources"]) == {"r32", "r300"}


def test_paper_grid_definition_has_36_cells():
    import yaml

    from benchmark.common import REPO

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["cell"]
    assert len(_matrix_size(stage)) == 1 * 2 * 3 * 2 * 3  # all52 x {low, high} x 3 inits x KD off/on x 3 seeds


def _spin(name, group, seconds, tmp_path):
    return Job(name=name, group=group, kind="spin", spec={"seconds": seconds}, run_dir=tmp_path)


def test_scheduler_interleaves_workers_without_overlap(tmp_path):
    # Each needs 1.2 CPU seconds in 0.1 s turns: to finish in one turn it would have to run 12 turns' worth before
    # the scheduler's 20 ms poll woke up, so "paused and resumed" holds on a loaded machine too.
    a, b = _spin("a", "baseline", 1.2, tmp_path), _spin("b", "ours", 1.2, tmp_path)
    done = run_interleaved({"baseline": [a], "ours": [b]}, {"baseline": 0.1, "ours": 0.1})
    assert {j.name for j in done} == {"a", "b"} and all(j.rc == 0 for j in done)
    # turns alternate: each worker was paused and resumed, and the two never ran at the same time
    assert len(a.intervals) >= 2 and len(b.intervals) >= 2
    timeline = sorted([(s, e, "a") for s, e in a.intervals] + [(s, e, "b") for s, e in b.intervals])
    assert all(e1 <= s2 + 1e-6 for (_, e1, _), (s2, _, _) in zip(timeline, timeline[1:]))
    # a worker's span covers at least the CPU seconds it burnt; peak memory comes from wait4
    for j in (a, b):
        assert j.totals()["spin"] >= 1.2 * 0.95
        assert j.process_seconds >= j.totals()["spin"]
        assert j.maxrss_kb and j.maxrss_kb > 1000


def test_scheduler_reports_a_failed_worker_with_its_log(tmp_path):
    bad = Job(name="bad", group="ours", kind="spin", spec={}, run_dir=tmp_path)  # no "seconds": KeyError
    with pytest.raises(WorkerFailed, match=r"(?s)worker bad \(spin\) exited with 1.*KeyError: 'seconds'"):
        run_interleaved({"ours": [bad]}, {"ours": 1.0})


def test_data_and_models_counts_what_trimming_and_a_shallower_student_remove(massive_dir, tmp_path):
    from benchmark.data_and_models import load_times, model_sizes, render, tokenize_times

    loads = load_times(massive_dir, ["en-US", "sw-KE"], repeats=1)
    assert loads["locales"] == 2 and loads["rows"] == 2 * 16521  # MASSIVE 1.1: 11,514 + 2,033 + 2,974 per locale
    assert loads["reader"] > 0 and loads["cold"] > 0 and len(loads["warm"]) == 1  # (the rows are checked equal inside)
    sizes = model_sizes(tmp_path, massive_dir, ["sw-KE"], student_layers=4, layer_map="bottom")
    tokens = tokenize_times(massive_dir, ["sw-KE"], tmp_path / "e5-small")  # encode and Dataset.map: same ids, checked
    assert tokens["texts"] == 16521 and all(tokens[k] > 0 for k in ("encode_cold", "encode_warm", "map_cold", "map_warm"))
    table = render(loads, sizes, 1, (0.0, 0.0, 0.0), tokens)
    assert "from the Arrow cache" in table and "`Dataset.map` over the Arrow entries" in table
    assert sizes["layer_map"] == [0, 1, 2, 3]
    full, trimmed = sizes["models"]
    hidden = full["base"]["embedding"] // full["vocab"]
    assert full["vocab"] == 250_002 and hidden == 384
    assert 0 < trimmed["vocab"] < full["vocab"] // 5
    for m in (full, trimmed):
        assert m["base"]["embedding"] == m["vocab"] * hidden
        assert m["student"]["embedding"] == m["base"]["embedding"]  # the student keeps its base's vocabulary
    # 4 of 12 layers: the rest shrinks by 8 BERT layers (q, k, v, o; 4x FFN; 2 LayerNorms) and gains a 60-way head
    layer = 4 * (hidden * hidden + hidden) + 2 * (hidden * 4 * hidden) + 4 * hidden + hidden + 2 * 2 * hidden
    assert full["base"]["non_embedding"] - full["student"]["non_embedding"] == 8 * layer - (60 * hidden + 60)
    assert trimmed["student"]["non_embedding"] == full["student"]["non_embedding"]
    assert trimmed["base"]["total"] == full["base"]["total"] - (full["vocab"] - trimmed["vocab"]) * hidden
    table = render(loads, sizes, 2, (0.0, 0.0, 0.0))
    assert f"{trimmed['base']['total']:,}" in table and "[0, 1, 2, 3]" in table


def test_training_batches_run_past_a_short_first_epoch_in_fits_order():
    from benchmark.common import training_batches
    from mkd.models.features import length_grouped_batches

    lengths = [5, 9, 3, 12, 7, 8, 4]  # 7 rows, batch 4: 2 batches an epoch
    got = training_batches(lengths, 4, seed=3, count=5)
    epochs = [length_grouped_batches(lengths, 4, seed=3, epoch=e) for e in range(3)]
    assert got == (epochs[0] + epochs[1] + epochs[2])[:5]
    assert training_batches(lengths, 4, seed=3, count=1) == epochs[0][:1]


def test_fanout_cost_model_schedules_largest_first_on_the_worker_that_frees_up_first():
    from benchmark.fanout_speed import makespan

    assert makespan([5, 4, 3, 3, 3], 2) == 10  # 5+3 | 4+3+3
    assert makespan([1.0] * 6, 4) == 2.0 and makespan([2, 2], 1) == 4
    assert makespan([7, 1, 1], 8) == 7  # never below the longest cell


def test_recipe_search_summary_picks_each_inits_best_and_the_recipes_within_a_point_of_all():
    import json

    from benchmark.recipe_search import summarize

    dev = {("random", "a"): (2.0, 4.0), ("random", "b"): (3.5, 4.0), ("teacher", "a"): (60.0, 70.0),
           ("teacher", "b"): (57.5, 70.0)}
    lines = [json.dumps({"train_rows": 10})] + [
        json.dumps({"run": f"student {init}/{sl}@mean:{recipe}", "dev_train_locales": v,
                    "history": [{"step": 120, "dev_accuracy": v / 100}]})
        for (init, recipe), values in dev.items() for sl, v in zip(("cpu8/high", "en/high"), values)]
    md = summarize(lines)
    assert "| random | mean:b | 3.50 (120) | 4.00 (120) | 3.75 |" in md
    assert "random: mean:b (3.75); teacher: mean:a (65.00)" in md
    # a (random 3.00 vs best 3.75; teacher best) is within 1 point of both; b costs the teacher init 1.25 points
    assert md.endswith("Recipes within 1 dev point(s) of every init's best: mean:a")
    # an init run on one slice only has no mean: the summary names it instead of counting it as matched
    one_slice = lines + [json.dumps({"run": "student pretrained/cpu8/high@mean:a", "dev_train_locales": 50.0,
                                     "history": [{"step": 480, "dev_accuracy": 0.5}]})]
    assert summarize(one_slice).endswith("mean:a (inits compared: random, teacher; not run on every slice: pretrained)")


def test_compare_runs_finds_the_cell_that_moved(tmp_path):
    """Two copies of the committed smoke results, one cell's test accuracies changed in the second: exactly one
    cell is reported not identical; a run compared with itself differs nowhere."""
    import shutil

    import pandas as pd

    from benchmark.common import REPO
    from benchmark.compare_runs import identical_cells, report, variant_accuracies

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        shutil.copytree(REPO / "results" / "smoke", root / "results" / "smoke")
    cells = pd.read_csv(b / "results" / "smoke" / "cells.csv")
    first = cells.cell.iloc[0]
    cells.loc[(cells.cell == first) & (cells.split == "test"), "accuracy"] += 0.5
    cells.to_csv(b / "results" / "smoke" / "cells.csv", index=False)
    assert identical_cells(a, a, "smoke") == (cells.cell.nunique(), cells.cell.nunique())
    assert identical_cells(a, b, "smoke") == (cells.cell.nunique() - 1, cells.cell.nunique())
    acc = variant_accuracies(a, a, "smoke")
    assert (acc["b - a (pp)"] == 0).all() and len(acc) > 0
    assert "Cells with every accuracy identical: " in report(a, b, "smoke")
