"""What made a result, beside its parameters: recorded in every cell's info.json, gathered by collect into
results/<profile>/provenance.json and compared by `mkd verify` when a re-run's numbers differ."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from mkd.core.kernels import cpu_kernels


def package_set() -> list[str]:
    """Every installed distribution as name==version, sorted: what requirements.lock pins."""
    from importlib import metadata

    return sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]})


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Tracked files a run itself rewrites: `dvc exp run -S` (and a fanout worker) writes the run's values into
# params.yaml (each result records its own parameter digest), DVC the lock, collect and analyze their tables.
# A change there does not make the code differ from the commit.
RUN_WRITTEN = ("params.yaml", "dvc.lock", "results/", "paper_tables/")


def git_commit(root=".") -> str | None:
    """HEAD of the checkout the code runs from, '+dirty' when tracked files other than RUN_WRITTEN differ from it;
    None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return None
        changed = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=root, capture_output=True, text=True,
                                 timeout=30).stdout.split()
        dirty = [p for p in changed if not p.startswith(RUN_WRITTEN)]
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(root=".") -> dict:
    """What made a result, beside its parameters: the fields `mkd verify` compares when numbers differ."""
    import transformers

    packages = package_set()
    return {
        "mkd": __import__("mkd").__version__,
        "git_commit": git_commit(root),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "packages_sha256": hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16],
        "packages": len(packages),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_kernels": cpu_kernels(),  # the instruction set of the float kernels (params cpu_isa; mkd.core.kernels)
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",  # where fit ran
        "host": platform.node(),
        "job": os.environ.get("SLURM_JOB_ID"),  # set when a cluster ran it
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }

