"""The whole pipeline through the `mkd` CLI on a tiny grid: real MASSIVE rows, the real e5-small teacher.

(The DVC wiring itself runs in CI's smoke job: `bash scripts/run.sh smoke`.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import shutil
from pathlib import Path

import pytest

from mkd.cli import main
from conftest import TEST_THREADS
from mkd.config import load_profile, merge, read_yaml, validate
from mkd.core.errors import ConfigError
from mkd.pipeline.grid import Paths

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# --- which params each stage reads, recorded while the fixture runs the stages (declared = read, below)
READS: dict[str, set[str]] = {}  # CLI command -> dotted params keys its stage function read
CELL_READS: dict[tuple[str, str], set[str]] = {}  # (init, kd) of a cell -> the keys that cell read
RAN: dict[str, set[str]] = {}    # CLI command -> the mkd source files (repo-relative) whose code its stage ran
MKD_SRC = str(REPO / "mkd") + os.sep
# CLI command of each dvc.yaml stage, and the pipeline function it runs
STAGE_COMMANDS = {"prepare": "prepare", "base": "build-base", "teachers": "train-teachers", "references": "references",
                  "logits": "cache-logits", "cell": "cell", "collect": "collect", "analyze": "analyze"}
STAGE_FUNCTIONS = {"prepare": "prepare", "build-base": "build_base", "train-teachers": "train_teachers",
                   "references": "references", "cache-logits": "cache_logits", "cell": "run_cell",
                   "collect": "collect", "analyze": "analyze"}


class RecordingParams(dict):
    """A params tree that notes each leaf key read, and a whole section when code iterates over it."""

    def __init__(self, tree: dict, reads: set, prefix: str = ""):
        super().__init__(tree)
        self._reads, self._prefix = reads, prefix

    def _seen(self, key, value):
        path = self._prefix + str(key)
        if isinstance(value, dict):
            return RecordingParams(value, self._reads, path + ".")
        self._reads.add(path)
        return value

    def __getitem__(self, key):
        return self._seen(key, super().__getitem__(key))

    def get(self, key, default=None):
        return self._seen(key, super().get(key, default))

    def _whole(self, view):  # iterating over a section reads all of it
        self._reads.add(self._prefix.rstrip(".") or "<all>")
        return view

    def items(self):
        return self._whole(super().items())

    def keys(self):
        return self._whole(super().keys())

    def values(self):
        return self._whole(super().values())

    def __iter__(self):
        return self._whole(super().__iter__())

    def __contains__(self, key):  # `name in section` depends on all of its keys
        return self._whole(super().__contains__(key))


def plain(tree):
    """A recorded tree as ordinary dicts and lists, read without recording."""
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in dict.items(tree)}
    return [plain(v) for v in tree] if isinstance(tree, (list, tuple)) else tree


def recording(monkeypatch_setattr):
    """Patch the stage functions so each records the params keys it reads into READS[its CLI command]."""
    import mkd.pipeline.stages as pipeline

    def recorded(command, stage):
        def run(params, *args, **kwargs):
            ran = RAN.setdefault(command, set())

            def note(frame, event, arg):  # a profile hook sees every Python call (also a lazily imported module's body)
                if event == "call" and frame.f_code.co_filename.startswith(MKD_SRC):
                    ran.add(os.path.relpath(frame.f_code.co_filename, REPO))

            before = sys.getprofile()
            sys.setprofile(note)
            reads = set()
            try:
                return stage(RecordingParams(plain(params), reads), *args, **kwargs)
            finally:
                sys.setprofile(before)
                READS.setdefault(command, set()).update(reads)
                if command == "cell":
                    CELL_READS.setdefault((args[0].init, args[0].kd), set()).update(reads)

        return run

    for command, function in STAGE_FUNCTIONS.items():
        monkeypatch_setattr(pipeline, function, recorded(command, getattr(pipeline, function)))
    # Fingerprints (a cell's digest, a teacher's checkpoint folder) take whole upstream sections too; DVC re-runs
    # the stage for those through the artifacts it depends on, so a fingerprint's reading is not a read.
    from mkd.pipeline import fingerprints

    digest, cell_digest = fingerprints.digest, fingerprints.cell_digest
    monkeypatch_setattr(fingerprints, "digest", lambda obj: digest(plain(obj)))
    monkeypatch_setattr(fingerprints, "cell_digest", lambda params, cell: cell_digest(plain(params), cell))


@pytest.fixture(scope="module")
def workdir(massive_dir, e5_small_dir, tmp_path_factory):
    import yaml

    d = tmp_path_factory.mktemp("pipeline")
    params = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    params["threads"] = TEST_THREADS
    params["data"]["massive"] = str(massive_dir)
    params["grid"].update(resources=["low"], seeds=[0], extra_seeds={"inits": [], "seeds": []})
    validate(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(d)
    patch = pytest.MonkeyPatch()
    recording(patch.setattr)
    try:
        for stage in ("prepare", "build-base", "train-teachers", "references", "cache-logits"):
            assert main(["-q", stage]) == 0, stage
        for init in ("random", "pretrained", "teacher"):
            for kd in ("off", "on"):
                assert main(["-q", "cell", "--language-set", "smoke", "--resource", "low", "--init", init, "--kd", kd, "--seed", "0"]) == 0
        yield d
    finally:
        patch.undo()
        os.chdir(old)


# Read by every stage but no result parameter: `profile` names the folders (dvc.yaml's paths carry ${profile}, so
# another profile is another stage); `scale` is a sentence copied into reports. (`threads` / `cell_threads` are
# read only by the stages that compute with torch, and change their numbers: those declare them.)
NOT_RESULT_PARAMS = {"profile", "scale"}


@pytest.fixture(scope="module")
def every_stage(workdir):
    """The workdir after collect and analyze too (the workdir fixture ran the others), each once under recording."""
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for command in ("collect", "analyze"):
            READS.pop(command, None)
            RAN.pop(command, None)
            assert main(["-q", command]) == 0
    finally:
        os.chdir(old)
    return workdir


def test_each_stage_reads_only_the_params_dvc_yaml_declares_for_it(every_stage):
    """Declared = read: a key a stage reads but does not declare would be changed by `dvc exp run -S` without the
    stage re-running (data.max_length once was), and the results would silently belong to other parameters."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    undeclared = {}
    for stage, command in STAGE_COMMANDS.items():
        declared = [str(x) for x in stages[stage].get("params", [])]
        if stage == "cell":  # a matrix: its declarations name the item's init and KD setting
            declared = sorted({d for init, kd in CELL_READS for d in _cell_declarations(init, kd)})
        reads = READS[command] - NOT_RESULT_PARAMS
        assert reads, f"nothing recorded for {command}"
        missing = sorted(r for r in reads if not any(r == d or r.startswith(d + ".") for d in declared))
        if missing:
            undeclared[stage] = missing
    assert not undeclared, f"stages read params that dvc.yaml does not declare for them: {undeclared}"


