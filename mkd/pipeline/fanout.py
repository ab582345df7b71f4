"""Fan a DVC matrix stage's items out over parallel workers, and fan them back in through DVC's run-cache.

`dvc repro` runs stages one after another (it has no --jobs). Here each worker is a git clone of the
committed project (under .mkd/fanout/) whose DVC cache is the project's own; a worker runs the ordinary
`dvc repro --single-item <stage>`, so DVC files every finished stage in the shared run-cache. Fan-in is then an
ordinary `dvc repro` / `dvc exp run` in the project: each stage a worker ran is restored from the run-cache
("Stage '...' is cached - skipping run") instead of run again. A ledger (a file per finished stage, keyed by a
fingerprint of commit and parameters) lets a second fanout submit only what is still missing.

Engines (no scheduler of our own): `run_local` starts one worker per slot (a GPU id, or a share of the CPU
cores) on this machine; `run_submitit` submits one job per stage as a job array through submitit (SLURM, or
its `local` / `debug` executors) and, on SLURM, also asks the scheduler (squeue) whether a job ended without a
result, which submitit learns only from an accounting database. Nothing here knows about mkd's grid: `mkd.cli`
builds the `Plan`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mkd.core import atomic
from mkd.core.errors import MkdError

# A worker runs stage commands with this set; mkd's computing commands then refuse to run (mkd.cli): a stage
# that should have been restored from the run-cache is reported, never silently re-trained.
RESTORE_ONLY_ENV = "MKD_RESTORE_ONLY"
FANOUT_DIR = Path(".mkd") / "fanout"


class FanoutError(MkdError):
    """A fanout that cannot start (dirty tree, unreachable cache, missing upstream) or a fan-in with gaps."""


@dataclass
class Plan:
    """What to fan out: `stages` (DVC stage names, e.g. cell@en-low-random-off-0) after `upstream` (the stages
    they depend on, run once and restored by every worker). `files` are written over the clone's committed
    files (e.g. params.yaml with a profile applied); `fingerprints` name each stage's inputs in the ledger."""

    repo: Path
    name: str
    commit: str
    cache_dir: Path
    stages: list[str]
    upstream: list[str]
    fingerprints: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return self.repo / FANOUT_DIR / self.name

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.workdir / "done")

    def pending(self) -> list[str]:
        return [s for s in self.stages if not self.ledger.done(s, self.fingerprints[s])]


def file_name(stage: str) -> str:
    """A DVC stage name (cell@en-low-random-off-0) as a file or folder name."""
    return stage.replace("@", "__")


