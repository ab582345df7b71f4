"""Fanout / fan-in (mkd/pipeline/fanout.py) on a synthetic DVC project whose matrix stage's command only logs and sleeps.

The log (stage, pid, CUDA_VISIBLE_DEVICES, start, end) shows what ran where and when: with two GPU
slots at most two items overlap and overlapping items have different devices; fan-in through `dvc repro`
restores every item from the run-cache and runs none of them; a second fanout submits nothing; an item whose
job was killed is the only one run again; a dirty tree is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkd.pipeline.fanout import (FanoutError, Ledger, Plan, check_cache, check_clean, fan_in, run_local, run_submitit,
                        run_upstream, submitit_parameters)

pytestmark = pytest.mark.slow

FAKE = r'''
import json, os, signal, sys, time
what = sys.argv[1:]
t0 = time.time()
if what[0] in ("up", "cell") and os.environ.get("MKD_RESTORE_ONLY"):
    sys.exit("computing refused: restore only")   # the contract mkd's computing commands keep (mkd.cli)
if what[0] == "cell":
    if os.environ.get("FAKE_KILL") == what[1]:
        os.kill(os.getpid(), signal.SIGKILL)   # a job killed mid-run (time limit, node failure)
    # a job that runs until Slurm stops it (cancelled, requeued: a requeued job's next run goes on); it names its job
    if os.environ.get("FAKE_HANG") == what[1] and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
        marker = os.path.join(os.environ["FAKE_HANG_DIR"], "hanging")
        open(marker + ".tmp", "w").write(f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}")
        os.replace(marker + ".tmp", marker)
        time.sleep(300)
        sys.exit("not cancelled within 300 s")
    # FAKE_OVERLAP (a folder): item 0 ends only after it has seen another item running, and an item that finds
    # item 0 waiting stays until item 0 has seen it; so two items overlap whatever the scheduling (no timing).
    meet = os.environ.get("FAKE_OVERLAP")
    if meet:
        mine = os.path.join(meet, f"running-{what[1]}")
        open(mine, "w").close()
        deadline = time.time() + 300
        def wait_for(ready, why):
            while not ready():
                if time.time() > deadline:
                    sys.exit(f"item {what[1]}: {why} within 300 s")
                time.sleep(0.02)
        if what[1] == "0":
            wait_for(lambda: [f for f in os.listdir(meet) if f.startswith("running-") and f != "running-0"],
                     "no other item ran")
            open(os.path.join(meet, "seen"), "w").close()
    time.sleep(1.0)
    os.makedirs("out", exist_ok=True)
    open(f"out/{what[1]}.txt", "w").write(f"cell {what[1]} of n={open('up.txt').read()}")
    if meet:
        if what[1] != "0" and os.path.exists(os.path.join(meet, "running-0")):
            wait_for(lambda: os.path.exists(os.path.join(meet, "seen")), "item 0 did not see this one")
        os.remove(mine)
elif what[0] == "up":
    open("up.txt", "w").write("3")
else:
    open("all.txt", "w").write("".join(open(f"out/{f}").read() + "\n" for f in sorted(os.listdir("out"))))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"what": what, "pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "start": t0, "end": time.time()}) + "\n")
'''

DVC_YAML = """stages:
  up:
    cmd: python fake.py up
    deps: [fake.py]
    params: [n]
    outs: [up.txt]
  cell:
    matrix:
      i: [0, 1, 2, 3, 4, 5]
    cmd: python fake.py cell ${item.i}
    deps: [fake.py, up.txt]
    params: [n]
    outs:
      - out/${item.i}.txt
  collect:
    cmd: python fake.py collect
    deps: [out]
    outs:
      - all.txt:
          cache: false
"""

STAGES = [f"cell@{i}" for i in range(6)]


def _env(log: Path) -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "FAKE_LOG": str(log),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(args, cwd, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{args}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return r


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def project(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    log = tmp_path / "log.jsonl"
    for k, v in _env(log).items():
        monkeypatch.setenv(k, v)
    (repo / "fake.py").write_text(FAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("n: 3\n")
    (repo / ".gitignore").write_text("/.mkd/\n")
    _run(["git", "init", "-q"], repo, _env(log))
    _run(["dvc", "init", "-q"], repo, _env(log))
    (repo / ".dvcignore").write_text(".mkd/\n")
    _run(["git", "add", "-A"], repo, _env(log))
    _run(["git", "commit", "-qm", "init"], repo, _env(log))
    commit = check_clean(repo)
    plan = Plan(repo=repo, name="t", commit=commit, cache_dir=repo / ".dvc" / "cache", stages=list(STAGES),
                upstream=["up"], fingerprints={s: commit for s in STAGES})
    return plan, log


def test_two_gpu_slots_run_two_items_at_a_time_on_different_devices_and_fan_in_reruns_nothing(project, tmp_path,
                                                                                              monkeypatch):
    plan, log = project
    (tmp_path / "meet").mkdir()
    monkeypatch.setenv("FAKE_OVERLAP", str(tmp_path / "meet"))  # item 0 waits for a second item (see FAKE)
    outcomes = run_local(plan, [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}])
    assert sorted(o.stage for o in outcomes) == STAGES and all(o.ok for o in outcomes)
    runs = _entries(log)
    cells = [e for e in runs if e["what"][0] == "cell"]
    assert sorted(int(e["what"][1]) for e in cells) == list(range(6))
    assert [e["what"] for e in runs].count(["up"]) == 1  # the second worker restored it from the run-cache
    assert {e["cuda"] for e in cells} == {"0", "1"}
    for a in cells:  # at every start: at most 2 running, and on different devices
        running = [b for b in cells if b["start"] <= a["start"] < b["end"]]
        assert len(running) <= 2
        assert len({b["cuda"] for b in running}) == len(running)
    # it did overlap: item 0 met another running item (FAKE_OVERLAP), so two items ran at once on two workers
    assert (tmp_path / "meet" / "seen").exists()
    assert any(b is not a and b["start"] <= a["start"] < b["end"] for a in cells for b in cells)

    before = len(runs)
    r = fan_in(plan.repo, ["dvc", "repro"], capture=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ["up"] + STAGES:
        assert f"Stage '{stage}' is cached - skipping run" in r.stdout, r.stdout
    assert [e["what"] for e in _entries(log)[before:]] == [["collect"]]  # nothing but collect ran
    assert (plan.repo / "all.txt").read_text().count("of n=3") == 6

    assert run_local(plan, [{}, {}]) == []  # a second fanout has nothing to submit


def test_a_killed_job_is_the_only_one_run_again(project, monkeypatch):
    plan, log = project
    monkeypatch.setenv("FAKE_KILL", "4")
    first = run_local(plan, [{}, {}])
    assert {o.stage for o in first if not o.ok} == {"cell@4"}
    assert Ledger(plan.workdir / "done").done("cell@3", plan.commit)
    assert not Ledger(plan.workdir / "done").done("cell@4", plan.commit)
    assert plan.pending() == ["cell@4"]
    monkeypatch.delenv("FAKE_KILL")
    before = len(_entries(log))
    second = run_local(plan, [{}, {}])
    assert [o.stage for o in second] == ["cell@4"] and second[0].ok
    assert [e["what"] for e in _entries(log)[before:]] == [["cell", "4"]]


def test_a_dirty_tree_is_refused_before_anything_runs(project):
    plan, log = project
    (plan.repo / "fake.py").write_text(FAKE + "\n# edited\n")
    with pytest.raises(FanoutError, match="fake.py.*commit"):
        check_clean(plan.repo)
    assert not log.exists()


def test_a_cache_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(FanoutError, match="not-a-folder/cache is not writable.*dvc cache dir"):
        check_cache(blocker / "cache")
    check_cache(tmp_path / "cache")  # a folder that can be made and written: fine


def test_provenance_calls_a_checkout_dirty_for_code_not_for_what_a_run_writes(project):
    from mkd.pipeline.provenance import git_commit

    plan, _ = project
    assert git_commit(plan.repo) == plan.commit
    (plan.repo / "params.yaml").write_text("n: 4\n")  # what `dvc exp run -S n=4` (or a fanout worker) writes
    assert git_commit(plan.repo) == plan.commit
    (plan.repo / "fake.py").write_text(FAKE + "\n# edited\n")
    assert git_commit(plan.repo) == plan.commit + "+dirty"


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executors_run_the_same_path(project, cluster):
    submitit = pytest.importorskip("submitit")
    plan, log = project
    with pytest.raises(FanoutError, match="upstream stages up"):  # upstream not run yet: nothing is submitted
        run_submitit(plan, submitit.AutoExecutor(folder=plan.workdir / "submitit", cluster=cluster))
    assert not [e for e in _entries(log) if e["what"][0] == "cell"]
    run_upstream(plan)  # what `mkd fanout --upstream-only` does: once, in the first worker's clone
    assert [e["what"] for e in _entries(log)] == [["up"]]
    executor = submitit.AutoExecutor(folder=plan.workdir / "submitit", cluster=cluster)
    executor.update_parameters(**submitit_parameters(gpus_per_task=0, cpus_per_task=1, time_min=60, partition=None,
                                                     max_parallel=2))
    outcomes = run_submitit(plan, executor)
    assert sorted(o.stage for o in outcomes) == STAGES and all(o.ok for o in outcomes), outcomes
    before = len(_entries(log))
    r = fan_in(plan.repo, ["dvc", "repro"], capture=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(f"Stage '{s}' is cached - skipping run" in r.stdout for s in STAGES), r.stdout
    assert [e["what"] for e in _entries(log)[before:]] == [["collect"]]


def test_slurm_parameters_reach_the_sbatch_file(tmp_path, monkeypatch):
    """Our flags -> submitit -> #SBATCH lines, with stand-ins for srun and sbatch (no cluster here)."""
    submitit = pytest.importorskip("submitit")
    params = submitit_parameters(gpus_per_task=1, cpus_per_task=8, time_min=240, partition="gpu", max_parallel=4,
                                 mem_gb=64)
    assert params == {"timeout_min": 240, "gpus_per_node": 1, "cpus_per_task": 8, "tasks_per_node": 1, "nodes": 1,
                      "mem_gb": 64, "slurm_partition": "gpu", "slurm_array_parallelism": 4}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncat \"$1\" > {tmp_path}/submitted.sh\necho Submitted batch job 4242\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**params)
    jobs = executor.map_array(abs, [-1, -2, -3, -4, -5])
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(5)]
    sbatch = (tmp_path / "submitted.sh").read_text()
    for line in ("--partition=gpu", "--array=0-4%4", "--cpus-per-task=8", "--gpus-per-node=1", "--time=240",
                 "--mem=64GB", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}" in sbatch, sbatch


