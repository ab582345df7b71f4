"""Interleaved execution of benchmark workers by time slicing (SIGSTOP / SIGCONT).

Two contenders timed one after the other on a shared machine see different background load. Here each
contender is a queue of worker processes; the scheduler lets one group's current worker run for its slice,
pauses it (SIGSTOP to its process group), lets the next group's worker run, and so on, so that both sample
the machine's load over the same period, and never run at the same time. It records, for each worker, the
intervals in which it was running; a worker's own time spans (benchmark.common.Spans) are turned into
active seconds with them. Peak memory is the worker's ru_maxrss, read with os.wait4 when it exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmark.common import span_totals

POLL = 0.02


@dataclass
class Job:
    name: str
    group: str
    kind: str                     # worker kind (benchmark.workers)
    spec: dict
    run_dir: Path
    proc: subprocess.Popen | None = None
    intervals: list = field(default_factory=list)
    started_at: float | None = None
    running_since: float | None = None
    rc: int | None = None
    maxrss_kb: int | None = None
    result: dict | None = None

    @property
    def spec_path(self) -> Path:
        return self.run_dir / f"{self.name}.spec.json"

    @property
    def out_path(self) -> Path:
        return self.run_dir / f"{self.name}.out.json"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    # ------------------------------------------------------------------ derived numbers
    @property
    def process_seconds(self) -> float:
        """Active seconds from spawn to exit (interpreter start and imports included)."""
        return sum(b - a for a, b in self.intervals)

    def totals(self) -> dict[str, float]:
        return span_totals(self.result.get("spans", []), self.intervals) if self.result else {}

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(json.dumps(self.spec, indent=1, default=str))
        log = open(self.log_path, "w")
        self.started_at = self.running_since = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmark.workers", self.kind, str(self.spec_path), str(self.out_path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]),
        )
        log.close()

    def pause(self) -> None:
        if self.proc is not None and self.rc is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            now = time.monotonic()
            self.intervals.append((self.running_since, now))
            self.running_since = None

    def resume(self) -> None:
        if self.proc is not None and self.rc is None:
            self.running_since = time.monotonic()
            os.killpg(self.proc.pid, signal.SIGCONT)

    def poll(self) -> bool:
        """True once the process has exited (then rc, maxrss_kb, result are set)."""
        if self.rc is not None:
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        now = time.monotonic()
        if self.running_since is not None:
            self.intervals.append((self.running_since, now))
            self.running_since = None
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc
        self.maxrss_kb = usage.ru_maxrss
        if self.out_path.exists():
            self.result = json.loads(self.out_path.read_text())
        return True

    def kill(self) -> None:
        if self.proc is not None and self.rc is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                os.wait4(self.proc.pid, 0)
            except ChildProcessError:
                pass
            self.rc = -15

    def failure(self) -> str:
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        return f"worker {self.name} ({self.kind}) exited with {self.rc}; log {self.log_path}:\n{tail}"


class WorkerFailed(RuntimeError):
    pass


def run_interleaved(queues: dict[str, list[Job]], slices: dict[str, float],
                    refill: Callable[[str, dict[str, list[Job]]], Job | None] | None = None,
                    on_done: Callable[[Job], None] | None = None) -> list[Job]:
    """Run every queue's jobs in order, the groups taking turns: the current job of a group runs for
    slices[group] seconds (or until it exits), then is paused and the next group's job runs.

    refill(group, queues) is asked for one more job when a group's queue empties while another group still
    has work (to keep both sampling the same period); it returns a Job or None.
    Returns every finished job in completion order. A worker that fails stops everything (WorkerFailed).
    """
    order = list(queues)
    done: list[Job] = []
    alive: list[Job] = []
    try:
        while any(queues[g] for g in order):
            for g in order:
                if not queues[g]:
                    continue
                job = queues[g][0]
                if job.proc is None:
                    job.start()
                    alive.append(job)
                else:
                    job.resume()
                deadline = time.monotonic() + slices.get(g, 10.0)
                others_busy = any(queues[o] for o in order if o != g)
                finished = False
                while True:
                    if job.poll():
                        finished = True
                        break
                    if others_busy and time.monotonic() >= deadline:
                        break
                    time.sleep(POLL)
                if not finished:
                    job.pause()
                    continue
                alive.remove(job)
                queues[g].pop(0)
                if job.rc != 0 or job.result is None:
                    raise WorkerFailed(job.failure())
                done.append(job)
                if on_done is not None:
                    on_done(job)
                if not queues[g] and refill is not None and any(queues[o] for o in order if o != g):
                    extra = refill(g, queues)
                    if extra is not None:
                        queues[g].append(extra)
    finally:
        for job in alive:
            job.kill()
    return done


def run_alone(job: Job) -> Job:
    """One job, nothing interleaved."""
    run_interleaved({job.group: [job]}, {job.group: 1e9})
    return job