class Ledger:
    """One JSON file per finished stage: {stage, fingerprint, seconds, where}."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, stage: str) -> Path:
        return self.folder / f"{file_name(stage)}.json"

    def done(self, stage: str, fingerprint: str) -> bool:
        try:
            return json.loads(self._path(stage).read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError):
            return False

    def mark(self, stage: str, fingerprint: str, **info) -> None:
        atomic.write_json(self._path(stage), {"stage": stage, "fingerprint": fingerprint, **info})


@contextlib.contextmanager
def one_at_a_time(workdir: Path, what: str):
    """Hold the lock of a profile's fanout in this checkout: a second `mkd fanout` or `mkd fanin` of the profile
    is refused at once, naming the one that runs (two would run the same cells in the same worker clones). An
    flock, which the kernel releases when its holder ends, however it ends: a killed fanout leaves nothing to
    clean up."""
    import fcntl

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / "lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FanoutError(f"{holder} is running in this checkout ({workdir}); one fanout or fan-in of a profile runs "
                          "at a time: wait for it to end, or stop it (kill the PID) and run this again") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"`{what}` (PID {os.getpid()})")
        handle.flush()
        yield
    finally:
        handle.close()


SLURM_TOOLS = ("sbatch", "srun", "squeue", "scontrol")  # submitit submits with sbatch and srun; mkd asks squeue


def check_slurm(env: dict | None = None) -> None:
    """Before submitting anything: the Slurm commands are on PATH and a controller answers (`scontrol ping`)."""
    path = (env or os.environ).get("PATH")
    missing = [t for t in SLURM_TOOLS if shutil.which(t, path=path) is None]
    if missing:
        raise FanoutError(f"--engine slurm needs Slurm's commands, and {', '.join(missing)} is not on PATH: run mkd "
                          "fanout on a Slurm login node (or load its module), or use --engine local")
    try:
        r = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=60)
        answer = (r.stdout + r.stderr).strip()
        up = r.returncode == 0 and " is UP" in answer
    except subprocess.TimeoutExpired:
        answer, up = "no answer in 60 s", False
    if not up:
        last = answer.splitlines()[-1] if answer else f"exit {r.returncode}"
        raise FanoutError(f"no Slurm controller answers (`scontrol ping`: {last}): start slurmctld, or point SLURM_CONF "
                          "at the cluster's slurm.conf (a one-node cluster to try: scripts/slurm/start.sh)")


# Ids CUDA_VISIBLE_DEVICES takes: an index, or a GPU / MIG UUID as `nvidia-smi -L` prints them.
GPU_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


def gpu_ids(text: str) -> list[str]:
    """`--gpus 0,1,2` as a list of ids; empty entries, unknown forms and repeats are refused."""
    ids = [g.strip() for g in text.split(",")]
    example = "e.g. 0,1,2,3, or UUIDs such as GPU-5b1c... / MIG-... from `nvidia-smi -L`"
    if not text.strip() or "" in ids:
        raise FanoutError(f"--gpus takes a comma-separated list of GPU ids, {example}; got {text!r}")
    bad = [g for g in ids if not GPU_ID.match(g)]
    if bad:
        raise FanoutError(f"--gpus: {', '.join(repr(b) for b in bad)} is no GPU id; {example}")
    repeated = sorted({g for g in ids if ids.count(g) > 1})
    if repeated:
        raise FanoutError(f"--gpus names GPU {', '.join(repeated)} twice: two workers would share it; name each once")
    return ids


@dataclass
class Outcome:
    stage: str
    ok: bool
    seconds: float
    where: str
    log: str


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def check_clean(repo: Path, allowed: tuple[str, ...] = ()) -> str:
    """The commit workers will run; refuses a work tree whose tracked files differ from it (workers would not
    see the change), except paths starting with one of `allowed` (outputs a previous run rewrote)."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        raise FanoutError(f"{repo} has no git commit; workers clone the committed project: `git commit` first") from None
    changed = _git(repo, "diff", "--name-only", "HEAD").splitlines()  # staged or not
    dirty = [p for p in changed if not p.startswith(allowed)]
    if dirty:
        raise FanoutError(f"the work tree differs from the commit in {', '.join(dirty[:5])}"
                          f"{' ...' if len(dirty) > 5 else ''}; workers run the committed code and parameters: "
                          "commit (or `git stash`) the change, then fan out again")
    return commit


def check_cache(cache_dir: Path) -> None:
    """The shared DVC cache must exist and be writable from here (and, for SLURM, from the compute nodes)."""
    probe = Path(cache_dir) / f".mkd-fanout-probe-{os.getpid()}"
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise FanoutError(f"the DVC cache {cache_dir} is not writable ({e.strerror}); workers store their results "
                          "there: set `dvc cache dir` to a folder every worker can write") from None


def prepare_clone(plan: Plan, path: Path) -> Path:
    """A clone of plan.commit at `path` whose DVC cache is the project's (hard links: no copies of models)."""
    path = Path(path)
    if not ((path / ".git").exists() and _git(path, "rev-parse", "HEAD") == plan.commit):
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(plan.repo), str(path)], check=True)
        _git(path, "checkout", "-q", "--detach", plan.commit)
    (path / ".dvc" / "config.local").write_text(
        f"[cache]\n    dir = {Path(plan.cache_dir).resolve()}\n    type = \"hardlink,copy\"\n")
    for rel, text in plan.files.items():
        (path / rel).write_text(text)
    return path


