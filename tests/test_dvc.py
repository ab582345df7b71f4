"""The DVC wiring: stages declare their real deps and params, so a student-only change re-runs cells, not the teacher.

A tiny copy of the project (dvc.yaml, params.yaml with smoke values and a 2-cell grid, the mkd package) in a
temporary git repository; `dvc repro` runs there for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
    params["grid"].update(resources=["low"], inits=["random", "teacher"], kd=["off", "on"], seeds=[0],
                          extra_seeds={"inits": [], "seeds": []})
    validate(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], d)
    _run(["dvc", "init", "-q"], d)
    shutil.copytree(REPO / ".dvc" / "plots", d / ".dvc" / "plots")  # the curves template
    _run(["git", "add", "-A"], d)
    _run(["git", "commit", "-qm", "init"], d)
    _run(["dvc", "repro"], d)
    return d


GRID = [(init, kd) for init in ("random", "teacher") for kd in ("off", "on")]
STAGES = [f"cell@smoke-low-{init}-{kd}-0" for init, kd in GRID]  # the 4 cells' DVC stages
ON = {s for s in STAGES if s.endswith("-on-0")}


def _changed_stages(project) -> set[str]:
    """Stages `dvc status` reports changed, less `validate`, which looks at the data source on every run."""
    out = _run(["dvc", "status", "--json"], project).stdout
    import json

    return {stage for stage, why in json.loads(out or "{}").items() if why != ["always changed"]}


def test_repro_materializes_every_cell_and_then_nothing_is_stale(project):
    cells = sorted(p.name for p in (project / "results" / "smoke" / "cells").iterdir())
    assert cells == sorted(f"smoke-low-{init}-kd{kd}-s0" for init, kd in GRID)
    assert (project / "paper_tables" / "smoke" / "claims.md").exists()
    assert _changed_stages(project) == set()


def _fanout_clone(project, tmp_path) -> Path:
    """A clone of the committed tiny project to fan out from (its DVC cache empty: every stage computes again)."""
    fan = tmp_path / "fan"
    _run(["git", "clone", "-q", str(project), str(fan)], tmp_path)
    shutil.copy(REPO / ".dvcignore", fan / ".dvcignore")  # the real project's: DVC does not read the workers' clones
    shutil.copy(REPO / ".gitignore", fan / ".gitignore")  # and git not the fanout's folder (`git add -A` below)
    _run(["git", "add", ".dvcignore", ".gitignore"], fan)
    _run(["git", "commit", "-qm", "dvcignore"], fan)
    return fan


def _ledger(fan) -> list[dict]:
    return [json.loads((fan / ".mkd/fanout/smoke/done" / f"{s}.json").read_text())
            for s in (stage.replace("@", "__") for stage in STAGES)]


def _fanin_gives_the_sequential_cells_csv(fan, project) -> dict:
    """`mkd fanin` restores every stage from the run-cache and writes the sequential run's cells.csv byte for byte;
    returns a cell's info.json."""
    r = _run(["mkd", "fanin", "--profile", "paper"], fan)
    out = r.stdout + r.stderr
    for stage in ("teachers", "logits", "references", *STAGES):
        assert f"Stage '{stage}' is cached - skipping run" in out, out
    assert (fan / "results/smoke/cells.csv").read_bytes() == (project / "results/smoke/cells.csv").read_bytes()
    return json.loads((fan / "results/smoke/cells/smoke-low-teacher-kdon-s0/info.json").read_text())


