"""The DVC wiring: stages declare their real deps and params, so a student-only change re-runs cells, not the teacher.

A tiny copy of the project (dvc.yaml, params.yaml with smoke values and a 2-cell grid, the mkd package) in a
temporary git repository; `dvc repro` runs there for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TEST_THREADS
from mkd.config import load_profile, merge, read_yaml, validate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, check=True, env=None):
    env = {**os.environ, **(env or {}), "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MKD_MASSIVE", None)  # the project reads its own copy of the data (data.massive), not the shared one
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def project(tmp_path_factory, massive_dir, e5_small_dir):
    d = tmp_path_factory.mktemp("dvcproject")
    shutil.copy(REPO / "dvc.yaml", d / "dvc.yaml")
    shutil.copytree(REPO / "mkd", d / "mkd", ignore=shutil.ignore_patterns("__pycache__"))
    params = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    params["threads"] = TEST_THREADS
    source = d.parent / f"{d.name}-massive"  # the project's own copy of the 3 locales, so a test may change it
    source.mkdir()
    for locale in ("en-US", "de-DE", "sw-KE"):
        shutil.copy(massive_dir / f"{locale}.jsonl.gz", source)
    params["data"]["massive"] = str(source)
    params["data"]["train_sizes"] = {"low": 4, "high": 8, "full": 30}
    params["teacher"].update(max_steps=3, eval_every=3)  # 1 epoch of 90 rows
    params["grid"].update(resources=["low"], inits=["random", "teacher"], kd=["on"], seeds=[0])
    validate(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], d)
    _run(["dvc", "init", "-q"], d)
    shutil.copytree(REPO / ".dvc" / "plots", d / ".dvc" / "plots")  # the curves template
    _run(["git", "add", "-A"], d)
    _run(["git", "commit", "-qm", "init"], d)
    _run(["dvc", "repro"], d)
    return d


def _changed_stages(project) -> set[str]:
    """Stages `dvc status` reports changed, less `validate`, which looks at the data source on every run."""
    out = _run(["dvc", "status", "--json"], project).stdout
    import json

    return {stage for stage, why in json.loads(out or "{}").items() if why != ["always changed"]}


def test_repro_materializes_every_cell_and_then_nothing_is_stale(project):
    cells = sorted(p.name for p in (project / "results" / "smoke" / "cells").iterdir())
    assert cells == ["smoke-low-random-kdon-s0", "smoke-low-teacher-kdon-s0"]
    assert (project / "paper_tables" / "smoke" / "claims.md").exists()
    assert _changed_stages(project) == set()


def _fanout_clone(project, tmp_path) -> Path:
    """A clone of the committed tiny project to fan out from (its DVC cache empty: every stage computes again)."""
    fan = tmp_path / "fan"
    _run(["git", "clone", "-q", str(project), str(fan)], tmp_path)
    shutil.copy(REPO / ".dvcignore", fan / ".dvcignore")  # the real project's: DVC does not read the workers' clones
    _run(["git", "add", ".dvcignore"], fan)
    _run(["git", "commit", "-qm", "dvcignore"], fan)
    return fan


def _ledger(fan) -> list[dict]:
    return [json.loads((fan / ".mkd/fanout/smoke/done" / f"{s}.json").read_text())
            for s in ("cell__smoke-low-random-on-0", "cell__smoke-low-teacher-on-0")]


def _fanin_gives_the_sequential_cells_csv(fan, project) -> dict:
    """`mkd fanin` restores every stage from the run-cache and writes the sequential run's cells.csv byte for byte;
    returns a cell's info.json."""
    r = _run(["mkd", "fanin", "--profile", "paper"], fan)
    out = r.stdout + r.stderr
    for stage in ("teachers", "logits", "references", "cell@smoke-low-random-on-0", "cell@smoke-low-teacher-on-0"):
        assert f"Stage '{stage}' is cached - skipping run" in out, out
    assert (fan / "results/smoke/cells.csv").read_bytes() == (project / "results/smoke/cells.csv").read_bytes()
    return json.loads((fan / "results/smoke/cells/smoke-low-teacher-kdon-s0/info.json").read_text())


