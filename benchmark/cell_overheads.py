"""Where one grid cell's time goes, and what the checkpoint schedule costs: real cells of a profile, each run on
the profile's materialized upstream (prepared data, base, teacher, logits) with the profile's `checkpoint_every`
and with 0 (a checkpoint at every evaluation, as every cell wrote before 2026-12-03), one after the other in this
process, with the profile's cell threads.

    python -m benchmark.cell_overheads --root ../cpu-run [--profile cpu] [--cell cpu8-high-random-off-0 ...]

`--root` is a folder in which `bash scripts/run.sh <profile>` (or `dvc repro references logits`) has run; its
artifacts are read through links, nothing in it is written (cells and checkpoints go to a scratch folder).
Prints, per run: the phases of `run_cell` (loading data and tokenizer, building the student, optimizer steps,
dev evaluations, checkpoint writes, the final predictions) in seconds, and whether the predictions equal, byte
for byte, the other schedule's and the root's own result of that cell. Imports are paid once, before the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmark.common import REPO, set_env

UPSTREAM = ("data", "base", "teachers", "logits")


def _scratch_root(root: Path, profile: str, scratch: Path) -> Path:
    """A repository-shaped folder whose upstream artifacts are links to root's, with results and checkpoints
    of its own."""
    (scratch / "artifacts" / profile).mkdir(parents=True)
    for name in UPSTREAM:
        (scratch / "artifacts" / profile / name).symlink_to((root / "artifacts" / profile / name).resolve())
    (scratch / "artifacts" / ".cache").symlink_to((root / "artifacts" / ".cache").resolve())
    return scratch


class Phases:
    """Seconds spent inside named functions, patched on their modules for the duration of a run."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, module, attr: str, label: str):
        original = getattr(module, attr)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(module, attr, timed)
        return original

    @contextmanager
    def patched(self):
        from mkd.models import students
        from mkd.pipeline.stages import cell as cell_stage
        from mkd.training import loop

        targets = [(cell_stage, "Encoder", "load data + tokenizer"), (students, "make_student", "build student"),
                   (loop, "fit", "fit"), (loop, "dev_accuracy", "dev evaluations"), (loop, "_save", "checkpoint writes"),
                   (cell_stage, "predict_eval_sets", "final predictions")]
        originals = [(m, a, self.wrap(m, a, label)) for m, a, label in targets]
        try:
            yield self
        finally:
            for m, a, original in originals:
                setattr(m, a, original)


def run_one(params: dict, cell, root: Path) -> dict:
    from mkd.core.hashing import bytes_sha256
    from mkd.pipeline.stages import run_cell

    phases = Phases()
    t0 = time.perf_counter()
    with phases.patched():
        predictions = run_cell(params, cell, root)
    wall = time.perf_counter() - t0
    s = phases.seconds
    info = json.loads((root / "results" / params["profile"] / "cells" / cell.id / "info.json").read_text())
    return {"wall": wall, "phases": s, "calls": phases.calls, "training": info["training"],
            "predictions_sha256": bytes_sha256(predictions.to_bytes()), "load": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="a folder where the profile's upstream has run")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--cell", action="append", help="a DVC item name, e.g. cpu8-high-random-off-0 (repeatable)")
    ap.add_argument("--out", type=Path, help="also write the runs as JSON here")
    args = ap.parse_args(argv)
    set_env()
    from mkd.config import load_params, load_profile, merge, validate
    from mkd.core.kernels import pin_cpu_isa

    overrides = load_profile(args.profile)
    pin_cpu_isa(overrides.get("cpu_isa"))  # before torch is imported, as the CLI does
    params = validate(merge(load_params(REPO / "params.yaml"), overrides))
    import torch

    from mkd.cli import stage_threads
    from mkd.pipeline.grid import grid_cells

    threads = stage_threads(params, "cell")
    torch.set_num_threads(threads)
    by_item = {f"{c.language_set}-{c.resource}-{c.init}-{c.kd}-{c.seed}": c for c in grid_cells(params)}
    names = args.cell or ["cpu8-high-random-off-0", "cpu8-high-teacher-on-0"]
    unknown = [n for n in names if n not in by_item]
    if unknown:
        raise SystemExit(f"--cell {unknown[0]}: not a cell of the {args.profile} grid (e.g. {next(iter(by_item))})")
    import transformers  # noqa: F401  imports paid before the first run, not inside it
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    schedules = {"profile": params["student"]["checkpoint_every"], "every evaluation": 0}
    runs = []
    for name in names:
        cell = by_item[name]
        recorded = args.root / "results" / args.profile / "cells" / cell.id / "info.json"
        reference = json.loads(recorded.read_text())["predictions_sha256"] if recorded.exists() else None
        for label, every in schedules.items():
            p = json.loads(json.dumps(params))
            p["student"]["checkpoint_every"] = every
            with tempfile.TemporaryDirectory(prefix="mkd-overheads-") as tmp:
                root = _scratch_root(args.root, args.profile, Path(tmp))
                r = run_one(p, cell, root)
            r.update(cell=name, schedule=f"{label} ({every})", threads=threads, reference_sha256=reference)
            runs.append(r)
            print(f"{name} checkpoint_every={every}: {r['wall']:.1f} s", file=sys.stderr)
    _print(runs)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1, default=str))
    return 0


def _print(runs: list[dict]) -> None:
    cols = ["load data + tokenizer", "build student", "dev evaluations", "checkpoint writes", "final predictions"]
    print("| cell | checkpoint_every | run_cell s | steps s | " + " | ".join(c + " s" for c in cols)
          + " | writes | = other schedule | = root's result |")
    print("|---|---|---:|---:|" + "---:|" * len(cols) + "---:|---|---|")
    for r in runs:
        s = r["phases"]
        in_fit_evals = s["dev evaluations"] - s["dev evaluations"] / r["calls"]["dev evaluations"]  # less the initial one
        steps = s["fit"] - in_fit_evals - s.get("checkpoint writes", 0.0)
        same = [o for o in runs if o["cell"] == r["cell"] and o is not r]
        print(f"| {r['cell']} | {r['schedule']} | {r['wall']:.1f} | {steps:.1f} | "
              + " | ".join(f"{s.get(c, 0.0):.1f}" for c in cols)
              + f" | {r['calls'].get('checkpoint writes', 0)} | "
              + ("yes" if same and all(o["predictions_sha256"] == r["predictions_sha256"] for o in same) else "no")
              + " | " + ("n/a" if r["reference_sha256"] is None else
                         "yes" if r["reference_sha256"] == r["predictions_sha256"] else "no") + " |")
    r = runs[0]
    print(f"\n{r['threads']} torch thread(s); load average at the end {tuple(round(x, 2) for x in r['load'])}; "
          f"steps = fit less its dev evaluations and checkpoint writes (the initial evaluation is outside fit)")


if __name__ == "__main__":
    sys.exit(main())