def test_fanout_on_two_workers_then_fanin_gives_the_sequential_cells_csv_byte_for_byte(project, tmp_path):
    """`mkd fanout --workers 2` (1 thread each) in a clone of the committed project, then `mkd fanin`: every cell
    comes from DVC's run-cache, and cells.csv is byte for byte the one the sequential `dvc repro` wrote. (Workers on
    GPUs: tests/test_fanout.py; a GPU id torch cannot see is refused: tests/test_misuse.py.)"""
    fan = _fanout_clone(project, tmp_path)
    r = _run(["mkd", "fanout", "--profile", "paper", "--workers", "2"], fan)
    assert "4 to run" in r.stdout and "all 4 cells done" in r.stdout, r.stdout
    cells = _ledger(fan)
    assert {c["where"].split()[0] for c in cells} <= {"worker0", "worker1"}
    r = _run(["mkd", "fanout", "--profile", "paper", "--workers", "2"], fan)
    assert "4 of 4 cells already done; 0 to run" in r.stdout
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
    assert "4 to run (slurm engine)" in r.stdout and "all 4 cells done" in r.stdout, r.stdout
    ledger = _ledger(fan)
    jobs = {c["where"].split(" job ")[1] for c in ledger}
    tasks = slurm.array_of(next(iter(jobs)), tasks=4)
    assert {r["JobId"] for r in tasks} == jobs and [r["JobState"] for r in tasks] == ["COMPLETED"] * 4
    info = _fanin_gives_the_sequential_cells_csv(fan, project)
    assert info["provenance"]["job"] in jobs  # the cell records the Slurm job it ran as


@pytest.fixture(scope="module")
def baseline(project, tmp_path_factory) -> Path:
    """The README's sequence on a clone of the tiny project, through fanout as scripts/run.sh runs it: run, commit
    the baseline; DVC writes params.yaml back in its own YAML when it applies -S (`off`, `on` unquoted: the
    booleans False and True to a YAML 1.1 reader), that too is committed, and the next fanout and fan-in work."""
    from dvc.utils.hydra import apply_overrides

    fan = _fanout_clone(project, tmp_path_factory.mktemp("baseline"))
    _run(["mkd", "fanout", "--profile", "paper", "--workers", "2"], fan)
    _run(["mkd", "fanin", "--profile", "paper"], fan)
    _run(["git", "add", "-A"], fan)
    _run(["git", "commit", "-qm", "baseline"], fan)
    lr = read_yaml(fan / "params.yaml")["student"]["lr"]
    apply_overrides(str(fan / "params.yaml"), [f"student.lr={lr}"])  # the same values, in DVC's own writing
    assert yaml.safe_load((fan / "params.yaml").read_text())["grid"]["kd"] == [False, True]  # YAML 1.1's reading
    _run(["git", "commit", "-qam", "params.yaml as DVC writes it"], fan)
    r = _run(["mkd", "fanout", "--profile", "paper", "--workers", "2"], fan)
    assert "all 4 cells done" in r.stdout, r.stdout
    _run(["mkd", "fanin", "--profile", "paper"], fan)
    _run(["git", "add", "-A"], fan)
    _run(["git", "commit", "-qm", "after fan-in", "--allow-empty"], fan)
    return fan


def _back_to_the_commit(fan: Path) -> None:
    _run(["git", "reset", "-q", "--hard"], fan)
    _run(["dvc", "checkout", "--force", "-q"], fan)
    assert _changed_stages(fan) == set()


def _stages_run(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out)) - {"validate"}  # validate looks at the data every run


def _stages_previewed(out: str) -> set[str]:
    head, *cells = [line for line in out.splitlines() if line.startswith(("would re-run", "  cell@"))]
    others = head.split(": ", 1)[1].split(", ") if ": " in head else []
    return {*others, *(c.strip() for c in cells)}


def test_the_fix_collect_names_for_an_edited_prediction_file_works_as_written(baseline):
    path = baseline / "results/smoke/cells/smoke-low-teacher-kdon-s0/predictions.csv.gz"
    original = path.read_bytes()
    path.unlink()  # DVC links outputs from its cache: a hand edit replaces the file
    path.write_bytes(original[:-8] + bytes(8))
    r = _run(["mkd", "collect"], baseline, check=False)
    assert r.returncode == 2 and "is not what the cell wrote" in r.stderr, r.stderr
    fix = re.search(r"restore it with `([^`]+)`", r.stderr).group(1)
    assert fix == "dvc checkout --force cell@smoke-low-teacher-on-0"
    _run(shlex.split(fix), baseline)
    assert path.read_bytes() == original
    _run(["mkd", "collect"], baseline)
    _back_to_the_commit(baseline)