# Declared because they change a cell's numbers, read by the CLI before the stage function runs (threads before
# torch computes, the kernels before torch starts): test_the_stages_whose_numbers_depend_on_threads_declare_them.
READ_BY_THE_CLI = {"threads", "cpu_isa", "cell_threads"}


def _cell_declarations(init: str, kd: str) -> list[str]:
    import yaml

    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["cell"]["params"]
    return [str(d).replace("${item.init}", init).replace("${item.kd}", kd) for d in declared]


def test_each_cell_declares_only_the_params_it_reads(every_stage):
    """The converse of declared = read, for the cells: a key a cell declares but never reads re-runs it for
    nothing (every cell once declared the whole student section, so an objective ablation re-ran the KD-off
    cells too). Each of the six init x KD cells declares exactly what it read: its own init's rates and its own
    KD setting's objective, not the other's."""
    assert len(CELL_READS) == 6, sorted(CELL_READS)
    for (init, kd), reads in sorted(CELL_READS.items()):
        declared = _cell_declarations(init, kd)
        reads = reads - NOT_RESULT_PARAMS
        unread = [d for d in declared if d not in READ_BY_THE_CLI
                  and not any(r == d or r.startswith(d + ".") or d.startswith(r + ".") for r in reads)]
        assert not unread, f"cell {init}/kd {kd} declares params it never reads: {unread}"
        missing = sorted(r for r in reads if not any(r == d or r.startswith(d + ".") for d in declared))
        assert not missing, f"cell {init}/kd {kd} reads params it does not declare: {missing}"
        others = {i for i, _ in CELL_READS} - {init}
        assert not any(f"student.by_init.{i}" in r for r in reads for i in others), (init, kd, sorted(reads))
        assert not any(r.startswith(f"student.objective.{'on' if kd == 'off' else 'off'}") for r in reads)


def test_a_cell_s_digest_follows_what_it_reads():
    """The digest collect checks (and the fanout ledger and checkpoint folders are keyed by) changes with the
    cell's own objective and rates, not with another KD setting's or init's: after an objective ablation the
    KD-off cells DVC kept are still current."""
    from mkd.pipeline.fingerprints import cell_digest
    from mkd.pipeline.grid import Cell

    params = validate(merge(read_yaml(REPO / "params.yaml"), load_profile("smoke")))
    off, on = Cell("smoke", "low", "teacher", "off", 0), Cell("smoke", "low", "teacher", "on", 0)
    random_off = Cell("smoke", "low", "random", "off", 0)
    ablated = merge(params, {"student": {"objective": {"on": {"logit_kl": 0.5}}}})  # a loss added to KD on
    assert cell_digest(ablated, off) == cell_digest(params, off) and cell_digest(ablated, on) != cell_digest(params, on)
    rated = merge(params, {"student": {"by_init": {"teacher": {"lr": 1e-3}}}})
    assert cell_digest(rated, random_off) == cell_digest(params, random_off)
    assert cell_digest(rated, off) != cell_digest(params, off)
    taught = merge(params, {"teacher": {"lr": 1e-3}})  # reaches every cell through the teacher's weights
    assert cell_digest(taught, random_off) != cell_digest(params, random_off)


