"""The command line under misuse: each refusal comes before any work, as one line that names the fix, with no
traceback, and leaves what was computed alone. Two fanouts at once, a Slurm that is not there, device lists that
name no device, a process given a GPU it cannot see, `mkd verify` asked to check nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mkd.config import load_profile, merge, read_yaml, validate
from mkd.pipeline.fanout import FanoutError, check_slurm, gpu_ids, one_at_a_time

REPO = Path(__file__).resolve().parents[1]
MKD = str(Path(sys.executable).parent / "mkd")


def _mkd(args, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([MKD, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", **env})


def _one_line_refusal(r: subprocess.CompletedProcess, *words: str) -> str:
    """The refusal: exit 2, one line on stderr starting `mkd: error:` with every word in it, no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("mkd: error: "), r.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def project(tmp_path, massive_dir) -> Path:
    """A committed mkd project of the smoke profile (params.yaml, dvc.yaml, DVC initialized), nothing run."""
    d = tmp_path / "project"
    d.mkdir()
    params = merge(read_yaml(REPO / "params.yaml"), load_profile("smoke"))
    params["data"]["massive"] = str(massive_dir)
    (d / "params.yaml").write_text(yaml.safe_dump(validate(params), sort_keys=False))
    (d / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    return d


HOLDER = """
import pathlib, sys, time
from mkd.pipeline.fanout import one_at_a_time
with one_at_a_time(pathlib.Path(sys.argv[1]), "mkd fanout --profile smoke"):
    pathlib.Path(sys.argv[2]).touch()
    while not pathlib.Path(sys.argv[3]).exists():   # held until the test lets it go
        time.sleep(0.02)
"""


def _hold(workdir: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    held, release = tmp_path / "held", tmp_path / "release"
    held.unlink(missing_ok=True)
    release.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), str(held), str(release)])
    deadline = time.monotonic() + 120
    while not held.exists():  # waits for the holder's own word, never for a time
        assert proc.poll() is None, "the holder ended before it held the lock"
        assert time.monotonic() < deadline, "the holder did not take the lock within 120 s"
        time.sleep(0.02)
    return proc, release


def test_a_second_fanout_of_a_profile_is_refused_naming_the_first_and_a_killed_one_leaves_no_stale_lock(project, tmp_path):
    workdir = project / ".mkd" / "fanout" / "smoke"
    first, release = _hold(workdir, tmp_path)
    try:
        line = _one_line_refusal(_mkd(["fanout", "--profile", "paper"], project), f"PID {first.pid}",
                                 "mkd fanout --profile smoke", "one fanout or fan-in of a profile runs at a time")
        assert "kill the PID" in line
        assert not (workdir / "worker0").exists() and not (workdir / "logs").exists()  # nothing started
    finally:
        release.touch()
        first.wait(timeout=60)
    assert first.returncode == 0
    with one_at_a_time(workdir, "test"):  # let go: the next one runs
        pass
    killed, _ = _hold(workdir, tmp_path)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    with one_at_a_time(workdir, "test"):  # the kernel released a killed holder's lock: nothing to clean up
        with pytest.raises(FanoutError, match=rf"`test` \(PID {os.getpid()}\) is running"):
            with one_at_a_time(workdir, "a second one in this process"):
                pass


def _stand_ins(folder: Path, ping: str, tools=("sbatch", "srun", "squeue", "scontrol")) -> dict:
    """Stand-ins for Slurm's commands; `scontrol ping` prints `ping` (exit 0 if it says UP). PATH: only these (a
    machine with Slurm installed has the real ones in /usr/bin)."""
    folder.mkdir()
    for tool in tools:
        body = (f'[ "$1" = ping ] && {{ echo "{ping}"; case "{ping}" in *" is UP") exit 0;; esac; exit 1; }}\n'
                if tool == "scontrol" else "exit 0\n")
        (folder / tool).write_text("#!/bin/sh\n" + body)
        (folder / tool).chmod(0o755)
    return {"PATH": str(folder)}


def test_slurm_that_is_not_there_is_named_before_anything_is_submitted(tmp_path):
    with pytest.raises(FanoutError, match=r"srun is not on PATH: run mkd fanout on a Slurm login node"):
        check_slurm(_stand_ins(tmp_path / "no-srun", "", tools=("sbatch", "squeue", "scontrol")))
    down = _stand_ins(tmp_path / "down", "Slurmctld(primary) at head is DOWN")
    with pytest.raises(FanoutError, match=r"no Slurm controller answers \(`scontrol ping`: Slurmctld\(primary\) at "
                                          r"head is DOWN\): start slurmctld, or point SLURM_CONF"):
        check_slurm(down)
    check_slurm(_stand_ins(tmp_path / "up", "Slurmctld(primary) at head is UP"))  # a cluster that answers: no word


