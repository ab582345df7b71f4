"""What DVC itself costs on the full `paper` grid definition (42 stages: 4 + 36 cells + collect + analyze).

`python -m benchmark.pipeline_cost` copies dvc.yaml, params.yaml and mkd/ into two scratch git repositories
with `dvc init` and times, with DVC's own wall clock as a user sees it:

  pristine  nothing has run: `dvc status` (resolves the 36-cell matrix, reports every stage as changed).
            (`dvc repro --dry` cannot run here: DVC stops at the first stage whose dependencies do not exist.)
  fake      every stage's command replaced by a trivial one that writes tiny files at the stage's outputs
            (same deps, params, outs, metrics and plots): `dvc repro` once to populate (DVC's per-stage
            overhead: hashing, run-cache, lock file), then, on the up-to-date pipeline, the no-op
            `dvc repro`, `dvc repro --dry` and `dvc status`, `repeats` times each (median).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.common import REPO

FAKE_STAGE = '''"""Write tiny placeholder files at the given outputs (a path without a suffix is a folder)."""
import pathlib, sys
for arg in sys.argv[1:]:
    p = pathlib.Path(arg)
    if p.suffix:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".json":
            p.write_text('{"value": 1}\\n')
        elif p.suffix == ".csv":
            p.write_text("locale,variant,accuracy\\nen-US,fake,0.5\\n")
        else:
            p.write_text("fake\\n")
    else:
        p.mkdir(parents=True, exist_ok=True)
        (p / "placeholder.txt").write_text("fake\\n")
'''


def _env() -> dict:
    from mkd.cli import env_with_own_tools  # the venv's dvc, whether or not the venv is activated

    return {**env_with_own_tools(), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def _run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt, proc


def _stage_outputs(stage: dict) -> list[str]:
    outs = []
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key, []) or []:
            outs.append(next(iter(item)) if isinstance(item, dict) else str(item))
    return outs


def make_repo(folder: Path, fake: bool) -> int:
    """A scratch git + DVC repository holding the pipeline definition; returns the number of stages."""
    from ruamel.yaml import YAML

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "params.yaml", folder / "params.yaml")
    shutil.copytree(REPO / "mkd", folder / "mkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    yaml = YAML()  # round trip, as DVC reads it
    doc = yaml.load((REPO / "dvc.yaml").read_text())
    n = 0
    for stage in doc["stages"].values():
        n += len(_matrix_size(stage))
        if fake:
            stage["cmd"] = f"{sys.executable} fake_stage.py " + " ".join(f'"{o}"' for o in _stage_outputs(stage))
    with open(folder / "dvc.yaml", "w") as fh:
        yaml.dump(doc, fh)
    if fake:
        (folder / "fake_stage.py").write_text(FAKE_STAGE)
    _run(["git", "init", "-q"], folder)
    _run(["dvc", "init", "-q"], folder)
    _run(["dvc", "config", "core.analytics", "false"], folder)
    _run(["git", "add", "-A"], folder)
    _run(["git", "commit", "-q", "-m", "pipeline definition"], folder)
    return n


def _matrix_size(stage: dict) -> list:
    m = stage.get("matrix")
    if not m:
        return [None]
    size = 1
    for values in m.values():
        if isinstance(values, str):  # ${grid.x}: resolved from params.yaml by DVC
            from mkd.config import read_yaml

            node = read_yaml(REPO / "params.yaml")
            for part in values.strip("${}").split("."):
                node = node[part]
            values = node
        size *= len(values)
    return [None] * size


def measure(repeats: int = 2) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-dvc-") as tmp:
        tmp = Path(tmp)
        pristine = tmp / "pristine"
        out["stages"] = make_repo(pristine, fake=False)
        out["status_pristine"] = _run(["dvc", "status"], pristine)[0]
        fake = tmp / "fake"
        make_repo(fake, fake=True)
        out["repro_fake_populate"] = _run(["dvc", "repro"], fake)[0]
        noop, dry, status = [], [], []
        for _ in range(repeats):
            dt, proc = _run(["dvc", "repro"], fake)
            noop.append(dt)
            if "Running stage" in proc.stdout:
                raise RuntimeError(f"the second dvc repro was not a no-op:\n{proc.stdout[-2000:]}")
            dry.append(_run(["dvc", "repro", "--dry"], fake)[0])
            dt, proc = _run(["dvc", "status"], fake)
            status.append(dt)
        out["status_uptodate_output"] = proc.stdout.strip()
        out["repro_noop"] = statistics.median(noop)
        out["repro_dry_uptodate"] = statistics.median(dry)
        out["status_uptodate"] = statistics.median(status)
        out["dvc_version"] = subprocess.run(["dvc", "--version"], capture_output=True, text=True, env=_env()).stdout.strip()
    return out


def table(r: dict) -> str:
    n = r["stages"]
    lines = [
        f"| DVC operation on the `paper` grid definition ({n} stages, DVC {r['dvc_version']}) | wall s | per stage ms |",
        "|---|---:|---:|",
        f"| `dvc status`, nothing run yet (every stage changed) | {r['status_pristine']:.1f} | {1000 * r['status_pristine'] / n:.0f} |",
        f"| `dvc repro`, every stage a trivial fake command (DVC's per-stage overhead) | {r['repro_fake_populate']:.1f} | {1000 * r['repro_fake_populate'] / n:.0f} |",
        f"| no-op `dvc repro` (all {n} stages up to date) | {r['repro_noop']:.1f} | {1000 * r['repro_noop'] / n:.0f} |",
        f"| `dvc repro --dry`, all up to date | {r['repro_dry_uptodate']:.1f} | {1000 * r['repro_dry_uptodate'] / n:.0f} |",
        f"| `dvc status`, up to date | {r['status_uptodate']:.1f} | {1000 * r['status_uptodate'] / n:.0f} |",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(table(measure(args.repeats)))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
