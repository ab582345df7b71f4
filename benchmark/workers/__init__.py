"""Benchmark workers: each runs in its own process (`python -m benchmark.workers KIND SPEC OUT`), records
its time spans (benchmark.common.Spans) and writes a JSON result; the scheduler turns spans into active
seconds and reads the process's peak RSS.

Kinds, registered in KINDS (the module that holds each):
  setup     (setup)    build (once, cached) the cpu-profile artifacts the cells need: prepared data, trimmed
                       base, the teacher (trimmed, and an untrimmed copy for the baseline), cached teacher logits
  ours      (cells)    one grid cell exactly as `dvc repro` runs it: mkd.pipeline.stages.run_cell
  baseline  (cells)    the same distillation written as a user would: transformers.Trainer, teacher run every
                       step, inputs padded to 128, the full 250k vocabulary
  trim      (stages)   the vocabulary-trimming stage (mkd build-base), into a scratch folder
  logits    (stages)   the teacher-logit caching stage (mkd cache-logits) for one training set, into a scratch folder
  profile   (profile)  matmul FLOP/s, and the forward / backward / clip / optimizer split of both contenders' steps
  spin      (here)     the scheduler's self-test: burn CPU seconds
What they share (threads, the timed cell, its seed and paths) is in shared.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchmark.common import Spans, set_env, write_json
from benchmark.workers.cells import w_baseline, w_ours
from benchmark.workers.profile import w_profile
from benchmark.workers.setup import w_setup
from benchmark.workers.stages import w_logits, w_trim


def w_spin(spec, spans: Spans) -> dict:
    """Calibration: busy-loop until `seconds` of this process's own CPU time are spent (the scheduler's self-test)."""
    with spans("spin"):
        end = time.process_time() + float(spec["seconds"])
        n = 0
        while time.process_time() < end:
            n += 1
    return {"iterations": n}


KINDS = {"spin": w_spin, "setup": w_setup, "ours": w_ours, "baseline": w_baseline, "trim": w_trim, "logits": w_logits,
         "profile": w_profile}


def main(argv: list[str]) -> int:
    kind, spec_path, out_path = argv
    set_env()
    spec = json.loads(Path(spec_path).read_text())
    spans = Spans()
    result = KINDS[kind](spec, spans)
    result["spans"] = spans.spans
    result["loadavg_at_end"] = os.getloadavg()
    write_json(Path(out_path), result)
    return 0
