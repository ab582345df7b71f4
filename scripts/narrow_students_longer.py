"""Are the widths study's narrower students under-trained at the cpu budget? Its width-192 runs, seeds 0-1,
pretrained and teacher init, trained at 4x the steps (student.max_steps 1,920, evaluated every 96) into
results/cpu-shape/runs-4x-steps/ (resumes: finished runs are kept). Read their dev accuracy, never test, for
that question (docs/shape-studies.md). Reads the cpu upstream (teacher, logits) that `mkd study widths --profile
cpu` builds; run that first.

    python scripts/narrow_students_longer.py
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from mkd.config import load_params, load_profile, merge, validate
from mkd.studies import shape
from mkd.studies.budget import _start_worker

STEPS, EVAL_EVERY, WIDTH, SEEDS = 1920, 96, 192, (0, 1)

if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])  # the project's paths are relative to its root
    params = validate(merge(load_params("params.yaml"), load_profile("cpu")))
    study = shape.studies(params)["widths"]
    out = Path("results/cpu-shape/runs-4x-steps")
    runs = [r for r in study.runs(params) if r.shape.hidden_size == WIDTH and r.init != "random" and r.seed in SEEDS
            and not shape.is_done(out, r)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(params["cpu_isa"], params["cell_threads"])) as pool:
        jobs = []
        for r in runs:
            p = shape.run_params(params, r)
            p["student"]["max_steps"], p["student"]["eval_every"] = STEPS, EVAL_EVERY
            jobs.append(pool.submit(shape._train, p, asdict(r), str(out / r.id), "."))
        print([j.result() for j in jobs])
