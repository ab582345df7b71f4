"""The SLURM engine against a real scheduler: a one-node Slurm on localhost (scripts/slurm/start.sh, the `slurm`
fixture), the synthetic DVC project of tests/test_fanout.py, and submitit's slurm executor with the flags
`mkd fanout --engine slurm` gives it. What is checked comes from Slurm's own job-completion log and from the
project's log, not from mkd's word: every cell ran once, as a task of one job array; at most --max-parallel
tasks ran at once (and two did); tasks cancelled with `scancel`, running or waiting in the queue, are reported,
and are the only ones a second fanout submits; a requeued task runs again and its second run is the cell's
result; fan-in restores every cell from DVC's run-cache. The tiny real project goes through the CLI in
tests/test_dvc.py (cells.csv byte for byte the sequential run's).
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from mkd.pipeline.fanout import fan_in, run_submitit, run_upstream, slurm_queue_states, submitit_parameters
from test_fanout import STAGES, _entries, project  # noqa: F401 (project is a fixture)

pytestmark = pytest.mark.slow


def _executor(plan, max_parallel=2):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=plan.workdir / "submitit", cluster="slurm")
    executor.update_parameters(**submitit_parameters(gpus_per_task=0, cpus_per_task=1, time_min=10, partition=None,
                                                     max_parallel=max_parallel))
    return executor


def _slurm_job(outcome) -> str:
    """The SLURM_JOB_ID a finished stage ran as (mkd's ledger and outcome say '<node> job <id>')."""
    return outcome.where.split(" job ")[1]


def _most_at_once(records) -> int:
    """The most jobs running at one moment, from Slurm's start and end times (whole seconds: a job that started
    in the second another ended is not counted with it, as truncation keeps the order of the two)."""
    return max(sum(1 for b in records if b["StartTime"] <= a["StartTime"] < b["EndTime"]) for a in records)


def test_a_job_array_runs_every_cell_once_at_most_max_parallel_at_a_time(project, slurm, tmp_path, monkeypatch):
    plan, log = project
    (tmp_path / "meet").mkdir()
    monkeypatch.setenv("FAKE_OVERLAP", str(tmp_path / "meet"))  # item 0 ends only after it has met a second item
    run_upstream(plan)
    outcomes = run_submitit(plan, _executor(plan, max_parallel=2))
    assert [o.stage for o in outcomes] == STAGES and all(o.ok for o in outcomes), outcomes

    cells = [e["what"][1] for e in _entries(log) if e["what"][0] == "cell"]
    assert sorted(cells) == [str(i) for i in range(6)]  # each cell ran once
    tasks = slurm.array_of(_slurm_job(outcomes[0]), tasks=6)  # Slurm's record of the array
    assert sorted(int(r["ArrayTaskId"]) for r in tasks) == list(range(6))
    assert {r["JobState"] for r in tasks} == {"COMPLETED"}
    assert {_slurm_job(o) for o in outcomes} == {r["JobId"] for r in tasks}
    # the node offers 8 CPUs and each task asks for 1: the %2 of --array=0-5%2 is what held them to two
    assert _most_at_once(tasks) == 2, tasks

    r = fan_in(plan.repo, ["dvc", "repro"], capture=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ["up"] + STAGES:
        assert f"Stage '{stage}' is cached - skipping run" in r.stdout, r.stdout
    assert run_submitit(plan, _executor(plan)) == []  # a second fanout has nothing to submit


def _queue(array: str) -> dict[str, str]:
    states = slurm_queue_states([array])
    assert states is not None, "squeue did not answer"
    return states


def _hanging_job(tmp_path, fanout) -> str:
    """The Slurm job ("array_task") of the cell FAKE_HANG keeps running, once it runs."""
    marker = tmp_path / "hanging"
    deadline = time.time() + 300
    while not marker.exists() and fanout.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the hanging cell never started"
    return marker.read_text()


def test_cells_cancelled_with_scancel_are_the_only_ones_a_second_fanout_submits(project, slurm, tmp_path, monkeypatch):
    """One cell cancelled while it runs (its job still writes a result: the stage failed), one while it waits in
    the queue (no result ever comes: only Slurm can say it ended; submitit, asking sacct, would wait forever)."""
    plan, log = project
    monkeypatch.setenv("FAKE_HANG", "0")  # cell 0 runs until cancelled, and names its Slurm job
    monkeypatch.setenv("FAKE_HANG_DIR", str(tmp_path))
    run_upstream(plan)
    executor = _executor(plan, max_parallel=1)  # while cell 0 hangs, every other cell waits in the queue
    result = {}
    fanout = threading.Thread(target=lambda: result.update(outcomes=run_submitit(plan, executor, grace_s=5)))
    fanout.start()
    running = _hanging_job(tmp_path, fanout)
    array = running.split("_")[0]
    waiting = sorted(task for task, state in _queue(array).items() if state == "PENDING")
    assert waiting, _queue(array)
    subprocess.run(["scancel", waiting[-1]], check=True)
    subprocess.run(["scancel", running], check=True)
    fanout.join(timeout=300)
    assert not fanout.is_alive(), "the fanout still waits for a cancelled job"

    outcomes = result["outcomes"]
    waited = STAGES[int(waiting[-1].split("_")[1])]  # the array's task i is the i-th pending stage
    assert sorted(o.stage for o in outcomes if not o.ok) == sorted(["cell@0", waited])
    assert next(o.log for o in outcomes if o.stage == waited).startswith("Slurm: no longer in the queue")
    assert next(o.log for o in outcomes if o.stage == "cell@0") == "Slurm: CANCELLED, no result"  # stopped: no result
    assert sorted(plan.pending()) == sorted(["cell@0", waited])
    first = slurm.array_of(_slurm_job(next(o for o in outcomes if o.ok)), tasks=5)
    # Slurm's records: the running task CANCELLED; the waiting one has none (Slurm writes no completion record
    # for an array task cancelled before it started), only the controller's kill request in its log
    assert sorted((r["ArrayTaskId"], r["JobState"]) for r in first) == sorted(
        [("0", "CANCELLED")] + [(str(i), "COMPLETED") for i in range(1, 6) if STAGES[i] != waited])
    assert f"REQUEST_KILL_JOB JobId={waiting[-1]} " in (slurm.folder / "log" / "slurmctld.log").read_text()

    monkeypatch.delenv("FAKE_HANG")
    before = len(_entries(log))
    second = run_submitit(plan, executor)
    assert sorted(o.stage for o in second) == sorted(["cell@0", waited]) and all(o.ok for o in second), second
    assert sorted(e["what"][1] for e in _entries(log)[before:]) == sorted(["0", waited.split("@")[1]])
    again = slurm.array_of(_slurm_job(second[0]), tasks=2)
    assert sorted((r["ArrayTaskId"], r["JobState"]) for r in again) == [("0", "COMPLETED"), ("1", "COMPLETED")]

    r = fan_in(plan.repo, ["dvc", "repro"], capture=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in STAGES:
        assert f"Stage '{stage}' is cached - skipping run" in r.stdout, r.stdout


def test_a_requeued_cell_runs_again_and_its_second_run_gives_the_result(project, slurm, tmp_path, monkeypatch):
    """`scontrol requeue` (what preemption or a failed node does): Slurm stops the running job with SIGTERM and
    queues it again. The stopped run must leave no result (before, its job returned "failed" and the fanout
    reported a cell that Slurm was about to run again): the fanout waits on, and the second run is the cell's."""
    plan, log = project
    monkeypatch.setenv("FAKE_HANG", "0")  # cell 0's first run runs until Slurm stops it; its requeued run goes on
    monkeypatch.setenv("FAKE_HANG_DIR", str(tmp_path))
    run_upstream(plan)
    result = {}
    fanout = threading.Thread(target=lambda: result.update(outcomes=run_submitit(plan, _executor(plan))))
    fanout.start()
    job = _hanging_job(tmp_path, fanout)
    subprocess.run(["scontrol", "requeue", job], check=True)
    # Slurm holds a requeued job back for 120 s (against requeue loops); an administrator's update lets it start now
    deadline = time.time() + 120
    while _queue(job.split("_")[0]).get(job) != "PENDING" and time.time() < deadline:
        time.sleep(0.1)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    fanout.join(timeout=300)
    assert not fanout.is_alive(), "the fanout still waits"

    outcomes = result["outcomes"]
    assert [o.stage for o in outcomes] == STAGES and all(o.ok for o in outcomes), outcomes
    cells = [e["what"][1] for e in _entries(log) if e["what"][0] == "cell"]
    assert sorted(cells) == [str(i) for i in range(6)]  # cell 0 once: the stopped run wrote nothing
    records = slurm.array_of(_slurm_job(outcomes[1]), tasks=7)
    first_cell = [r["JobState"] for r in records if r["ArrayTaskId"] == "0"]
    assert len(first_cell) == 2 and first_cell[-1] == "COMPLETED" and first_cell[0] != "COMPLETED", records
    assert plan.pending() == []
