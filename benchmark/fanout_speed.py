"""One profile run two ways on the machine that runs it: the sequential `mkd exp` as it ran before fanout existed (DVC runs
the cells one after another, each cell with all the cores' threads: `-S cell_threads=<cores>`) and
`mkd fanout --workers N` + `mkd fanin` (N cells at a time, each with the profile's `cell_threads`). One after
the other, never at once, each in a fresh clone of the committed project that shares the first clone's .venv.

    python -m benchmark.fanout_speed [--profile smoke] [--workers 2]

Prints the wall time of each, their ratio, the load average around each, whether the two cells.csv are
byte-identical (they need not be: the thread counts differ, and threads change float sums), and the cost model
of a fanout (below) fed with this run's per-cell times.

Cost model: wall = setup + upstream (teacher, logits, references: one worker, all cores) + makespan of the
cells over the workers (largest first; each cell's time measured under fanout), + fan-in (restores,
collect, analyze). With one GPU per worker, the cells' part divides by the number of GPUs.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmark.common import REPO, bench_cache, set_env


def makespan(seconds: list[float], workers: int) -> float:
    """Largest-first list scheduling over `workers` (what the local engine's shared queue does with cells
    queued largest first)."""
    ends = [0.0] * workers  # a heap: the worker that frees up first takes the next cell
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(ends, ends[0] + s)
    return max(ends)


def _clone(dest: Path) -> Path:
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def _timed(cmd: list[str], cwd: Path, env: dict) -> dict:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "load_before": load0, "load_after": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    set_env()
    root = bench_cache() / "fanout_speed"
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "MPLBACKEND": "Agg",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    seq, fan = _clone(root / "sequential"), _clone(root / "fanout")
    result = {"profile": args.profile, "workers": args.workers, "cores": len(os.sched_getaffinity(0))}
    cores = result["cores"]
    result["sequential"] = _timed(["bash", "scripts/run.sh", args.profile, "-S", f"cell_threads={cores}"], seq, env)
    result["fanout"] = _timed(["bash", "scripts/run.sh", args.profile], fan, {**env, "MKD_WORKERS": str(args.workers)})
    result["ratio"] = round(result["sequential"]["wall_s"] / result["fanout"]["wall_s"], 2)
    csv = f"results/{args.profile}/cells.csv"
    result["cells_csv_identical"] = (seq / csv).read_bytes() == (fan / csv).read_bytes()
    done = [json.loads(p.read_text()) for p in (fan / ".mkd" / "fanout" / args.profile / "done").glob("*.json")]
    cells = [d["seconds"] for d in done]
    result["cells"] = {"n": len(cells), "sum_s": round(sum(cells), 1),
                       "makespan_s": {w: round(makespan(cells, w), 1) for w in (1, 2, 4, 8)}}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
