"""The DVC wiring: stages declare their real deps and params, so a student-only change re-runs cells, not the teacher.

A tiny copy of the project (dvc.yaml, params.yaml with smoke values and a 2-cell grid, the mkd package) in a
temporary git repository; `dvc repro` runs there for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mkd.config import load_profile, merge, read_yaml, validate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, check=True):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
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
    params["data"]["massive"] = str(massive_dir)
    params["data"]["train_sizes"] = {"low": 4, "high": 8, "full": 30}
    params["teacher"]["epochs"] = 1
    params["grid"].update(resources=["low"], inits=["random", "teacher"], kd=["on"], seeds=[0])
    validate(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], d)
    _run(["dvc", "init", "-q"], d)
    _run(["git", "add", "-A"], d)
    _run(["git", "commit", "-qm", "init"], d)
    _run(["dvc", "repro"], d)
    return d


def _changed_stages(project) -> set[str]:
    out = _run(["dvc", "status", "--json"], project).stdout
    import json

    return set(json.loads(out or "{}"))


def test_repro_materializes_every_cell_and_then_nothing_is_stale(project):
    cells = sorted(p.name for p in (project / "results" / "smoke" / "cells").iterdir())
    assert cells == ["smoke-low-random-kdon-s0", "smoke-low-teacher-kdon-s0"]
    assert (project / "paper_tables" / "smoke" / "claims.md").exists()
    assert _changed_stages(project) == set()


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


def test_a_teacher_change_reruns_the_teacher_and_everything_after_it(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["teacher"]["lr"] = 1.0e-4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _changed_stages(project)
    assert "teachers" in changed and not {"prepare", "base"} & changed


def test_plots_show_draws_per_locale_accuracy(project):
    _run(["dvc", "plots", "show", "-o", "plots_out"], project)
    html = (project / "plots_out" / "index.html").read_text()
    assert "per_locale.csv" in html