# Code a stage runs that need not be a dependency: it computes no result. The entry point and parameter handling
# (params are declared key by key, checked above), cell names and paths, the plumbing (atomic writes, hashing,
# errors, the cache root), the record of what ran (provenance) and the dvc.lock backup.
NOT_RESULT_CODE = ("mkd/__init__.py", "mkd/cli.py", "mkd/config.py", "mkd/axes.py", "mkd/core/", "mkd/pipeline/grid.py",
                   "mkd/pipeline/provenance.py", "mkd/pipeline/lockfile.py")


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_each_stage_declares_the_mkd_code_it_runs(every_stage):
    """Declared = run, for code: every mkd module whose code ran inside a stage is among the stage's dvc.yaml deps
    (the module or its package), so editing it re-runs the stage; and no stage but analyze depends on the analysis,
    so a change there never re-trains a teacher or a cell."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    undeclared = {}
    for stage, command in STAGE_COMMANDS.items():
        deps = [str(d) for d in stages[stage]["deps"] if str(d).startswith("mkd/")]
        for d in deps:
            assert (REPO / d).exists(), f"dvc.yaml: stage {stage} declares {d}, which does not exist"
        ran = RAN[command]
        assert any(p.startswith("mkd/pipeline/stages/") for p in ran), f"nothing recorded for {command}"
        missing = sorted(p for p in ran if not _covered(p, deps) and not _covered(p, NOT_RESULT_CODE))
        if missing:
            undeclared[stage] = missing
        if stage != "analyze":
            assert not any(d.startswith("mkd/analysis") for d in deps), (stage, deps)
    assert not undeclared, f"stages run mkd code that dvc.yaml does not declare for them: {undeclared}"


def test_the_stages_whose_numbers_depend_on_threads_declare_them():
    """The thread count changes float results, so a stage run with another count must re-run under DVC."""
    import yaml

    from mkd.cli import THREAD_PARAMS

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, command in STAGE_COMMANDS.items():
        declared = [str(x) for x in stages[stage].get("params", [])]
        if command in THREAD_PARAMS:
            assert "threads" in declared and THREAD_PARAMS[command] in declared, (stage, declared)
            assert "cpu_isa" in declared, (stage, declared)  # the kernels' instruction set changes them too
    assert THREAD_PARAMS["cell"] == "cell_threads"


def test_every_cell_writes_its_predictions_and_provenance(workdir):
    from mkd.data import LabelVocab, load_prepared
    from mkd.evaluation.predictions import COLUMNS, Predictions
    import pandas as pd  # what a user reads the predictions with

    data = load_prepared(workdir / "artifacts" / "smoke" / "data")
    eval_rows = {(split, e.locale, e.id, e.intent) for split in ("dev", "test")
                 for e in data.split(["en-US", "de-DE", "sw-KE"], split)}
    cells = sorted((workdir / "results" / "smoke" / "cells").iterdir())
    assert len(cells) == 6
    for cell in cells:
        assert {p.name for p in cell.iterdir()} == {"info.json", "predictions.csv.gz"}
        predictions = Predictions.read(cell / "predictions.csv.gz")
        info = json.loads((cell / "info.json").read_text())
        # every dev and test row of every evaluation locale once, with a predicted intent of the vocabulary
        assert {r[:4] for r in predictions.rows} == eval_rows and len(predictions.rows) == len(eval_rows)
        assert {r[4] for r in predictions.rows} <= set(data.labels.intents)
        assert (cell / "predictions.csv.gz").stat().st_size < 20_000  # small: ids and names, gzip
        frame = pd.read_csv(cell / "predictions.csv.gz")
        assert tuple(frame.columns) == COLUMNS and len(frame) == len(eval_rows)
        scores = predictions.scores(LabelVocab.load(workdir / "artifacts" / "smoke" / "data" / "labels.json"))
        for split in ("dev", "test"):
            assert 1 <= scores[split]["distinct_predictions"] <= 60  # how many labels it predicts (collapse check)
            assert set(scores[split]["accuracy"]) == {"en-US", "de-DE", "sw-KE", "avg"}
            assert all(0.0 <= v <= 1.0 for v in scores[split]["accuracy"].values())
        assert 0.0 <= info["training"]["initial_dev_accuracy"] <= 1.0
        assert info["cell"]["id"] == cell.name and info["provenance"]["torch"]
        prov = info["provenance"]  # what `mkd verify` compares when a re-run's numbers differ
        assert len(prov["packages_sha256"]) == 16 and prov["packages"] > 50 and prov["cpu"] and prov["threads"] >= 1
        assert "git_commit" in prov  # None here: the test's work folder is no git checkout
        assert info["training"]["train_examples_per_second"] > 0
    # checkpoints of finished cells are cleaned up
    assert not list((workdir / "artifacts" / "smoke" / "checkpoints").glob("cell-*"))


def test_teacher_is_well_above_chance_and_teacher_init_inherits_it(workdir):
    teacher = json.loads((workdir / "artifacts" / "smoke" / "teachers" / "shared" / "teacher_metrics.json").read_text())
    assert teacher["metrics"]["test"]["accuracy"]["avg"] > 1 / 60
    cells = workdir / "results" / "smoke" / "cells"
    kd_logits = torch_load(workdir / "artifacts" / "smoke" / "logits" / "smoke-low-s0.pt")
    assert kd_logits["logits"].shape == (len(kd_logits["keys"]), 60)
    info = json.loads((cells / "smoke-low-teacher-kdon-s0" / "info.json").read_text())
    assert info["objective"] == {"ce": 0.5, "logit_mse": 0.5}
    assert info["layer_map"] == [11]


def torch_load(path):
    import torch

    return torch.load(path, weights_only=False)


def _spy_compute_device(monkeypatch) -> list[str]:
    """Record which module asks mkd.core.device where to compute (the answer stays the real one)."""
    from mkd.core import device

    asked, real = [], device.compute_device

    def spy():
        asked.append(sys._getframe(1).f_globals["__name__"])
        return real()

    monkeypatch.setattr(device, "compute_device", spy)
    return asked


def test_rerunning_a_cell_gives_identical_predictions(workdir, monkeypatch):
    cell = workdir / "results" / "smoke" / "cells" / "smoke-low-pretrained-kdon-s0"
    before = (cell / "predictions.csv.gz").read_bytes()
    shutil.rmtree(cell)
    monkeypatch.chdir(workdir)
    asked = _spy_compute_device(monkeypatch)
    assert main(["-q", "cell", "--language-set", "smoke", "--resource", "low", "--init", "pretrained", "--kd", "on", "--seed", "0"]) == 0
    assert (cell / "predictions.csv.gz").read_bytes() == before
    # the student's first evaluation runs where the loop trains it (not left on a GPU machine's host CPU)
    assert {"mkd.pipeline.stages.cell", "mkd.training.loop"} <= set(asked)


def test_the_probe_and_the_teacher_logits_compute_where_the_loop_does_with_the_same_numbers(workdir, monkeypatch):
    """The stages outside the training loop forward ~4.5 M rows at the paper's size: they ask compute_device too
    (a GPU where there is one); on the CPU the references and the cached logits come back the same."""
    import torch

    monkeypatch.chdir(workdir)
    paths = Paths(read_yaml(workdir / "params.yaml"), workdir)
    refs_before = json.loads((paths.results / "references.json").read_text())
    logits_before = {f.name: torch.load(f, weights_only=False) for f in sorted(paths.logits.glob("*.pt"))}
    asked = _spy_compute_device(monkeypatch)
    assert main(["-q", "references"]) == 0 and main(["-q", "cache-logits"]) == 0
    assert {"mkd.pipeline.stages.references", "mkd.pipeline.stages.logits"} <= set(asked)
    refs = json.loads((paths.results / "references.json").read_text())
    for name, probe in refs_before["probes"].items():
        assert {k: v for k, v in refs["probes"][name].items() if k != "seconds"} == \
            {k: v for k, v in probe.items() if k != "seconds"}, name
    logits = {f.name: torch.load(f, weights_only=False) for f in sorted(paths.logits.glob("*.pt"))}
    assert logits.keys() == logits_before.keys()
    for name, cached in logits.items():
        assert cached["keys"] == logits_before[name]["keys"] and torch.equal(cached["logits"], logits_before[name]["logits"])


def test_collect_holds_one_cell_s_parsed_predictions_at_a_time(workdir, monkeypatch):
    """At the paper's size a cell predicts 260,364 rows: collect parses and scores one cell at a time (all 36 held
    as parsed rows would take ~3.4 GB), with the same tables."""
    import weakref

    from mkd.evaluation.predictions import Predictions

    monkeypatch.chdir(workdir)
    assert main(["-q", "collect"]) == 0
    tables = {f: (workdir / "results" / "smoke" / f).read_bytes() for f in ("cells.csv", "training.csv", "summary.json")}
    parsed, alive_when_scored = [], []
    from_bytes, scores = Predictions.from_bytes.__func__, Predictions.scores

    def tracked_from_bytes(cls, data, source="predictions"):
        p = from_bytes(cls, data, source)
        parsed.append(weakref.ref(p))
        return p

    def tracked_scores(self, labels, scorers=None):
        alive_when_scored.append(sum(r() is not None for r in parsed))
        return scores(self, labels, scorers)

    monkeypatch.setattr(Predictions, "from_bytes", classmethod(tracked_from_bytes))
    monkeypatch.setattr(Predictions, "scores", tracked_scores)
    assert main(["-q", "collect"]) == 0
    assert len(parsed) >= 6 and alive_when_scored == [1] * len(parsed)
    assert {f: (workdir / "results" / "smoke" / f).read_bytes() for f in tables} == tables


def test_collect_and_analyze_refuse_stale_results_and_build_tables(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["-q", "collect"]) == 0
    rows = (workdir / "results" / "smoke" / "cells.csv").read_text().splitlines()
    assert rows[0] == "profile,cell,language_set,resource,init,kd,seed,split,locale,accuracy,macro_f1"
    assert len(rows) == 1 + 6 * 2 * 3
    # the floor and ceiling travel with the cells: a probe per training set, the teacher, chance
    refs = (workdir / "results" / "smoke" / "references.csv").read_text().splitlines()
    assert refs[0] == "profile,reference,language_set,resource,trained_on,split,locale,accuracy,macro_f1,probe_c"
    kinds = {(r.split(",")[1], r.split(",")[2], r.split(",")[3]) for r in refs[1:]}
    assert {("probe", "smoke", "low"), ("teacher", "smoke", "low"), ("chance", "smoke", "low"), ("probe", "smoke", "full")} <= kinds
    # the floor is tuned: each probe's C is the grid's best on its training locales' dev rows, and reported
    references = json.loads((workdir / "results" / "smoke" / "references.json").read_text())
    for key, probe in references["probes"].items():
        for fit in probe.get("draws", [probe]):   # a probe per seed's draw where seeds draw their own rows
            scores = fit["dev_accuracy_by_c"]
            assert set(scores) == {"0.001", "0.01", "0.1", "1", "10"}
            assert scores[f"{fit['c']:g}"] == max(scores.values())
        assert {r.split(",")[-1] for r in refs[1:] if r.split(",")[1] == "probe" and r.split(",")[4] == key} == {f"{probe['c']}"}
    training = [r.split(",") for r in (workdir / "results" / "smoke" / "training.csv").read_text().splitlines()]
    assert len(training) == 1 + 6 and "initial_dev_accuracy" in training[0]
    col = {name: i for i, name in enumerate(training[0])}
    for row in training[1:]:  # every cell under the one step budget (12), stopped by it or by patience (2)
        assert int(row[col["steps"]]) <= 12 and row[col["stopped"]] in ("budget", "patience")
        assert (row[col["stopped"]] == "budget") == (int(row[col["steps"]]) == 12)
    # learning curves against optimizer steps for `dvc plots show`: the teacher's and each variant's over seeds
    curves = [r.split(",") for r in (workdir / "results" / "smoke" / "curves.csv").read_text().splitlines()]
    assert curves[0] == ["series", "step", "runs_training", "train_loss", "dev_accuracy", "best_dev_accuracy",
                         "best_dev_accuracy_min", "best_dev_accuracy_max"]
    teacher = json.loads((workdir / "artifacts" / "smoke" / "teachers" / "shared" / "teacher_metrics.json").read_text())
    assert [r[1:5] for r in curves if r[0] == "teacher[shared]"] == [
        [str(h["step"]), "1", str(round(h["train_loss"], 6)), str(round(h["dev_accuracy"], 6))]
        for h in teacher["training"]["history"]]
    info = json.loads((workdir / "results" / "smoke" / "cells" / "smoke-low-teacher-kdon-s0" / "info.json").read_text())
    one_seed = [r for r in curves if r[0] == "smoke/low/teacher/kd_on"]  # one seed: its own curve, from step 0
    assert [int(r[1]) for r in one_seed] == [0] + [h["step"] for h in info["training"]["history"]]
    assert float(one_seed[0][4]) == round(info["training"]["initial_dev_accuracy"], 6)
    best = [round(max([info["training"]["initial_dev_accuracy"]] + [h["dev_accuracy"] for h in info["training"]["history"][:k]]), 6)
            for k in range(len(one_seed))]
    assert [float(r[5]) for r in one_seed] == best
    assert {r[0] for r in curves[1:]} == {"teacher[shared]"} | {f"smoke/low/{i}/kd_{k}" for i in ("random", "pretrained", "teacher") for k in ("on", "off")}
    summary = json.loads((workdir / "results" / "smoke" / "summary.json").read_text())
    assert summary["teacher_test_accuracy"] == {"shared": teacher["metrics"]["test"]["accuracy"]["avg"]}
    assert main(["-q", "analyze"]) == 0
    tables = workdir / "paper_tables" / "smoke"
    assert (tables / "claims.md").exists() and (tables / "main_table.tex").exists()
    claims = (tables / "claims.md").read_text()
    assert "## Summary" in claims and "teacher_beats_probe" in claims and "frozen probe (floor)" in (tables / "main_table.tex").read_text()
    # a cell made with other parameters is refused, never mixed in
    info_path = workdir / "results" / "smoke" / "cells" / "smoke-low-random-kdoff-s0" / "info.json"
    original = info_path.read_text()
    info = json.loads(original)
    info["params_digest"] = "0" * 16
    info_path.write_text(json.dumps(info))
    try:
        assert main(["-q", "collect"]) == 2
        assert "smoke-low-random-kdoff-s0: result was made with other parameters" in capsys.readouterr().err
    finally:
        info_path.write_text(original)


def test_collect_refuses_a_hand_edited_predictions_file_and_names_the_way_back(workdir, capsys, monkeypatch):
    from mkd.evaluation.predictions import Predictions

    monkeypatch.chdir(workdir)
    path = workdir / "results" / "smoke" / "cells" / "smoke-low-teacher-kdon-s0" / "predictions.csv.gz"
    original = path.read_bytes()
    rows = list(Predictions.from_bytes(original).rows)
    i = next(i for i, r in enumerate(rows) if r[3] != r[4])
    rows[i] = rows[i][:4] + (rows[i][3],)  # one wrong prediction made right
    path.write_bytes(Predictions(tuple(rows)).to_bytes())
    try:
        assert main(["-q", "collect"]) == 2
        err = capsys.readouterr().err
        assert f"{Path('results/smoke/cells/smoke-low-teacher-kdon-s0/predictions.csv.gz')} is not what the cell wrote" in err
        assert "dvc checkout --force cell@smoke-low-teacher-on-0" in err  # run as written in tests/test_dvc.py
    finally:
        path.write_bytes(original)
    assert main(["-q", "collect"]) == 0


def test_verify_reruns_a_cell_and_names_what_differs_from_the_reference(workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(workdir)
    assert main(["-q", "collect"]) == 0  # writes cells.csv and the provenance verify compares with
    cell = "smoke-low-teacher-kdon-s0"
    assert main(["-q", "verify", "--cell", cell]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 cells identical" in out and f"{cell}: identical" in out
    # a reference that differs in one value: exit 1, the value named, and what in the environment differs
    rows = (workdir / "results" / "smoke" / "cells.csv").read_text().splitlines()
    i = next(i for i, r in enumerate(rows) if r.startswith(f"smoke,{cell},") and ",test,de-DE," in r)
    fields = rows[i].split(",")
    fields[9] = repr(float(fields[9]) + 1 / 30)
    rows[i] = ",".join(fields)
    edited = tmp_path / "cells.csv"
    edited.write_text("\n".join(rows) + "\n")
    assert main(["-q", "verify", "--cell", cell, "--reference", str(edited)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT in 1 values" in out and "test de-DE accuracy: committed" in out and "provenance: identical" in out
    assert not list((workdir / "artifacts" / "smoke" / "verify").glob("2*")), "the scratch workspace is removed"
    assert main(["-q", "verify", "--cell", "smoke-low-nope-kdon-s0"]) == 2
    assert "not cells of this grid" in capsys.readouterr().err


@pytest.mark.parametrize("kd_loss", ["logit_kl", "hidden_mse", "hidden_cos", "attention_mse", "attention_kl"])  # logit_mse: the grid's own KD-on cells
def test_every_registered_kd_loss_trains_a_kd_on_cell(workdir, monkeypatch, kd_loss):
    """The cell provides what the objective's losses declare they need: hidden_mse gets the teacher run online
    (as `kd_loss: hidden_mse` it once got nothing unless hidden_weight > 0, and every KD-on cell failed)."""
    import yaml

    from mkd.training.losses import LOSSES, objective_for
    from mkd.pipeline.grid import Cell, Paths
    from mkd.pipeline.stages import run_cell
    from mkd.pipeline.verify import scratch_workspace

    assert set(LOSSES) - {"ce"} == {"logit_mse", "logit_kl", "hidden_mse", "hidden_cos", "attention_mse",
                                    "attention_kl"}  # a new loss: add it here
    monkeypatch.chdir(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["student"]["objective"]["on"] = {"ce": 0.5, kd_loss: 0.5}
    validate(params)
    scratch = scratch_workspace(params, workdir)  # upstream artifacts linked, outputs apart from the real cells
    try:
        cell = Cell("smoke", "low", "teacher", "on", 0)
        predictions = run_cell(params, cell, root=scratch)
        info = json.loads((Paths(params, scratch).cell_dir(cell) / "info.json").read_text())
    finally:
        shutil.rmtree(scratch)
    assert info["objective"] == objective_for(params["student"], "on").weights == {"ce": 0.5, kd_loss: 0.5}
    assert info["loss_options"] == ({"logit_kl": {"temperature": 2.0}} if kd_loss == "logit_kl" else {})
    assert len(predictions.rows) > 0 and info["training"]["steps"] > 0


def test_a_cell_outside_the_grid_is_refused(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["-q", "cell", "--language-set", "smoke", "--resource", "high", "--init", "teacher", "--kd", "on", "--seed", "0"]) == 2
    assert "not in the grid" in capsys.readouterr().err


def test_a_registered_initialization_runs_and_reaches_the_tables_and_claims(workdir, monkeypatch):
    """A new init strategy is one `@register_init` function: validation accepts it in grid.inits, cells train
    with it, and collect, the tables and the claims (claim 4 compares KD on/off within each init; the gates
    check each init learns) carry its rows."""
    import yaml

    from mkd.models import students
    from mkd.pipeline.grid import Cell, Paths
    from mkd.pipeline.stages import analyze, collect, run_cell
    from mkd.pipeline.verify import scratch_workspace

    monkeypatch.setattr(students, "INITIALIZERS", dict(students.INITIALIZERS))  # the registration is undone after

    @students.register_init("teacher_body")
    def teacher_body(student, sources):  # the teacher's body, a fresh head
        students.copy_weights(student, sources.load("teacher"), sources.mapping, copy_head=False)

    monkeypatch.chdir(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["grid"]["inits"] = [*params["grid"]["inits"], "teacher_body"]
    params["student"]["by_init"]["teacher_body"] = {}  # every grid init has its entry (its cells declare it)
    params = validate(params)
    scratch = scratch_workspace(params, workdir)
    try:
        results = Paths(params, scratch).results
        shutil.copytree(workdir / "results" / "smoke" / "cells", results / "cells")  # the grid's other cells
        shutil.copy(workdir / "results" / "smoke" / "references.json", results)
        for kd in ("off", "on"):
            run_cell(params, Cell("smoke", "low", "teacher_body", kd, 0), root=scratch)
        collect(params, scratch)
        analyze(params, scratch)
        cells = (results / "cells.csv").read_text()
        table = (Paths(params, scratch).tables / "main_table.tex").read_text()
        claims = (Paths(params, scratch).tables / "claims.md").read_text()
    finally:
        shutil.rmtree(scratch)
    assert ",teacher_body,off," in cells and ",teacher_body,on," in cells
    assert "teacher\\_body" in table
    assert "teacher_body init, KD on vs teacher_body init, KD off" in claims  # claim 4 within the new init
    assert "smoke / teacher_body init" in claims         # the init_learns gate


def test_student_by_init_gives_one_init_its_own_rates_and_leaves_the_others(workdir, monkeypatch):
    """student.by_init reaches the training of that init's cells only: a pretrained-init student given a learning
    rate of ~0 ends where its initialization put it, and its info.json names the rates it trained with."""
    import yaml

    from mkd.pipeline.grid import Cell, Paths
    from mkd.pipeline.stages import run_cell
    from mkd.pipeline.verify import scratch_workspace

    monkeypatch.chdir(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["student"]["by_init"]["pretrained"] = {"lr": 1.0e-30, "head_lr": 1.0e-30}
    params = validate(params)
    scratch = scratch_workspace(params, workdir)
    try:
        cell = Cell("smoke", "low", "pretrained", "off", 0)
        run_cell(params, cell, root=scratch)
        info = json.loads((Paths(params, scratch).cell_dir(cell) / "info.json").read_text())
    finally:
        shutil.rmtree(scratch)
    s = params["student"]
    assert info["recipe"] == {"lr": 1.0e-30, "head_lr": 1.0e-30, "weight_decay": s["weight_decay"], "warmup_ratio": s["warmup_ratio"]}
    training = info["training"]
    assert training["steps"] > 0 and training["best_dev_accuracy"] == training["initial_dev_accuracy"]
    # the grid's own cells of the other inits trained with the section's rates
    other = json.loads((workdir / "results" / "smoke" / "cells" / "smoke-low-teacher-kdoff-s0" / "info.json").read_text())
    assert other["recipe"]["lr"] == s["lr"] and other["recipe"]["head_lr"] == s["head_lr"]


def test_budget_study_chooses_each_rate_on_dev_trains_the_rest_there_resumes_and_reports(workdir, tmp_path):
    """A tiny budget study on the real smoke upstream: the rate search runs first (every rate, every budget, seed
    0, KD off), each (init, budget) then trains its other seeds and KD on at the rate with the best dev accuracy;
    every run anneals to its own budget without an early stop; a second call trains nothing; the analysis
    writes the runs, the advantage table with a verdict per budget, and the figure."""
    import yaml

    from mkd.analysis.specs import VERDICTS
    from mkd.studies import budget

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["grid"]["seeds"] = [0, 1]   # seed 1 draws its own rows: in a scratch root, the study builds
    params = validate(params)          # the data, draws and logits it lacks (base and teacher linked: built)
    for name in ("base", "teachers"):
        (tmp_path / "artifacts" / "smoke").mkdir(parents=True, exist_ok=True)
        (tmp_path / "artifacts" / "smoke" / name).symlink_to(workdir / "artifacts" / "smoke" / name, target_is_directory=True)
    study = budget.BudgetStudy(slices=(("smoke", "low", (4, 8)),), lrs=(1.0e-4, 3.0e-3), seeds=(0, 1), evals_per_run=2)
    with pytest.raises(ConfigError, match=r"seed 2 not in the profile's grid"):
        budget.train(params, dataclasses.replace(study, seeds=(0, 1, 2)), workers=1, threads=1, root=tmp_path)
    assert not (tmp_path / "artifacts" / "smoke" / "data").exists()   # refused before any work
    assert budget.train(params, study, workers=1, threads=1, root=tmp_path) == 8 + 12   # 8 search runs, then 2 x 2 x 3
    paths = Paths(params, tmp_path)
    assert all(paths.logits_file("smoke", "low", s).is_file() and paths.draw(s).is_dir() for s in (0, 1))
    assert budget.train(params, study, workers=1, threads=1, root=tmp_path) == 0        # finished runs are kept

    runs_dir, tables = budget.study_paths(params, tmp_path)
    infos = {p.name: json.loads((p / "info.json").read_text()) for p in runs_dir.iterdir()}
    assert len(infos) == 20
    for init in study.inits:
        for b in study.budgets:
            dev = {lr: infos[budget.Run("smoke", "low", init, "off", b, lr, 0).id]["training"]["best_dev_accuracy"]
                   for lr in study.lrs}
            best = max(study.lrs, key=lambda lr: (dev[lr], -lr))
            for kd in study.kd:
                for seed in study.seeds:
                    info = infos[budget.Run("smoke", "low", init, kd, b, best, seed).id]
                    assert info["recipe"]["lr"] == best and info["objective"] == params["student"]["objective"][kd]
                    t = info["training"]
                    assert t["steps"] == b and t["stopped"] == "budget" and len(t["history"]) == 2
    text = budget.analyze(params, study, tmp_path)
    assert (tables / "budget.md").read_text() == text and (tables / "fig_budget.png").stat().st_size > 0
    runs = (runs_dir.parent / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 16          # the runs at the chosen rates: 2 inits x 2 budgets x 2 KD x 2 seeds
    verdict_rows = [line for line in text.splitlines() if line.startswith("| smoke-low |") and "[" in line]
    assert len(verdict_rows) == 2 * 2 * 2   # KD x budget x locale set
    assert all(any(f"| {v} |" in line for v in VERDICTS) for line in verdict_rows)
    findings = text.split("## Findings (largest budget run)\n\n")[1].split("\n\n")[0].splitlines()
    assert [f.split(":")[0] for f in findings] == ["- smoke-low, KD off", "- smoke-low, KD on"]
    assert all("at 4 steps" in f and "at 8 (all eval locales)" in f for f in findings)
    assert "## Seeds: the advantage detectable with 80 % power" in text


def test_a_shape_study_trains_grid_cells_with_one_shape_changed_resumes_and_reports(workdir, tmp_path):
    """A tiny shape study on the real smoke upstream: each run is the grid's cell with its layer map or width
    changed (the reference shape's run is the grid's own cell, prediction for prediction), a narrower run holds
    the selected width, a second call trains nothing, and the analysis writes rows, verdicts and the figure."""
    import yaml

    from mkd.analysis.specs import VERDICTS
    from mkd.evaluation.predictions import FILE_NAME
    from mkd.studies import shape

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["grid"]["seeds"] = [0, 1]
    params = validate(params)
    for name in ("base", "teachers"):
        (tmp_path / "artifacts" / "smoke").mkdir(parents=True, exist_ok=True)
        (tmp_path / "artifacts" / "smoke" / name).symlink_to(workdir / "artifacts" / "smoke" / name, target_is_directory=True)
    study = shape.ShapeStudy("tiny", "Does it depend on the shape?", (shape.Shape("spread"), shape.Shape("bottom", 192)),
                             ("pretrained", "teacher"), language_set="smoke")
    assert shape.train(params, study, workers=1, threads=1, root=tmp_path) == 2 * 2 * 2
    assert shape.train(params, study, workers=1, threads=1, root=tmp_path) == 0        # finished runs are kept
    runs_dir, tables = shape.study_paths(params, study, tmp_path)

    def info(run_id):
        return json.loads((runs_dir / run_id / "info.json").read_text())

    full, narrow = info("smoke-low-teacher-kdon-spread-hfull-s0"), info("smoke-low-teacher-kdon-bottom-h192-s1")
    assert full["layer_map"] == [11] and narrow["layer_map"] == [0]   # 1 of e5-small's 12 layers
    assert narrow["width"] == {"hidden": 192, "intermediate": 768, "heads": 6} and full["width"]["hidden"] == 384
    assert narrow["parameters"] < full["parameters"]
    grid_cell = workdir / "results" / "smoke" / "cells" / "smoke-low-teacher-kdon-s0" / FILE_NAME
    assert (runs_dir / "smoke-low-teacher-kdon-spread-hfull-s0" / FILE_NAME).read_bytes() == grid_cell.read_bytes()

    text = shape.analyze(params, study, tmp_path)
    assert (tables / "tiny.md").read_text() == text and (tables / "fig_tiny.png").stat().st_size > 0
    assert len((runs_dir.parent / "tiny.csv").read_text().splitlines()) == 1 + 8
    rows = [line for line in text.splitlines() if line.startswith("| teacher − pretrained |") or line.startswith("| advantage")]
    assert len(rows) == 2 * 2 + 2   # advantage per shape and locale set, dependence of bottom-192 per locale set
    assert all(any(f"| {v} |" in line for v in VERDICTS) for line in rows)
    assert "- bottom, width 192: teacher init" in text


def test_a_slice_floor_is_the_mean_probe_over_its_seeds_distinct_draws():
    """Where every seed draws its own rows, a slice's frozen-probe floor is fitted on each draw and averaged per
    locale (seeds sharing a draw share a probe); each draw's own fit is kept beside the mean."""
    from mkd.pipeline.stages.references import distinct_draws, mean_probe

    params = {"data": {"seed": 3, "draw_per_seed": True}, "grid": {"seeds": [0, 1], "extra_seeds": {"inits": ["teacher"], "seeds": [2]}}}
    assert distinct_draws(params) == [0, 1, 2]   # an extra seed draws its own rows too
    params["data"]["draw_per_seed"] = False
    assert distinct_draws(params) == [0]
    fits = [{"train_rows": 60, "c": c, "dev_accuracy_by_c": {}, "metrics": {"test": {"accuracy": {"sw-KE": a, "avg": a}}}}
            for c, a in ((0.1, 0.5), (1.0, 0.7))]
    mean = mean_probe(fits)
    assert mean["metrics"]["test"]["accuracy"] == pytest.approx({"sw-KE": 0.6, "avg": 0.6})
    assert mean["c"] == "0.1/1" and mean["draws"] == fits and mean["train_rows"] == 60
    assert mean_probe(fits[:1]) is fits[0]