def _dvc(clone: Path, args: list[str], env: dict, log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ dvc {' '.join(args)}\n")
        out.flush()
        return subprocess.run(["dvc", *args], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def worker_env(plan: Plan, clone: Path, slot_env: dict | None = None) -> dict:
    """The environment of a worker's DVC: the clone's own code first on the import path."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", **plan.env, **(slot_env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(clone)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def restore_upstream(plan: Plan, clone: Path, env: dict, log: Path, restore_only: bool) -> None:
    """Bring the upstream stages' outputs into the clone: run them (the first worker) or restore them from the
    run-cache (every other worker, `restore_only`: a stage that would have to run is an error)."""
    if not plan.upstream:
        return
    if restore_only:
        env = {**env, RESTORE_ONLY_ENV: "1"}
    if _dvc(clone, ["repro", *plan.upstream], env, log) != 0:
        how = ("they are not in the run-cache: run them first (`mkd fanout` does on the local engine)"
               if restore_only else "they failed")
        raise FanoutError(f"upstream stages {', '.join(plan.upstream)} could not be brought into {clone}: {how}; see {log}")


def run_stage(plan: Plan, clone: Path, stage: str, env: dict, where: str) -> Outcome:
    log = plan.workdir / "logs" / f"{file_name(stage)}.log"
    log.unlink(missing_ok=True)
    t0 = time.time()
    ok = _dvc(clone, ["repro", "--single-item", stage], env, log) == 0
    seconds = time.time() - t0
    if ok:
        plan.ledger.mark(stage, plan.fingerprints[stage], seconds=round(seconds, 1), where=where)
    return Outcome(stage, ok, seconds, where, str(log))


def run_upstream(plan: Plan, slot: dict | None = None) -> Path:
    """Run (or restore) the upstream stages once, in the first worker's clone; returns the clone."""
    clone = prepare_clone(plan, plan.workdir / "worker0")
    restore_upstream(plan, clone, worker_env(plan, clone, slot), plan.workdir / "logs" / "upstream-worker0.log",
                     restore_only=False)
    return clone


def run_local(plan: Plan, slots: list[dict], on_done=None) -> list[Outcome]:
    """Run the plan's pending stages on this machine, one worker per slot (a dict of environment variables,
    e.g. {"CUDA_VISIBLE_DEVICES": "1"}), each in its own clone. The first worker runs the
    upstream stages before the others start. Returns an Outcome per stage, in the order they finished."""
    todo: queue.Queue[str] = queue.Queue()
    for s in plan.pending():
        todo.put(s)
    if todo.empty():
        return []
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    clones = [run_upstream(plan, slots[0])] + [prepare_clone(plan, plan.workdir / f"worker{i}")
                                               for i in range(1, len(slots))]
    envs = [worker_env(plan, clone, slot) for clone, slot in zip(clones, slots)]

    def work(i: int) -> None:
        if i > 0:  # worker 0 ran them above
            restore_upstream(plan, clones[i], envs[i], plan.workdir / "logs" / f"upstream-worker{i}.log", restore_only=True)
        while True:
            try:
                stage = todo.get_nowait()
            except queue.Empty:
                return
            outcome = run_stage(plan, clones[i], stage, envs[i], where=f"worker{i} {slots[i]}")
            with lock:
                outcomes.append(outcome)
                if on_done:
                    on_done(outcome)

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # reported after the other workers finish
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(len(slots))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors and not outcomes:
        raise errors[0]
    return outcomes


def _job(plan_fields: dict, stage: str) -> dict:
    """One submitit job: a fresh clone of its own (removed after success), upstream restored, the stage run. Fresh,
    because an earlier run of the job that Slurm stopped (requeued, cancelled) may have left it mid-stage."""
    plan = Plan(**{**plan_fields, "repo": Path(plan_fields["repo"]), "cache_dir": Path(plan_fields["cache_dir"])})
    clone = plan.workdir / "jobs" / file_name(stage)
    shutil.rmtree(clone, ignore_errors=True)
    prepare_clone(plan, clone)
    env = worker_env(plan, clone)
    restore_upstream(plan, clone, env, plan.workdir / "logs" / f"upstream-{file_name(stage)}.log", restore_only=True)
    job_id = os.environ.get("SLURM_JOB_ID", "")
    with _sigterm_recorded() as sigterms:
        outcome = run_stage(plan, clone, stage, env, where=f"{os.uname().nodename} job {job_id}".strip())
        if not outcome.ok and (sigterms or _stopped_by_slurm()):
            # Slurm is stopping the job (cancel, time limit, preemption, requeue), and the stage failed only because
            # its processes were stopped: a result saying so would be wrong. A requeued job runs again and its next
            # run gives the result, while submitit would take this one's; so the job ends without one (the fanout
            # learns a cancelled or timed-out job from Slurm: wait_for_jobs).
            os._exit(128 + signal.SIGTERM)  # no result file: submitit writes one only when the function returns
    if outcome.ok:
        shutil.rmtree(clone, ignore_errors=True)
    return asdict(outcome)


@contextlib.contextmanager
def _sigterm_recorded():
    """The SIGTERMs this process receives meanwhile (Slurm's stop signal), recorded instead of bypassed (submitit's
    handler); a list, empty if none came. Outside Slurm, or off the main thread (submitit's debug executor), the
    list stays empty and nothing changes."""
    received: list[int] = []
    if "SLURM_JOB_ID" not in os.environ or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by_slurm() -> bool:
    """Whether Slurm is stopping this process's job. Slurm signals all of a job's processes, in no set order: the
    stage's processes can die and its failure come back before this process's own SIGTERM (seen in CI, loaded).
    The controller changes the job's state (CANCELLED, TIMEOUT, PREEMPTED, requeued: not RUNNING) before it
    signals, so asking it closes that race. False outside Slurm and when squeue does not answer."""
    if "SLURM_JOB_ID" not in os.environ:
        return False
    job = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
           if "SLURM_ARRAY_TASK_ID" in os.environ else os.environ["SLURM_JOB_ID"])
    states = slurm_queue_states([job])
    return states is not None and states.get(job, "RUNNING") != "RUNNING"


# The states in which a Slurm job has ended (squeue --states=all lists them for MinJobAge, 300 s by default).
SLURM_ENDED = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                         "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"})