def test_a_slurm_fanout_with_no_controller_is_one_line_not_a_traceback(project, tmp_path):
    stand_ins = tmp_path / "slurm"
    _stand_ins(stand_ins, "Slurmctld(primary) at head is DOWN")
    r = _mkd(["fanout", "--profile", "paper", "--engine", "slurm"], project,
             PATH=f"{stand_ins}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    _one_line_refusal(r, "no Slurm controller answers", "scripts/slurm/start.sh")
    assert not (project / ".mkd" / "fanout" / "smoke" / "submitit").exists()


@pytest.mark.parametrize("gpus, words", [
    ("abc,abc", ["'abc' is no GPU id", "nvidia-smi -L"]),
    (",", ["--gpus takes a comma-separated list of GPU ids"]),
    ("", ["--gpus takes a comma-separated list of GPU ids"]),
    ("0,1,0", ["names GPU 0 twice"]),
])
def test_a_device_list_that_names_no_device_is_refused(project, gpus, words):
    _one_line_refusal(_mkd(["fanout", "--profile", "paper", "--gpus", gpus], project), *words)
    assert not (project / ".mkd").exists()


def test_device_ids_are_indices_or_uuids():
    assert gpu_ids("0, 1,3") == ["0", "1", "3"]
    assert gpu_ids("GPU-5b1c2d3e-0000-1111-2222-333344445555,MIG-GPU-5b1c/1/0") == [
        "GPU-5b1c2d3e-0000-1111-2222-333344445555", "MIG-GPU-5b1c/1/0"]
    with pytest.raises(FanoutError):
        gpu_ids("-1")


@pytest.mark.parametrize("command", [["train-teachers"], ["cell", "--language-set", "smoke", "--resource", "low",
                                                           "--init", "teacher", "--kd", "on", "--seed", "0"]])
def test_a_process_given_a_gpu_it_cannot_see_refuses_to_train_on_the_cpu(project, command):
    """What `mkd fanout --gpus 7` gives a worker on a machine without GPU 7: the stage says so and trains nothing
    (before, the loop's Accelerator fell back to the CPU without a word)."""
    r = _mkd(command, project, CUDA_VISIBLE_DEVICES="7", MKD_MASSIVE=str(read_yaml(project / "params.yaml")["data"]["massive"]))
    _one_line_refusal(r, "CUDA_VISIBLE_DEVICES=7 gives this process GPU(s), but torch sees none",
                      "unset CUDA_VISIBLE_DEVICES to run on the CPU")
    assert not (project / "artifacts").exists()


@pytest.mark.parametrize("n", ["-2", "0", "33"])
def test_verify_checks_at_least_one_cell_and_at_most_the_grid(project, n):
    _one_line_refusal(_mkd(["verify", "--cells", n], project), f"--cells must be between 1 and 32 (the grid's cells), got {n}")


def test_a_grid_no_claim_can_compare_is_refused_before_any_work_unless_the_analysis_is_told(project):
    """Before, `grid.inits: [teacher]` with `grid.kd: [on]` passed validate, trained every cell, and only analyze
    said every comparison was skipped."""
    params = read_yaml(project / "params.yaml")
    params["grid"].update(inits=["teacher"], kd=["on"], extra_seeds={"inits": [], "seeds": []})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _one_line_refusal(_mkd(["validate"], project), "no claim can be tested on this grid",
                      "analysis.allow_no_claims: true")
    params["analysis"]["allow_no_claims"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _mkd(["validate"], project).returncode == 0


def test_a_preview_applies_the_profile_and_the_user_s_overrides_and_changes_nothing(project):
    """`mkd exp --profile smoke --dry -- -S ...`: the profile's overrides and the user's, applied as `dvc exp run`
    would apply them; nothing has run in this project, so every cell would; params.yaml is left byte for byte."""
    before = (project / "params.yaml").read_bytes()
    r = _mkd(["exp", "--profile", "smoke", "--dry", "--", "-S", "+student.by_init.random.lr=0.001"], project,
             PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert r.returncode == 0, r.stderr
    assert "would re-run 32 of 32 cells" in r.stdout and "prepare" in r.stdout, r.stdout
    assert (project / "params.yaml").read_bytes() == before
    r = _mkd(["exp", "--profile", "smoke", "--dry", "--", "-S", "student.by_init.random.lr=0.001"], project,
             PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    last = r.stderr.strip().splitlines()[-1]  # after the `+ dvc exp run ...` line mkd exp always prints
    assert r.returncode == 2 and last.startswith("mkd: error: cannot apply") and "Traceback" not in r.stderr, r.stderr
    assert "Invalid `--set-param` value" in last and "is added with +key=value" in last
    assert (project / "params.yaml").read_bytes() == before
