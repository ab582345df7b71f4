"""The whole pipeline through the `mkd` CLI on a tiny grid: real MASSIVE rows, the real e5-small teacher.

(The DVC wiring itself runs in CI's smoke job: `bash scripts/run.sh smoke`.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mkd.cli import main
from mkd.config import load_profile, merge, read_yaml, validate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(massive_dir, e5_small_dir, tmp_path_factory):
    import yaml

    d = tmp_path_factory.mktemp("pipeline")
    params = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    params["data"]["massive"] = str(massive_dir)
    params["grid"].update(resources=["low"], seeds=[0])
    validate(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(d)
    try:
        for stage in ("prepare", "build-base", "train-teachers", "references", "cache-logits"):
            assert main(["-q", stage]) == 0, stage
        for init in ("random", "pretrained", "teacher"):
            for kd in ("off", "on"):
                assert main(["-q", "cell", "--language-set", "smoke", "--resource", "low", "--init", init, "--kd", kd, "--seed", "0"]) == 0
        yield d
    finally:
        os.chdir(old)


def test_every_cell_writes_numeric_metrics_and_provenance(workdir):
    cells = sorted((workdir / "results" / "smoke" / "cells").iterdir())
    assert len(cells) == 6
    for cell in cells:
        metrics = json.loads((cell / "metrics.json").read_text())
        info = json.loads((cell / "info.json").read_text())
        for split in ("dev", "test"):
            assert set(metrics[split]) == {"accuracy", "macro_f1", "distinct_predictions"}
            assert 1 <= metrics[split]["distinct_predictions"] <= 60  # how many labels it predicts (collapse check)
            assert set(metrics[split]["accuracy"]) == {"en-US", "de-DE", "sw-KE", "avg"}
            assert all(0.0 <= v <= 1.0 for v in metrics[split]["accuracy"].values())

        def numeric(x):
            return all(numeric(v) for v in x.values()) if isinstance(x, dict) else isinstance(x, (int, float))

        assert numeric(metrics)
        assert info["cell"]["id"] == cell.name and info["provenance"]["torch"]
        assert info["training"]["train_examples_per_second"] > 0
    # checkpoints of finished cells are cleaned up
    assert not list((workdir / "artifacts" / "smoke" / "checkpoints").glob("cell-*"))


def test_teacher_is_well_above_chance_and_teacher_init_inherits_it(workdir):
    teacher = json.loads((workdir / "artifacts" / "smoke" / "teachers" / "shared" / "teacher_metrics.json").read_text())
    assert teacher["metrics"]["test"]["accuracy"]["avg"] > 1 / 60
    cells = workdir / "results" / "smoke" / "cells"
    kd_logits = torch_load(workdir / "artifacts" / "smoke" / "logits" / "smoke-low.pt")
    assert kd_logits["logits"].shape == (len(kd_logits["keys"]), 60)
    info = json.loads((cells / "smoke-low-teacher-kdon-s0" / "info.json").read_text())
    assert info["objective"] == {"ce": 0.5, "logit_mse": 0.5}
    assert info["layer_map"] == [11]


def torch_load(path):
    import torch

    return torch.load(path, weights_only=False)


def test_rerunning_a_cell_gives_identical_metrics(workdir, monkeypatch):
    cell = workdir / "results" / "smoke" / "cells" / "smoke-low-pretrained-kdon-s0"
    before = (cell / "metrics.json").read_text()
    shutil.rmtree(cell)
    monkeypatch.chdir(workdir)
    assert main(["-q", "cell", "--language-set", "smoke", "--resource", "low", "--init", "pretrained", "--kd", "on", "--seed", "0"]) == 0
    after = json.loads((cell / "metrics.json").read_text())
    before = json.loads(before)
    after.pop("train_examples_per_second"), before.pop("train_examples_per_second")
    assert after == before


def test_collect_and_analyze_refuse_stale_results_and_build_tables(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["-q", "collect"]) == 0
    rows = (workdir / "results" / "smoke" / "cells.csv").read_text().splitlines()
    assert rows[0] == "profile,cell,language_set,resource,init,kd,seed,split,locale,accuracy,macro_f1"
    assert len(rows) == 1 + 6 * 2 * 3
    # the floor and ceiling travel with the cells: a probe per training set, the teacher, chance
    refs = (workdir / "results" / "smoke" / "references.csv").read_text().splitlines()
    assert refs[0] == "profile,reference,language_set,resource,trained_on,split,locale,accuracy,macro_f1"
    kinds = {(r.split(",")[1], r.split(",")[2], r.split(",")[3]) for r in refs[1:]}
    assert {("probe", "smoke", "low"), ("teacher", "smoke", "low"), ("chance", "smoke", "low"), ("probe", "smoke", "full")} <= kinds
    training = (workdir / "results" / "smoke" / "training.csv").read_text().splitlines()
    assert len(training) == 1 + 6 and "initial_dev_accuracy" in training[0]
    assert main(["-q", "analyze"]) == 0
    tables = workdir / "paper_tables" / "smoke"
    assert (tables / "claims.md").exists() and (tables / "main_table.tex").exists()
    claims = (tables / "claims.md").read_text()
    assert "## Summary" in claims and "teacher_beats_probe" in claims and "frozen probe (floor)" in (tables / "main_table.tex").read_text()
    # a cell made with other parameters is refused, never mixed in
    info_path = workdir / "results" / "smoke" / "cells" / "smoke-low-random-kdoff-s0" / "info.json"
    info = json.loads(info_path.read_text())
    info["params_digest"] = "0" * 16
    info_path.write_text(json.dumps(info))
    assert main(["-q", "collect"]) == 2
    assert "smoke-low-random-kdoff-s0: result was made with other parameters" in capsys.readouterr().err


def test_a_cell_outside_the_grid_is_refused(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["-q", "cell", "--language-set", "smoke", "--resource", "high", "--init", "teacher", "--kd", "on", "--seed", "0"]) == 2
    assert "not in the grid" in capsys.readouterr().err