def slurm_queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's own state of each job ("123_4" -> RUNNING, CANCELLED, ...) from squeue, which needs no accounting
    database (sacct, which submitit asks, does); a job that ended more than MinJobAge ago is absent. None when
    squeue cannot answer (e.g. the controller restarting): no news."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    r = subprocess.run(["squeue", "-h", "--array", "--states=all", "-o", "%i|%T", "-j", ",".join(arrays)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return dict(line.split("|", 1) for line in r.stdout.split() if "|" in line)


def _why_the_job_failed(e: Exception) -> str:
    """One line for the report of a job with no usable result. submitit's FailedJobError (the job's function
    raised) holds the traceback between dashed lines and ends with the log paths: the traceback's last line (the
    exception) is what says why, and the stderr path where to read on."""
    text = str(e)
    parts = text.split("----------------------")
    if len(parts) >= 3:
        lines = [line for line in parts[1].splitlines() if line.strip()]
        paths = [line.strip(" -") for line in parts[2].splitlines() if line.strip().startswith("- ")]
        return f"{type(e).__name__}: {lines[-1] if lines else '(no traceback)'}" + (f" (see {paths[0]})" if paths else "")
    return f"{type(e).__name__}: {text[-300:]}"


def wait_for_jobs(stages: list[str], jobs: list, queue_states=None, poll_s: float = 1.0,
                  grace_s: float = 60.0) -> list[Outcome]:
    """Wait for submitit jobs (one per stage); an Outcome per stage, in their order. submitit alone learns
    that a job ended without a result (cancelled, timed out, killed with its node) only from sacct, so on a cluster
    without accounting it would wait forever. `queue_states` (slurm_queue_states) is the scheduler's own view: a
    job it reports ended, but not COMPLETED, failed; one missing from the queue on two polls in a row failed (an
    array task cancelled before it started leaves the queue at once, with no completion record); a COMPLETED job
    whose result has not appeared within `grace_s` (a shared filesystem's attribute cache) failed too."""
    outcomes: dict[str, Outcome] = {}
    no_result_since: dict[str, float] = {}
    missing: dict[str, int] = {}
    while len(outcomes) < len(jobs):
        waiting = [(s, j) for s, j in zip(stages, jobs) if s not in outcomes]
        states = queue_states([j.job_id for _, j in waiting]) if queue_states else None
        for stage, job in waiting:
            if job.done():  # its result file is there (or sacct says it ended)
                try:
                    outcomes[stage] = Outcome(**job.result())
                except Exception as e:  # a job that failed or was killed: its stage is reported, the others kept
                    outcomes[stage] = Outcome(stage, False, 0.0, f"job {job.job_id}", _why_the_job_failed(e))
                continue
            if states is None:  # no scheduler to ask, or it did not answer this time
                continue
            state = states.get(job.job_id)
            missing[stage] = 0 if state else missing.get(stage, 0) + 1
            failure = None
            if state in SLURM_ENDED - {"COMPLETED"}:
                failure = f"Slurm: {state}, no result"
            elif missing[stage] >= 2:
                failure = "Slurm: no longer in the queue (cancelled before it started?), no result"
            elif state == "COMPLETED" and time.time() - no_result_since.setdefault(stage, time.time()) > grace_s:
                failure = f"Slurm: COMPLETED, no result after {grace_s:.0f} s"
            if failure:
                outcomes[stage] = Outcome(stage, False, 0.0, f"job {job.job_id}", failure)
        if len(outcomes) < len(jobs):
            time.sleep(poll_s)
    return sorted(outcomes.values(), key=lambda o: stages.index(o.stage))