def test_the_trimmed_vocabulary_covers_every_seeds_own_training_rows(massive_dir, e5_small_dir, tmp_path, monkeypatch):
    """A grid seed's draw holds rows the prepared folder lacks; the base's vocabulary is trimmed to them too, so a
    student reads its rows exactly as the untrimmed model would (the same pieces: none re-segmented, no <unk>)."""
    import yaml

    from mkd.data import load_prepared
    from mkd.models.sources import load_tokenizer

    params = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    params["threads"] = TEST_THREADS
    params["data"]["massive"] = str(massive_dir)
    params["grid"].update(seeds=[0, 1], extra_seeds={"inits": [], "seeds": []})
    validate(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "prepare"]) == 0 and main(["-q", "build-base"]) == 0
    paths = Paths(params, tmp_path)
    prepared = set(load_prepared(paths.data).texts())
    drawn = load_prepared(paths.draw(1)).texts()
    assert len(set(drawn) - prepared) > len(drawn) // 2   # seed 1's rows are mostly its own
    full, trimmed = load_tokenizer(e5_small_dir), load_tokenizer(paths.base)
    kept = json.loads((paths.base / "trim_kept_ids.json").read_text())
    from mkd.pipeline.stages.base import trim_corpus

    corpus = trim_corpus(paths)
    assert len(corpus) == len(set(corpus)) and set(drawn) <= set(corpus)   # every text once, the draws' included
    for draw in (0, 1):
        texts = load_prepared(paths.draw(draw)).texts()
        as_old_ids = [[kept[i] for i in ids] for ids in trimmed(texts)["input_ids"]]
        assert as_old_ids == full(texts)["input_ids"], f"seed {draw}'s rows tokenize otherwise under the trimmed base"
    # The stages that read every seed's draw (references, logits) hold one at a time (each is ~0.4 GB of rows at the
    # paper's size): reading seed 1 lets seed 0's go; reading seed 0 again gives the same rows.
    import gc
    import weakref

    from mkd.pipeline.encoder import Encoder

    enc = Encoder(params, paths)
    first_rows, first = enc.train("smoke", "low", 0)
    held = weakref.ref(enc.draw(0))
    enc.train("smoke", "low", 1)
    gc.collect()
    assert held() is None and enc._draw[0] == 1
    again_rows, again = enc.train("smoke", "low", 0)
    assert [(e.locale, e.id) for e in again_rows] == [(e.locale, e.id) for e in first_rows] and again.ids == first.ids
