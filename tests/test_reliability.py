"""Reliability: interruptions, bad parameters, bad data, numerical faults and full disks lose nothing.

Every fault here is a real one where that can be had: processes are SIGKILLed (at random times, and at the
worst instants: halfway through writing a checkpoint or a result), MASSIVE files are corrupted on disk,
teacher logits hold NaN, writes fail for real (RLIMIT_FSIZE, a full tmpfs). The slow tests share one tiny
DVC repository (smoke profile, 90 training rows, a 2 x 2 grid) whose upstream stages run once.
"""

from __future__ import annotations

import errno
import json
import os
import re
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mkd.core import atomic
from mkd.cli import main
from conftest import TEST_THREADS
from mkd.config import load_profile, merge, read_yaml, validate
from mkd.pipeline.lockfile import is_complete

REPO = Path(__file__).resolve().parents[1]
GRID = [("random", "off"), ("random", "on"), ("teacher", "off"), ("teacher", "on")]
KILL_CELL = ("teacher", "on")  # the richest cell: teacher init, cached teacher logits


def _cell_id(init, kd):
    return f"smoke-high-{init}-kd{kd}-s0"


def _cell_args(init, kd):
    return ["cell", "--language-set", "smoke", "--resource", "high", "--init", init, "--kd", kd, "--seed", "0"]


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MKD_MASSIVE", None)  # data.massive in the test's params.yaml is the source
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # `mkd` for DVC
    env.update(extra)
    return env


def _mkd(args, cwd, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkd.cli", "--threads", "1", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def _tiny_params(massive_dir: Path, **student) -> dict:
    p = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    p["threads"] = TEST_THREADS
    p["data"]["massive"] = str(massive_dir)
    p["data"]["train_sizes"] = {"low": 10, "high": 30}  # per locale; 3 locales
    p["teacher"].update(resource="high", max_steps=12, eval_every=6, batch_size=16, checkpoint_every=4)  # 2 epochs of 90 rows
    p["student"].update(max_steps=12, eval_every=6, patience=0, batch_size=16, checkpoint_every=5, **student)  # 2 epochs
    p["grid"].update(resources=["high"], inits=["random", "teacher"], kd=["off", "on"], seeds=[0],
                     extra_seeds={"inits": [], "seeds": []})
    return validate(p)


def _new_dvc_repo(d: Path, params: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", d / "dvc.yaml")
    shutil.copytree(REPO / "mkd", d / "mkd", ignore=shutil.ignore_patterns("__pycache__"))  # the stages' deps
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=d, env=_env(), check=True, capture_output=True)
    return d


def _copy(src: Path, dst: Path, dvc: bool = False) -> Path:
    """A copy of the prepared repository; without DVC's cache and the mkd/ copy unless `dvc`."""

    def ignore(folder, names):
        if dvc:
            return []
        if Path(folder) == src:
            return [n for n in names if n == "mkd"]
        return ["cache"] if Path(folder).name == ".dvc" else []

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)
    return dst


def _result(cell_dir: Path) -> bytes:
    """A cell's result: its per-example predictions, compared byte for byte."""
    return (cell_dir / "predictions.csv.gz").read_bytes()


def _popen(cmd, cwd, log: Path, **env) -> subprocess.Popen:
    """A process in its own group, so a kill takes it and its children (DVC's stage commands) at once."""
    return subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _wait_for(predicate, proc, timeout=300, what="") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > end:
            _kill(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def repo(massive_dir, e5_small_dir, tmp_path_factory) -> Path:
    """A DVC repository with the tiny grid's upstream stages done: data, base, teacher, logits."""
    d = _new_dvc_repo(tmp_path_factory.mktemp("reliability") / "repo", _tiny_params(massive_dir))
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "logits"], cwd=d, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def reference(repo, tmp_path_factory) -> dict:
    """Every cell's predictions from an uninterrupted run (in this process, one thread)."""
    d = _copy(repo, tmp_path_factory.mktemp("reference") / "w")
    old = os.getcwd()
    os.chdir(d)
    try:
        for init, kd in GRID:
            assert main(["-q", "--threads", "1", *_cell_args(init, kd)]) == 0
    finally:
        os.chdir(old)
    return {_cell_id(*c): _result(d / "results" / "smoke" / "cells" / _cell_id(*c)) for c in GRID}