def run_submitit(plan: Plan, executor, grace_s: float = 60.0) -> list[Outcome]:
    """Submit the pending stages as one job array on a submitit executor and wait for them. The upstream
    stages must already be in the run-cache (checked in a clone before anything is submitted)."""
    pending = plan.pending()
    if not pending:
        return []
    check = prepare_clone(plan, plan.workdir / "check")
    restore_upstream(plan, check, worker_env(plan, check), plan.workdir / "logs" / "upstream-check.log", restore_only=True)
    fields = {**asdict(plan), "repo": str(plan.repo), "cache_dir": str(plan.cache_dir)}
    jobs = executor.map_array(_job, [fields] * len(pending), pending)
    slurm = getattr(executor, "cluster", None) == "slurm"
    return wait_for_jobs(pending, jobs, queue_states=slurm_queue_states if slurm else None, grace_s=grace_s)


def submitit_parameters(*, gpus_per_task: int, cpus_per_task: int, time_min: int, partition: str | None,
                        max_parallel: int | None, mem_gb: int | None = None) -> dict:
    """Our flags as submitit.AutoExecutor.update_parameters arguments (generic names work on every cluster
    type; slurm_* ones only on SLURM, where they become #SBATCH --partition / --array=...%N)."""
    params = {"timeout_min": time_min, "gpus_per_node": gpus_per_task, "cpus_per_task": cpus_per_task,
              "tasks_per_node": 1, "nodes": 1}
    if mem_gb:
        params["mem_gb"] = mem_gb
    if partition:
        params["slurm_partition"] = partition
    if max_parallel:
        params["slurm_array_parallelism"] = max_parallel
    return params


def fan_in(repo: Path, command: list[str], env: dict | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    """Run the ordinary pipeline (`dvc repro` / `dvc exp run ...`) in the project with computing stages refused:
    every fanned-out stage comes from the run-cache (DVC prints "Stage '...' is cached - skipping run" for each)."""
    env = {**(env or os.environ), "DVC_NO_ANALYTICS": "1", RESTORE_ONLY_ENV: "1"}
    return subprocess.run(command, cwd=repo, env=env, capture_output=capture, text=True)