def test_fanout_on_two_workers_then_fanin_gives_the_sequential_cells_csv_byte_for_byte(project, tmp_path):
    """`mkd fanout --gpus 0,1` (1 thread each) in a clone of the committed project, then `mkd fanin`: every cell
    comes from DVC's run-cache, and cells.csv is byte for byte the one the sequential `dvc repro` wrote."""
    fan = _fanout_clone(project, tmp_path)
    r = _run(["mkd", "fanout", "--profile", "paper", "--gpus", "0,1"], fan)  # GPU labels only: torch sees none here
    assert "2 to run" in r.stdout and "all 2 cells done" in r.stdout, r.stdout
    cells = _ledger(fan)
    assert {c["where"].split()[0] for c in cells} <= {"worker0", "worker1"}
    assert all("'CUDA_VISIBLE_DEVICES'" in c["where"] for c in cells)
    r = _run(["mkd", "fanout", "--profile", "paper", "--workers", "2"], fan)
    assert "2 of 2 cells already done; 0 to run" in r.stdout
    info = _fanin_gives_the_sequential_cells_csv(fan, project)
    assert info["provenance"]["threads"] == 1


def test_a_slurm_fanout_then_fanin_gives_the_sequential_cells_csv_byte_for_byte(project, slurm, tmp_path):
    """`mkd fanout --engine slurm` on a real one-node Slurm (the `slurm` fixture): the upstream stages here
    (`--upstream-only`), each cell a task of one job array, then `mkd fanin`: every cell from DVC's run-cache,
    cells.csv byte for byte the sequential run's, and Slurm's own record shows each cell's job once."""
    fan = _fanout_clone(project, tmp_path)
    _run(["mkd", "fanout", "--profile", "paper", "--upstream-only"], fan)
    r = _run(["mkd", "fanout", "--profile", "paper", "--engine", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1",
              "--max-parallel", "2", "--time-min", "30"], fan)
    assert "2 to run (slurm engine)" in r.stdout and "all 2 cells done" in r.stdout, r.stdout
    ledger = _ledger(fan)
    jobs = {c["where"].split(" job ")[1] for c in ledger}
    tasks = slurm.array_of(next(iter(jobs)), tasks=2)
    assert {r["JobId"] for r in tasks} == jobs and [r["JobState"] for r in tasks] == ["COMPLETED"] * 2
    info = _fanin_gives_the_sequential_cells_csv(fan, project)
    assert info["provenance"]["job"] in jobs  # the cell records the Slurm job it ran as