# ------------------------------------------------------------------------ 1. parameters, before any work


def test_dvc_repro_with_a_bad_parameter_fails_the_first_stage_clearly_and_writes_nothing(massive_dir, tmp_path):
    params = _tiny_params(massive_dir)
    params["student"]["layrs"] = 3
    d = _new_dvc_repo(tmp_path / "repo", params)
    r = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=d, env=_env(), capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "mkd: error: unknown parameter student.layrs; did you mean 'student.layers'?" in out
    assert "failed to reproduce 'validate'" in out and "exited with 2" in out
    assert "Traceback" not in out
    assert not any((d / x).exists() for x in ("artifacts", "results", "paper_tables", "dvc.lock"))


# ------------------------------------------------------------------------------ 2. interruption: a cell

KILLER = r'''
"""Runs `mkd`, SIGKILLing itself halfway through writing the nth temporary file of a given name."""
import io, os, pathlib, signal, sys

kind, name, nth = os.environ["KILL_AT"].split(":")
seen = [0]


def due(path) -> bool:
    n = pathlib.Path(str(path)).name
    if n.startswith("." + name + ".") and n.endswith(".tmp"):
        seen[0] += 1
        return seen[0] == int(nth)
    return False


def write_half_and_die(path, data: bytes):
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "torch":
    import torch

    real_save = torch.save

    def save(obj, f, *a, **k):
        path = getattr(f, "name", None) or getattr(getattr(f, "fh", None), "name", None) or f
        if due(path):
            buf = io.BytesIO()
            real_save(obj, buf, *a, **k)
            write_half_and_die(path, buf.getvalue())
        return real_save(obj, f, *a, **k)

    torch.save = save
else:  # "bytes": mkd.core.atomic.write_bytes (a cell's predictions)
    real_write_bytes = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if due(self):
            write_half_and_die(self, data)
        return real_write_bytes(self, data)

    pathlib.Path.write_bytes = write_bytes

from mkd.cli import main

sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_a_cell_killed_anywhere_leaves_no_partial_result_and_rerun_finishes_it_identically(repo, reference, tmp_path):
    work = _copy(repo, tmp_path / "w")
    cell_id = _cell_id(*KILL_CELL)
    cell_dir = work / "results" / "smoke" / "cells" / cell_id
    ckpts = work / "artifacts" / "smoke" / "checkpoints"
    args = ["--threads", "1", *_cell_args(*KILL_CELL)]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    log = []

    def fresh_outputs():  # what DVC does before it re-runs a stage: remove its outputs
        for name in ("predictions.csv.gz", "info.json"):
            (cell_dir / name).unlink(missing_ok=True)

    def check(what):
        """Never a partial result: no predictions file, or a complete one equal to the uninterrupted run's."""
        log.append(what)
        if (cell_dir / "predictions.csv.gz").exists():
            assert _result(cell_dir) == reference[cell_id], log
        if (cell_dir / "info.json").exists():
            json.loads((cell_dir / "info.json").read_text())

    # an uninterrupted run in its own process equals the reference, and times a run
    t0 = time.monotonic()
    r = _mkd(["-q", *_cell_args(*KILL_CELL)], work)
    t_full = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert _result(cell_dir) == reference[cell_id]
    fresh_outputs()

    # killed halfway through writing its 2nd checkpoint (epoch end, step 6): the step-5 checkpoint stays usable
    r = subprocess.run([sys.executable, str(killer), *args], cwd=work, env=_env(KILL_AT="torch:state.pt:2"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    (ckpt,) = ckpts.glob(f"cell-{cell_id}-*")
    assert list(ckpt.glob(".state.pt.*.tmp")), "the kill did not land inside the checkpoint write"
    import torch

    assert torch.load(ckpt / "state.pt", weights_only=False)["progress"]["step"] == 5
    check("killed writing checkpoint 2")
    assert not (cell_dir / "predictions.csv.gz").exists()

    # SIGKILLs at random times, each run resuming from what the last one left
    seed = int(os.environ.get("MKD_KILL_SEED", random.randrange(2**32)))  # any kill time must pass; the seed
    rng = random.Random(seed)                                               # is in the failure message to retry
    log.append(f"random kills: MKD_KILL_SEED={seed}")
    for i in range(3):
        fresh_outputs()
        delay = rng.uniform(0.15, 1.0) * t_full
        proc = _popen([sys.executable, "-m", "mkd.cli", "-q", *args], work, tmp_path / f"random{i}.log")
        try:
            proc.wait(timeout=delay)
            outcome = f"run {i} finished before its kill at {delay:.1f} s (rc {proc.returncode})"
            assert proc.returncode == 0, (tmp_path / f"random{i}.log").read_text()[-2000:]
        except subprocess.TimeoutExpired:
            _kill(proc)
            outcome = f"run {i} killed at {delay:.1f} s"
        check(outcome)

    # killed halfway through writing predictions.csv.gz, after training and info.json: no predictions file
    fresh_outputs()
    r = subprocess.run([sys.executable, str(killer), *args], cwd=work, env=_env(KILL_AT="bytes:predictions.csv.gz:1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert list(cell_dir.glob(".predictions.csv.gz.*.tmp")), "the kill did not land inside the result write"
    assert not (cell_dir / "predictions.csv.gz").exists()
    assert json.loads((cell_dir / "info.json").read_text())["cell"]["id"] == cell_id
    check("killed writing predictions.csv.gz")

    # the re-run resumes from the finished training's checkpoint and gives the uninterrupted result
    r = _mkd(_cell_args(*KILL_CELL), work)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr
    assert _result(cell_dir) == reference[cell_id], log
    info = json.loads((cell_dir / "info.json").read_text())
    assert info["training"]["steps"] == 12 and len(info["training"]["history"]) == 2
    assert not list(ckpts.glob(f"cell-{cell_id}-*")), "the finished cell's checkpoint is removed"


# A `mkd` first on the PATH of the killed `dvc repro`: the third cell's command signals that it has started and
# is held there until the test kills the whole process group. DVC records each stage in dvc.lock before it starts
# the next, so the kill lands at a known point: two cells finished and recorded, two not (no timing involved).
HOLD_THIRD_CELL = """#!{python}
import os, pathlib, sys, time
if sys.argv[1:2] == ["cell"] and len(list(pathlib.Path("results/smoke/cells").glob("*/predictions.csv.gz"))) >= 2:
    pathlib.Path(os.environ["MKD_TEST_HELD"]).touch()
    time.sleep(900)
    sys.exit("held too long")
os.execv({mkd!r}, [{mkd!r}, *sys.argv[1:]])
"""


@pytest.mark.slow
def test_dvc_repro_killed_mid_grid_reruns_only_unfinished_cells(repo, reference, tmp_path):
    work = _copy(repo, tmp_path / "w", dvc=True)
    cells = work / "results" / "smoke" / "cells"
    shim, held = tmp_path / "shim", tmp_path / "held"
    shim.mkdir()
    (shim / "mkd").write_text(HOLD_THIRD_CELL.format(python=sys.executable, mkd=str(Path(sys.executable).parent / "mkd")))
    (shim / "mkd").chmod(0o755)
    dvc = [sys.executable, "-m", "dvc", "repro", "collect"]
    proc = _popen(dvc, work, tmp_path / "first.log", MKD_TEST_HELD=str(held),
                  PATH=os.pathsep.join([str(shim), _env()["PATH"]]))
    _wait_for(held.exists, proc, what="the third cell's start")
    _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    stages = {f"cell@smoke-high-{init}-{kd}-0": _cell_id(init, kd) for init, kd in GRID}
    assert is_complete(work / "dvc.lock")
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    finished = {s for s in stages if s in lock}
    assert len(finished) == 2, (finished, (tmp_path / "first.log").read_text()[-3000:])
    assert len(list(cells.glob("*/predictions.csv.gz"))) == 2  # the held cell wrote nothing

    r = subprocess.run(dvc, cwd=work, env=_env(), capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for stage in ("prepare", "base", "teachers", "logits"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    for stage in stages:
        if stage in finished:
            assert f"Stage '{stage}' didn't change, skipping" in out and f"Running stage '{stage}'" not in out
        else:
            assert f"Running stage '{stage}'" in out
    assert "Running stage 'collect'" in out
    for stage, cell_id in stages.items():
        assert _result(cells / cell_id) == reference[cell_id], stage
    r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", "collect"], cwd=work, env=_env(),
                       capture_output=True, text=True, timeout=300)
    # nothing changed (`validate`, which looks at the data on every run, may be listed as always changed)
    assert json.loads(r.stdout) in ({}, {"validate": ["always changed"]}), r.stdout


@pytest.mark.slow
def test_a_cut_off_dvc_lock_is_named_and_deleting_it_as_the_message_says_restores_every_stage(repo, tmp_path):
    """A `dvc repro` killed while DVC rewrites dvc.lock leaves it cut off. mkd names it and the fix; the fix is run
    here as the message words it (delete the lock, run again): DVC restores every finished stage from its
    run-cache, none is computed again, and the outputs are the same bytes."""
    work = _copy(repo, tmp_path / "w", dvc=True)
    lock = work / "dvc.lock"
    good = yaml.safe_load(lock.read_text())["stages"]
    assert {"prepare", "base", "teachers", "logits"} <= set(good)
    text = lock.read_text()
    lock.write_text(text[: text.index("md5:", len(text) // 2) + 2])  # a SIGKILL during DVC's in-place rewrite
    assert not is_complete(lock)

    r = subprocess.run([sys.executable, "-m", "mkd.cli", "exp", "--profile", "smoke", "--dry-run"], cwd=work,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "dvc.lock is empty or cut off" in r.stderr and "Traceback" not in r.stderr, r.stderr
    fix = re.search(r"`(rm [^`]+)`", r.stderr).group(1)
    assert fix == "rm dvc.lock", r.stderr
    subprocess.run(shlex.split(fix), cwd=work, check=True)
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "logits"], cwd=work, env=_env(), capture_output=True,
                       text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for stage in ("prepare", "base", "teachers", "logits"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out[-3000:]
    restored = yaml.safe_load(lock.read_text())["stages"]
    for stage in ("prepare", "base", "teachers", "logits"):
        assert restored[stage]["outs"] == good[stage]["outs"], stage  # the same bytes


# -------------------------------------------------------------------------- 3. long runs resume: teacher


@pytest.mark.slow
def test_teacher_training_killed_mid_run_resumes_to_the_same_teacher(repo, tmp_path):
    from safetensors.torch import load_file

    work = _copy(repo, tmp_path / "w")
    teachers = work / "artifacts" / "smoke" / "teachers"
    shutil.rmtree(teachers)
    ckpts = work / "artifacts" / "smoke" / "checkpoints"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    # killed halfway through writing its second checkpoint (an event, not a moment): mid-run, one checkpoint kept
    r = subprocess.run([sys.executable, str(killer), "--threads", "1", "train-teachers"], cwd=work,
                       env=_env(KILL_AT="torch:state.pt:2"), capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert any(ckpts.glob("teacher-shared-*/state.pt")) and any(ckpts.glob("teacher-shared-*/.state.pt.*.tmp"))
    assert not (teachers / "shared" / "teacher_metrics.json").exists()

    r = _mkd(["train-teachers"], work)
    assert r.returncode == 0, r.stderr
    assert "teacher[shared]: resuming from" in r.stderr
    ref_dir, new_dir = repo / "artifacts" / "smoke" / "teachers" / "shared", teachers / "shared"
    ref_w, new_w = load_file(ref_dir / "model.safetensors"), load_file(new_dir / "model.safetensors")
    assert ref_w.keys() == new_w.keys() and all(ref_w[k].equal(new_w[k]) for k in ref_w)
    ref, new = (json.loads((x / "teacher_metrics.json").read_text()) for x in (ref_dir, new_dir))
    assert new["metrics"] == ref["metrics"]
    for key in ("history", "best_dev_accuracy", "steps", "train_examples_seen"):
        assert new["training"][key] == ref["training"][key], key
    assert not any(ckpts.glob("teacher-*")), "the finished teacher's checkpoint is removed"


# ------------------------------------------------------------------------------ 4. data faults, CLI level


def _corrupt_checksum(src: Path, massive_dir: Path) -> str:
    for loc in ("en-US", "de-DE", "sw-KE"):
        shutil.copy(massive_dir / f"{loc}.jsonl.gz", src / f"{loc}.jsonl.gz")
    shutil.copy(massive_dir / "SHA256SUMS", src / "SHA256SUMS")
    blob = bytearray((src / "de-DE.jsonl.gz").read_bytes())
    blob[5000] ^= 0x01
    (src / "de-DE.jsonl.gz").write_bytes(bytes(blob))
    return "de-DE.jsonl.gz"


def _corrupt_json_line(src: Path, massive_dir: Path) -> str:
    import gzip

    for loc in ("en-US", "de-DE"):
        shutil.copy(massive_dir / f"{loc}.jsonl.gz", src / f"{loc}.jsonl.gz")
    lines = gzip.decompress((massive_dir / "sw-KE.jsonl.gz").read_bytes()).decode().splitlines()
    lines[6] = lines[6][: len(lines[6]) // 2]  # a line cut in half
    (src / "sw-KE.jsonl").write_text("\n".join(lines) + "\n")
    return "sw-KE.jsonl, line 7"


def _truncate_gz(src: Path, massive_dir: Path) -> str:
    for loc in ("de-DE", "sw-KE"):
        shutil.copy(massive_dir / f"{loc}.jsonl.gz", src / f"{loc}.jsonl.gz")
    blob = (massive_dir / "en-US.jsonl.gz").read_bytes()
    (src / "en-US.jsonl.gz").write_bytes(blob[: len(blob) * 2 // 3])
    return "en-US.jsonl.gz"


@pytest.mark.parametrize("corrupt, expected", [(_corrupt_checksum, "checksum mismatch"), (_corrupt_json_line, "malformed JSON"),
                                               (_truncate_gz, "truncated")])
def test_prepare_on_a_corrupt_massive_copy_names_the_file_and_writes_nothing(massive_dir, tmp_path, corrupt, expected,
                                                                            monkeypatch, capsys):
    src = tmp_path / "massive"
    src.mkdir()
    where = corrupt(src, massive_dir)
    work = tmp_path / "w"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(_tiny_params(src), sort_keys=False))
    monkeypatch.chdir(work)
    monkeypatch.delenv("MKD_MASSIVE", raising=False)
    assert main(["-q", "--threads", "1", "prepare"]) == 2  # the exit code; main prints the error, no traceback
    err = capsys.readouterr().err
    assert err.startswith("mkd: error: ") and where in err and expected in err, err
    smoke = work / "artifacts" / "smoke"
    assert not smoke.exists() or not any(smoke.iterdir())


# --------------------------------------------------------------------------------- 5. numerical faults


@pytest.mark.slow
def test_nan_teacher_logits_stop_only_that_cell_with_a_clear_error(repo, reference, tmp_path, monkeypatch):
    import torch

    work = _copy(repo, tmp_path / "w")
    path = work / "artifacts" / "smoke" / "logits" / "smoke-high-s0.pt"
    cached = torch.load(path, weights_only=False)
    cached["logits"][::2] = float("nan")  # a corrupt cache: every other row
    torch.save(cached, path)

    r = _mkd(["-q", *_cell_args("teacher", "on")], work)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("mkd: error: cell smoke-high-teacher-kdon-s0: the loss became nan at step 1 (epoch 1) "), r.stderr
    assert "Traceback" not in r.stderr
    cell_dir = work / "results" / "smoke" / "cells" / "smoke-high-teacher-kdon-s0"
    assert not (cell_dir / "predictions.csv.gz").exists() and not (cell_dir / "info.json").exists()

    # a KD-off cell on the same data does not read the logits: a normal, unchanged result
    monkeypatch.chdir(work)
    assert main(["-q", "--threads", "1", *_cell_args("random", "off")]) == 0
    assert _result(work / "results" / "smoke" / "cells" / "smoke-high-random-kdoff-s0") == reference["smoke-high-random-kdoff-s0"]


# ------------------------------------------------------------------------------------- 6. full disk

NO_ROOM = "free space and re-run: finished results and checkpoints are kept"


def _good_files(d: Path):
    import torch

    from mkd.training.loop import _save

    d.mkdir(parents=True, exist_ok=True)
    atomic.write_json(d / "metrics.json", {"test": {"accuracy": {"avg": 0.5}}})
    _save({"w": torch.arange(10.0)}, d / "state.pt")
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_enospc_on_fsync_keeps_the_previous_result_and_checkpoint(tmp_path, monkeypatch):
    import torch

    from mkd.training.loop import _save

    before = _good_files(tmp_path)

    def no_room(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(OSError) as e:
        atomic.write_json(tmp_path / "metrics.json", {"test": {"accuracy": {"avg": 0.9}}})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "metrics.json")
    with pytest.raises(OSError) as e:
        _save({"w": torch.zeros(1000)}, tmp_path / "state.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "state.pt")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files intact, no temporaries


FSIZE_SCRIPT = r'''
import json, resource, signal, sys
from pathlib import Path
import torch
from mkd.core import atomic
from mkd.training.loop import _save

d = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
out = {}
for name, write in (("metrics.json", lambda: atomic.write_json(d / "metrics.json", {"x": "y" * 200_000})),
                    ("state.pt", lambda: _save({"w": torch.randn(100_000)}, d / "state.pt"))):
    try:
        write()
        out[name] = None
    except OSError as e:
        out[name] = [e.errno, e.filename]
print(json.dumps(out))
'''


def test_real_write_failure_file_size_limit_keeps_previous_files(tmp_path):
    before = _good_files(tmp_path / "d")
    r = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(tmp_path / "d")], env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in ("metrics.json", "state.pt"):
        assert out[name] == [errno.EFBIG, str(tmp_path / "d" / name)], out
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before


@pytest.fixture
def full_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount is not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk_keeps_previous_result_and_checkpoint(full_tmpfs):
    import torch

    from mkd.training.loop import _save

    d = full_tmpfs / "run"
    before = _good_files(d)
    with open(full_tmpfs / "filler", "wb", buffering=0) as fh:  # fill the file system to the last block
        with pytest.raises(OSError) as e:
            while True:
                fh.write(b"\0" * 4096)
        assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as e:
        atomic.write_json(d / "metrics.json", {"x": "y" * 20_000})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(d / "metrics.json")
    with pytest.raises(OSError) as e:
        _save({"w": torch.randn(20_000)}, d / "state.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(d / "state.pt")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device", "results/smoke/cells/c/metrics.json"),
     "could not write results/smoke/cells/c/metrics.json: No space left on device; "),
    (OSError(errno.EFBIG, "File too large"), "could not write: File too large; "),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "x/state.pt"), "could not write x/state.pt: Disk quota exceeded; "),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
     "could not write: No space left on device; "),
])
def test_cli_turns_a_failed_write_into_one_clear_line(tmp_path, monkeypatch, capsys, error, message):
    from mkd.pipeline import stages as pipeline

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)

    def fail(params, root="."):
        raise error

    monkeypatch.setattr(pipeline, "prepare", fail)
    assert main(["prepare"]) == 2
    assert capsys.readouterr().err == f"mkd: error: {message}{NO_ROOM}\n"
    # other OS errors are bugs, not the user's disk: they keep their traceback
    monkeypatch.setattr(pipeline, "prepare", lambda params, root=".": (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError):
        main(["prepare"])


@pytest.mark.slow
def test_a_cell_on_a_full_disk_ends_with_a_clear_error_and_keeps_the_finished_result(repo, tmp_path):
    work = _copy(repo, tmp_path / "w")
    cell_id = _cell_id(*KILL_CELL)
    cell_dir = work / "results" / "smoke" / "cells" / cell_id
    cell_dir.mkdir(parents=True)
    atomic.write_json(cell_dir / "info.json", {"cell": {"id": cell_id}})
    atomic.write_bytes(cell_dir / "predictions.csv.gz", b"a finished result")
    before = {p.name: p.read_bytes() for p in cell_dir.iterdir()}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))  # 1 MiB: less than a checkpoint

    r = _mkd(["-q", *_cell_args(*KILL_CELL)], work, preexec_fn=limit)
    assert r.returncode == 2, r.stderr
    ckpt = next((work / "artifacts" / "smoke" / "checkpoints").glob(f"cell-{cell_id}-*"))
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"mkd: error: could not write {Path('artifacts/smoke/checkpoints') / ckpt.name / 'state.pt'}: File too large; {NO_ROOM}"
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in cell_dir.iterdir()} == before
    assert not list(ckpt.iterdir()), "no half-written checkpoint is left"