# An ablation re-runs the cells it changes, and only those (every cell once declared the whole student section).
ABLATIONS = [  # (what, -S overrides, the stages it must re-run besides collect and analyze)
    ("KD-on objective", ["~student.objective.on.logit_mse", "+student.objective.on.logit_kl=0.5"], ON),  # README's
    ("one init's rate", ["+student.by_init.random.lr=0.001"], {s for s in STAGES if "-random-" in s}),
    ("teacher rate", ["teacher.lr=0.0001"], {"teachers", "logits", "references", *STAGES}),
]


@pytest.mark.parametrize("what, overrides, reruns", ABLATIONS, ids=[a[0] for a in ABLATIONS])
def test_an_ablation_reruns_only_the_cells_it_changes_and_dry_says_which_first(baseline, what, overrides, reruns):
    args = [x for o in overrides for x in ("-S", o)]
    params = (baseline / "params.yaml").read_bytes()
    preview = _run(["mkd", "exp", "--profile", "paper", "--dry", "--", *args], baseline)
    assert (baseline / "params.yaml").read_bytes() == params, "the preview leaves params.yaml as it was"
    assert _stages_previewed(preview.stdout) == reruns | {"collect", "analyze"}, preview.stdout
    assert _changed_stages(baseline) == set(), "the preview ran nothing"
    r = _run(["mkd", "exp", "--profile", "paper", "--", *args], baseline)
    ran = _stages_run(r.stdout + r.stderr)
    assert ran - {"collect", "analyze"} == reruns, (what, sorted(ran))
    _back_to_the_commit(baseline)


def test_fanin_names_the_cells_no_worker_finished_and_trains_nothing(project, tmp_path):
    fan = tmp_path / "fan"
    _run(["git", "clone", "-q", str(project), str(fan)], tmp_path)
    r = _run(["mkd", "fanin", "--profile", "paper"], fan, check=False)
    assert r.returncode == 2 and "4 of 4 cells have not run in a fanout" in r.stderr and "mkd fanout --profile paper" in r.stderr
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
    assert {"teachers", "references", "logits", *STAGES} <= changed


def test_a_student_only_change_reruns_cells_not_the_teacher(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["student"]["lr"] = params["student"]["lr"] * 2  # any change of a student-only value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _changed_stages(project)
    assert set(STAGES) <= changed
    assert not {"prepare", "base", "teachers", "logits"} & changed
    out = _run(["dvc", "repro"], project).stdout
    assert "Stage 'teachers' didn't change, skipping" in out
    assert "Running stage 'cell@smoke-low-random-on-0'" in out


@pytest.mark.parametrize("module, reruns, keeps", [
    ("mkd/analysis/report.py", {"analyze"}, {"prepare", "base", "teachers", "logits", "references", "collect"}),
    ("mkd/pipeline/stages/cell.py", set(STAGES),
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
    assert series == {"teacher[shared]"} | {f"smoke/low/{init}/kd_{kd}" for init, kd in GRID}


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_dvc_yaml_s_cell_stages_are_the_grid_s_cells(profile, tmp_path):
    """dvc.yaml's two cell matrices (cell: every init x grid.seeds; cell_extra: grid.extra_seeds' inits x its seeds)
    name exactly the cells `grid_cells` (fanout, collect, verify) expects, no more, no fewer."""
    from mkd.pipeline.grid import grid_cells, is_cell_stage

    params = validate(merge(read_yaml(REPO / "params.yaml"), load_profile(profile)))
    assert params["grid"]["extra_seeds"]["seeds"], "the profile exercises cell_extra"
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    listed = _run(["dvc", "stage", "list", "--name-only"], tmp_path).stdout.split()
    cells = [s for s in listed if is_cell_stage(s)]
    assert sorted(cells) == sorted(c.stage for c in grid_cells(params))
    assert any(s.startswith("cell_extra@") for s in cells) and len(cells) == len(set(cells))