def test_fanin_names_the_cells_no_worker_finished_and_trains_nothing(project, tmp_path):
    fan = tmp_path / "fan"
    _run(["git", "clone", "-q", str(project), str(fan)], tmp_path)
    r = _run(["mkd", "fanin", "--profile", "paper"], fan, check=False)
    assert r.returncode == 2 and "2 of 2 cells have not run in a fanout" in r.stderr and "mkd fanout --profile paper" in r.stderr
    assert not (fan / "artifacts").exists()
    grid = fan / "mkd" / "pipeline" / "grid.py"
    grid.write_text(grid.read_text() + "\n# edited\n")
    r = _run(["mkd", "fanout", "--profile", "paper"], fan, check=False)
    assert r.returncode == 2 and "mkd/pipeline/grid.py" in r.stderr and "commit" in r.stderr
    r = _run(["mkd", "cell", "--language-set", "smoke", "--resource", "low", "--init", "random", "--kd", "on",
              "--seed", "0"], fan, check=False, env={"MKD_RESTORE_ONLY": "1"})
    assert r.returncode == 2 and "fan-in" in r.stderr and not (fan / "results").exists()
    _run(["git", "checkout", "mkd/pipeline/grid.py"], fan)
    params = read_yaml(fan / "params.yaml")
    params["student"]["save_model"] = True
    (fan / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "commit", "-qam", "save the students"], fan)
    r = _run(["mkd", "fanout", "--profile", "paper"], fan, check=False)
    assert r.returncode == 2 and "student.save_model" in r.stderr and not (fan / ".mkd").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(studnt={"lr": 1}), "unknown parameter studnt"),  # what `dvc exp run -S +studnt.lr=1` writes
    (lambda p: p.update(threads=-3), "threads"),                          # a key no stage declares
])
def test_an_edit_no_stage_declares_is_still_validated_before_any_stage_runs(project, edit, message):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        r = _run(["dvc", "repro"], project, check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "failed to reproduce 'validate'" in out and message in out, out[-2000:]
        assert "Running stage 'prepare'" not in out and "Traceback" not in out
    finally:
        (project / "params.yaml").write_text(original)
    # The failed run removed the stamp; the next run writes it back unchanged, so nothing after it re-runs.
    out = _run(["dvc", "repro"], project).stdout
    assert "Running stage 'validate'" in out and "Running stage 'prepare'" not in out
    assert _changed_stages(project) == set()


def test_a_max_length_change_reruns_the_teacher_and_every_cell(project):
    # `dvc exp run -S data.max_length=64` once re-ran only `prepare` (whose output does not change): silently ignored
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["data"]["max_length"] = 64
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = _changed_stages(project)
    finally:
        (project / "params.yaml").write_text(original)
    assert {"teachers", "references", "logits", "cell@smoke-low-random-on-0", "cell@smoke-low-teacher-on-0"} <= changed


def test_a_student_only_change_reruns_cells_not_the_teacher(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["student"]["lr"] = params["student"]["lr"] * 2  # any change of a student-only value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _changed_stages(project)
    assert {"cell@smoke-low-random-on-0", "cell@smoke-low-teacher-on-0"} <= changed
    assert not {"prepare", "base", "teachers", "logits"} & changed
    out = _run(["dvc", "repro"], project).stdout
    assert "Stage 'teachers' didn't change, skipping" in out
    assert "Running stage 'cell@smoke-low-random-on-0'" in out


@pytest.mark.parametrize("module, reruns, keeps", [
    ("mkd/analysis/report.py", {"analyze"}, {"prepare", "base", "teachers", "logits", "references", "collect"}),
    ("mkd/pipeline/stages/cell.py", {"cell@smoke-low-random-on-0", "cell@smoke-low-teacher-on-0"},
     {"prepare", "base", "teachers", "logits", "references"}),
    ("mkd/pipeline/stages/teachers.py", {"teachers"}, {"prepare", "base"}),
])
def test_editing_a_stage_s_code_reruns_that_stage_not_the_ones_before_it(project, module, reruns, keeps):
    """Each stage declares the modules it runs (one module per stage in mkd/pipeline/stages/): a change to the
    analysis re-runs only analyze, a change to the cell stage never re-trains the teacher."""
    path = project / module
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        changed = _changed_stages(project)
    finally:
        path.write_text(original)
    assert reruns <= changed and not keeps & changed, (module, sorted(changed))
    assert _changed_stages(project) == set()


def test_a_teacher_change_reruns_the_teacher_and_everything_after_it(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["teacher"]["lr"] = 1.0e-4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _changed_stages(project)
    assert "teachers" in changed and not {"prepare", "base"} & changed


def test_the_only_dvc_metric_is_the_headline_summary(project):
    # every cell's per-locale file once was a metric: `dvc exp show` had 15,510 columns after the cpu grid
    import json

    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = {path for rev in shown.values() for path in rev.get("data", {})}
    assert files == {"results/smoke/summary.json"}, files


def test_new_bytes_in_the_massive_source_rerun_prepare(project):
    # The source lies outside the repository; it once was no dependency at all: new files re-ran nothing.
    import gzip

    params = yaml.safe_load((project / "params.yaml").read_text())
    path = Path(params["data"]["massive"]) / "sw-KE.jsonl.gz"
    original = path.read_bytes()
    path.write_bytes(gzip.compress(gzip.decompress(original), compresslevel=1))  # same rows, other bytes
    try:
        _run(["dvc", "repro", "validate"], project)
        assert "prepare" in _changed_stages(project)
    finally:
        path.write_bytes(original)
    _run(["dvc", "repro", "validate"], project)
    assert "prepare" not in _changed_stages(project)  # the same bytes again: the same fingerprint


def test_plots_show_draws_per_locale_accuracy_and_the_training_curves(project):
    _run(["dvc", "plots", "show", "-o", "plots_out"], project)
    html = (project / "plots_out" / "index.html").read_text()
    assert "per_locale.csv" in html
    # the curves through the repo's template: one line per teacher / variant, coloured by the series column
    spec = json.loads(_run(["dvc", "plots", "show", "--json", "results/smoke/curves.csv"], project).stdout)
    (plot,) = spec["data"]["results/smoke/curves.csv"]
    assert plot["content"]["encoding"]["color"] == {"field": "series", "type": "nominal"}
    series = {row["series"] for row in plot["content"]["data"]["values"]}
    assert series == {"teacher[shared]", "smoke/low/random/kd_on", "smoke/low/teacher/kd_on"}