class _Job:
    """A submitit job as wait_for_jobs sees it: done() once its result file exists."""

    def __init__(self, job_id: str, stage: str, result_at_poll: int | None, polls: list):
        self.job_id, self.stage, self.result_at_poll, self.polls = job_id, stage, result_at_poll, polls

    def done(self) -> bool:
        return self.result_at_poll is not None and len(self.polls) >= self.result_at_poll

    def result(self) -> dict:
        return {"stage": self.stage, "ok": True, "seconds": 1.0, "where": f"vm job {self.job_id}", "log": "log"}


def test_jobs_the_scheduler_reports_ended_without_a_result_are_reported_not_waited_for():
    """What Slurm itself says (squeue), for a cluster whose sacct has no accounting database: cancelled -> failed
    at once; gone from the queue on two polls -> failed; COMPLETED but no result -> failed after the grace;
    a job whose result comes is ok; no answer from squeue (None) is no news."""
    from mkd.pipeline.fanout import wait_for_jobs

    answers = [{"1_0": "RUNNING", "1_1": "PENDING", "1_2": "RUNNING", "1_3": "RUNNING"},
               None,                                                       # squeue did not answer
               {"1_0": "CANCELLED", "1_2": "COMPLETED", "1_3": "RUNNING"},  # 1_1 left the queue
               {"1_0": "CANCELLED", "1_2": "COMPLETED", "1_3": "COMPLETED"}]
    polls: list = []

    def queue_states(ids):
        polls.append(sorted(ids))
        assert len(polls) < 1000, "wait_for_jobs still waits on jobs the scheduler reported ended"
        return answers[min(len(polls), len(answers)) - 1]

    stages = ["cell@a", "cell@b", "cell@c", "cell@d"]
    jobs = [_Job("1_0", "cell@a", None, polls), _Job("1_1", "cell@b", None, polls),
            _Job("1_2", "cell@c", None, polls), _Job("1_3", "cell@d", 4, polls)]
    outcomes = wait_for_jobs(stages, jobs, queue_states=queue_states, poll_s=0.01, grace_s=0.05)
    assert [o.stage for o in outcomes] == stages
    logs = {o.stage: (o.ok, o.log) for o in outcomes}
    assert logs["cell@a"] == (False, "Slurm: CANCELLED, no result")
    assert logs["cell@b"][0] is False and logs["cell@b"][1].startswith("Slurm: no longer in the queue")
    assert logs["cell@c"] == (False, "Slurm: COMPLETED, no result after 0 s")
    assert logs["cell@d"] == (True, "log")
    assert polls[2] == ["1_0", "1_1", "1_2", "1_3"] and "1_0" not in polls[3]  # a reported job is asked no more


