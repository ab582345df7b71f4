"""Shared pieces of the benchmarks: parameters, the on-disk layout, span timing, FLOP formulas.

The benchmark builds, once and cached under $MKD_CACHE/bench, the same artifacts the cpu profile's pipeline
builds (prepared data, vocabulary-trimmed base, a teacher, cached teacher logits) in a folder laid out like
a repository root, so that `mkd.pipeline.stages.run_cell` runs a cell there exactly as `dvc repro` would.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path

from mkd.core.hashing import json_digest
from mkd.pipeline.compute import formula_training_flops  # noqa: F401  (the benchmarks import it from here)

REPO = Path(__file__).resolve().parents[1]

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def set_env() -> None:
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("MKD_MASSIVE", str(REPO.parent / "shared" / "massive"))


def bench_cache() -> Path:
    """The benchmarks' folder in mkd's cache root."""
    from mkd.core.cache import cache_root

    return cache_root() / "bench"


def digest(obj) -> str:
    return json_digest(obj, chars=16)


# ------------------------------------------------------------------------------------------ cells


@dataclass(frozen=True)
class CellSize:
    """A training set: the first `locales` locales of cpu8, `rows` training rows per locale, `epochs`."""

    locales: int
    rows: int
    epochs: int

    @property
    def language_set(self) -> str:
        return f"bench{self.locales}"

    @property
    def resource(self) -> str:
        return f"r{self.rows}"

    @property
    def train_rows(self) -> int:
        return self.locales * self.rows

    def label(self) -> str:
        return f"{self.locales} loc x {self.rows} rows x {self.epochs} ep"


def cpu8() -> tuple[str, ...]:
    from mkd.data import LANGUAGE_SETS

    return LANGUAGE_SETS["cpu8"]


def cpu_params() -> dict:
    """params.yaml merged with the cpu profile, validated: what `mkd exp --profile cpu` runs with."""
    from mkd.config import load_params, load_profile, merge, validate

    return validate(merge(load_params(REPO / "params.yaml"), load_profile("cpu")))


def bench_params(sizes: list[CellSize], teacher_rows: int = 300) -> dict:
    """The cpu profile's params plus the benchmark's language sets and training-set sizes.

    The data are prepared exactly as the cpu profile prepares them (every eval locale, the profile's
    low/high/full subsets and eval caps), plus named subsets r<n> (nested prefixes, so r300 == high), so the
    trimmed vocabulary is the one a cpu-profile cell trains with.
    """
    p = cpu_params()
    p["data"]["massive"] = os.environ.get("MKD_MASSIVE", p["data"]["massive"])
    train_sizes = dict(p["data"]["train_sizes"])
    for n in sorted({s.rows for s in sizes} | {100, 300, 1000, teacher_rows}):
        train_sizes[f"r{n}"] = n
    p["data"]["train_sizes"] = train_sizes
    locs = cpu8()
    p["data"]["language_sets"] = {f"bench{k}": list(locs[:k]) for k in sorted({s.locales for s in sizes} | {8})}
    p["grid"]["language_sets"] = sorted(p["data"]["language_sets"])
    p["grid"]["resources"] = sorted({s.resource for s in sizes})
    return p


def cell_params(params: dict, size: CellSize) -> dict:
    """Params for one benchmark cell: the student trains `size.epochs` epochs (as a step budget, evaluated once
    an epoch, no early stop); the final evaluation covers the cell's own locales (dev + test), not all 52 (which
    the baseline would not do either)."""
    from mkd.training.recipe import epoch_budget

    p = deepcopy(params)
    p["student"].update(epoch_budget(size.train_rows, p["student"]["batch_size"], size.epochs))
    p["data"]["eval_languages"] = size.language_set
    return p


def layout_key(params: dict) -> str:
    d = params["data"]
    return digest({"v": 1, "sizes": d["train_sizes"], "eval": d["eval_per_locale"], "seed": d["seed"],
                   "eval_languages": d["eval_languages"], "teacher_set": params["teacher"]["language_set"],
                   "base": params["base"]})


def layout_root(params: dict) -> Path:
    return bench_cache() / "layouts" / layout_key(params)


# ------------------------------------------------------------------------------------- timing


class Spans:
    """Named wall-clock spans (time.monotonic, which is system-wide), written out for the scheduler.

    A worker may be paused (SIGSTOP) by the scheduler at any moment; it cannot see that, so it only records
    when each span began and ended. The scheduler knows when the worker was running and turns every span
    into active seconds (`active_seconds`).
    """

    def __init__(self):
        self.spans: list[tuple[str, float, float]] = []

    @contextmanager
    def __call__(self, label: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.spans.append((label, t0, time.monotonic()))

    def add(self, label: str, t0: float, t1: float) -> None:
        self.spans.append((label, t0, t1))


def training_batches(lengths: list[int], batch_size: int, seed: int, count: int) -> list[list[int]]:
    """The first `count` training batches fit would take (length-grouped, seeded), epoch after epoch: a small
    cell's first epoch can be shorter than the steps a benchmark wants to time."""
    from mkd.models.features import length_grouped_batches

    batches, epoch = [], 0
    while len(batches) < count:
        batches += length_grouped_batches(lengths, batch_size, seed=seed, epoch=epoch)
        epoch += 1
    return batches[:count]


def active_seconds(t0: float, t1: float, intervals: list[tuple[float, float]]) -> float:
    """Seconds of [t0, t1] covered by the (disjoint) running intervals."""
    return sum(max(0.0, min(t1, b) - max(t0, a)) for a, b in intervals)


def span_totals(spans, intervals) -> dict[str, float]:
    """{label: total active seconds} over every span with that label."""
    out: dict[str, float] = {}
    for label, t0, t1 in spans:
        out[label] = out.get(label, 0.0) + active_seconds(t0, t1, intervals)
    return out


def span_list(spans, intervals, label: str) -> list[float]:
    return [active_seconds(t0, t1, intervals) for lab, t0, t1 in spans if lab == label]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------------------------------ FLOPs
# formula_training_flops: mkd.pipeline.compute's (mkd validate's estimate uses the same formula)


def matmul_flops(n: int) -> float:
    return 2.0 * n ** 3


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def as_dict(size: CellSize) -> dict:
    return asdict(size)