@pytest.mark.parametrize("squeue_says, stopped", [
    ("7_3|RUNNING", False),
    ("7_3|COMPLETING", True),    # cancelled or timed out: its processes are being signalled
    ("7_3|CANCELLED", True),
    ("7_3|PENDING", True),       # requeued
    ("7_2|RUNNING", False),      # this task not listed: no news
    (None, False),               # squeue fails (controller restarting): no news
])
def test_a_job_asks_slurm_whether_it_is_being_stopped(squeue_says, stopped, tmp_path, monkeypatch):
    """Slurm signals a job's processes in no set order, so a stage can fail before the job's own SIGTERM comes;
    the controller's state, changed before it signals, is what says the job is being stopped (then it leaves no
    result). squeue is asked for this array task as squeue names it."""
    from mkd.pipeline.fanout import _stopped_by_slurm

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/asked\"\n"
                                    + (f"echo '{squeue_says}'\n" if squeue_says else "exit 1\n"))
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert _stopped_by_slurm() is False and not (bin_dir / "asked").exists()  # outside Slurm: nothing asked
    monkeypatch.setenv("SLURM_JOB_ID", "10")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _stopped_by_slurm() is stopped
    assert (bin_dir / "asked").read_text().split()[-2:] == ["-j", "7"]


def test_a_job_whose_function_raised_is_reported_with_the_exception_and_where_to_read_on(tmp_path):
    """submitit's FailedJobError ends with log paths; the report's line gives the exception itself."""
    submitit = pytest.importorskip("submitit")
    from mkd.pipeline.fanout import wait_for_jobs

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=2)
    [job] = executor.map_array(int, ["xx-YY"])  # a function the job can import, raising
    [outcome] = wait_for_jobs(["cell@xx"], [job], poll_s=0.1)
    assert outcome.ok is False
    assert outcome.log.startswith("FailedJobError: ValueError: invalid literal for int() with base 10: 'xx-YY' (see "), outcome.log
    assert outcome.log.endswith(f"{job.paths.stderr})")
