"""The paper profile at its real size, stage by stage, on a CPU: what each stage costs in time, memory and disk,
and whether any grows faster than the rows it reads.

    python -m benchmark.paper_scale run --fraction 0.25      # MASSIVE cut to 25 % of every split (same ids everywhere)
    python -m benchmark.paper_scale run --fraction 1         # all of it: 598,728 teacher rows, 260,364 evaluation rows a cell
    python -m benchmark.paper_scale rerun --fraction 1 --stage references   # a stage again, with HEAD's mkd/ (after a fix)
    python -m benchmark.paper_scale probe                    # the references stage's width-dependent memory at 768
    python -m benchmark.paper_scale report                   # benchmark/paper_scale.md from the runs' logs

A run clones the committed repository into a scratch folder (default: mkd's cache root, bench/paper-scale/<f>),
writes there the paper profile's params.yaml with the `paper-dry` profile applied (a random 2-layer, hidden-64
stand-in under XLM-R's tokenizer, 24 steps a model: mkd/profiles/paper-dry.yaml) and the data source, and runs
every stage of dvc.yaml with `dvc repro --single-item`, one after the other, as `dvc repro` would (the cells at
`threads`, one at a time, so each cell's memory is its own). Per stage it records the wall time, the peak RSS of
the largest process (getrusage of the stage's process tree: dvc and mkd), the bytes the stage's processes wrote,
and what it left on disk: its outputs (artifacts/, results/, paper_tables/), DVC's cache, mkd's token cache, and
the largest size its checkpoints folder reached. Then `dvc status` must report nothing to do, and the MASSIVE
token lengths the GPU projection needs are measured on the prepared rows. Logs: benchmark/paper_scale_logs/.
Needs the machine to itself (the stages use `threads` cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmark.common import REPO, bench_cache, set_env, write_json

LOGS = REPO / "benchmark" / "paper_scale_logs"
PROFILE = "paper-dry"
UPSTREAM_STAGES = ("validate", "prepare", "base", "teachers", "references", "logits")
FINAL_STAGES = ("collect", "analyze")
# Targets (issue text, docs/costs.md): no stage above 8 GB; none growing faster than its rows (4x the rows may cost
# up to LINEAR_SLACK x 4 the time and memory above the imports).
RSS_LIMIT = 8 * 1024 ** 3
LINEAR_SLACK = 1.1

_MEASURED = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "a"), stderr=subprocess.STDOUT).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - t0, "peak_rss": r.ru_maxrss * 1024,
                  "written": r.ru_oublock * 512, "cpu_s": r.ru_utime + r.ru_stime}))
"""


# ------------------------------------------------------------------------------------------ the data


def subset_massive(source: Path, out: Path, fraction: float, seed: int = 0) -> Path:
    """MASSIVE with every split cut to the first ceil(fraction x n) rows of a stratified order of en-US's ids, the
    same ids in every locale (the data stay parallel); `<locale>.jsonl.gz` files, as the official folder."""
    import gzip

    from mkd.data.reader import load_massive
    from mkd.data.schema import resolve_language_set
    from mkd.data.subsets import seed_for, stratified_order

    if (out / "done.json").exists() and json.loads((out / "done.json").read_text()) == {"fraction": fraction, "seed": seed}:
        return out
    locales = resolve_language_set("all")
    data = load_massive(source, locales)
    keep = {split: {ex.id for ex in stratified_order(rows, seed_for("paper-scale", split, seed))
                    [:math.ceil(fraction * len(rows))]}
            for split, rows in data["en-US"].items()}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for locale in locales:
        with gzip.open(out / f"{locale}.jsonl.gz", "wt", encoding="utf-8") as f:
            for split, rows in data[locale].items():
                for ex in rows:
                    if ex.id in keep[split]:
                        f.write(json.dumps({"id": ex.id, "locale": locale, "partition": split, "intent": ex.intent,
                                            "utt": ex.utt}, ensure_ascii=False) + "\n")
    (out / "done.json").write_text(json.dumps({"fraction": fraction, "seed": seed}))
    return out


# ------------------------------------------------------------------------------------------ the run


def du(path: Path) -> int:
    """Bytes under `path` (files once, links not followed; 0 where it does not exist)."""
    if not path.exists():
        return 0
    seen, total = set(), 0
    for p in [path] + list(path.rglob("*")):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_file() and not p.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


class PeakSize:
    """The largest size a folder reaches while a stage runs (sampled every `every` seconds)."""

    def __init__(self, path: Path, every: float = 2.0):
        self.path, self.every, self.peak = path, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, du(self.path))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_params(clone: Path, massive: Path, fraction: float, extra: dict) -> dict:
    from mkd.config import dump_yaml, load_profile, merge, read_yaml, validate

    params = merge(read_yaml(REPO / "params.yaml"), load_profile(PROFILE))
    params = merge(params, {"data": {"massive": str(massive), "allow_partial": fraction < 1}, **extra})
    params = validate(params)
    (clone / "params.yaml").write_text(dump_yaml(params))
    return params


def clone_repo(work: Path) -> Path:
    """A clone of the committed HEAD in work/repo whose DVC cache is work/dvc-cache."""
    clone = work / "repo"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(clone)], check=True)
    (clone / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {work / 'dvc-cache'}\n")
    return clone


def run_stage(clone: Path, stage: str, log: Path, env: dict, params: dict) -> dict:
    from mkd.core.cache import cache_root
    from mkd.pipeline.grid import Paths

    p = params["profile"]
    places = {"artifacts": clone / "artifacts" / p, "results": clone / "results" / p,
              "paper_tables": clone / "paper_tables" / p, "dvc_cache": clone.parent / "dvc-cache",
              "token_cache": Paths(params, clone).tokens, "mkd_cache_arrow": cache_root() / "massive-arrow"}
    before = {k: du(v) for k, v in places.items()}
    with PeakSize(clone / "artifacts" / p / "checkpoints") as checkpoints:
        r = subprocess.run([sys.executable, "-c", _MEASURED, str(log), "dvc", "repro", "--single-item", stage],
                           cwd=clone, env=env, capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"stage {stage}: the measuring wrapper failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"stage {stage} failed (rc {out['rc']}); its log: {log}")
    out["disk"] = {k: du(v) - before[k] for k, v in places.items()}
    out["checkpoints_peak"] = checkpoints.peak
    return out


def token_lengths(clone: Path, params: dict) -> dict:
    """Tokens per row (special tokens included) of the teacher's rows, a seed's high and low draw and the evaluation
    rows, and the padded width of the batches the loop and the evaluations build from them."""
    from statistics import mean

    from mkd.models.features import length_grouped_batches
    from mkd.pipeline.encoder import Encoder
    from mkd.pipeline.grid import Paths, language_set

    enc = Encoder(params, Paths(params, clone))
    t = params["teacher"]

    def stats(ids, batch, shuffle=True):
        """shuffle: the loop's length-grouped training batches; False: an evaluation's, sorted by length."""
        lengths = [len(s) for s in ids]
        batches = length_grouped_batches(lengths, batch, seed=0, epoch=0, shuffle=shuffle)
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return {"rows": len(lengths), "mean": mean(lengths), "max": max(lengths),
                "padded_per_row": padded / len(lengths), "batch": batch}

    _, teacher = enc.train(t["language_set"], t["resource"])
    out = {"teacher": stats(teacher.ids, t["batch_size"])}
    ls = params["grid"]["language_sets"][0]
    for res in params["grid"]["resources"]:
        _, draw = enc.train(ls, res, params["grid"]["seeds"][0])
        out[f"student_{res}"] = stats(draw.ids, params["student"]["batch_size"])
    for split in ("selection", "test"):
        _, rows = enc.split(language_set(params, params["data"]["eval_languages"]), split)
        out[split] = stats(rows.ids, 128, shuffle=False)
    return out


def run(fraction: float, work: Path, massive: Path | None) -> dict:
    from mkd.data.source import resolve_source
    from mkd.pipeline.grid import grid_cells

    set_env()
    work.mkdir(parents=True, exist_ok=True)
    source = Path(resolve_source(str(massive) if massive else None))
    data = source if fraction >= 1 else subset_massive(source, work / f"massive-{fraction:g}", fraction)
    clone = clone_repo(work)
    # cells one at a time on `threads` cores: each cell's peak memory is its own (fanout would run two side by side)
    params = write_params(clone, data, fraction, {"cell_threads": None})
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(clone)}
    env.pop("MKD_MASSIVE", None)   # the environment variable would win over data.massive
    stages = [*UPSTREAM_STAGES, *(c.stage for c in grid_cells(params)), *FINAL_STAGES]
    log_dir = work / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    result = {"fraction": fraction, "massive": str(data), "commit": subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip(),
        "machine": machine(), "threads": params["threads"], "stages": {}}
    t0 = time.perf_counter()
    for stage in stages:
        result["stages"][stage] = run_stage(clone, stage, log_dir / f"{stage.replace('@', '_')}.log", env, params)
        s = result["stages"][stage]
        print(f"{stage}: {s['wall_s']:.1f} s, peak RSS {s['peak_rss'] / 2**30:.2f} GiB, wrote {s['written'] / 2**20:.0f} MiB",
              flush=True)
    result["total_s"] = time.perf_counter() - t0
    status = subprocess.run(["dvc", "status"], cwd=clone, env=env, capture_output=True, text=True)
    result["dvc_status_after"] = status.stdout.strip()
    t1 = time.perf_counter()
    noop = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    result["noop_repro_s"] = time.perf_counter() - t1
    result["noop_repro_rc"] = noop.returncode
    result["results_bytes"] = du(clone / "results" / params["profile"])
    result["results_files"] = {str(p.relative_to(clone)): p.stat().st_size
                               for p in sorted((clone / "results" / params["profile"]).rglob("*")) if p.is_file()
                               and "cells" not in p.relative_to(clone).parts}
    result["totals"] = {"artifacts": du(clone / "artifacts" / params["profile"]), "dvc_cache": du(work / "dvc-cache"),
                        "token_cache": du(clone / "artifacts" / ".cache" / "tokens")}
    result["token_lengths"] = token_lengths(clone, params)
    # the trimmed vocabulary of all of MASSIVE's text: the paper's embedding matrix (benchmark/gpu_projection.py)
    result["base_vocab"] = json.loads((clone / "artifacts" / params["profile"] / "base" / "config.json").read_text())["vocab_size"]
    LOGS.mkdir(parents=True, exist_ok=True)
    write_json(LOGS / f"run-{fraction:g}.json", result)
    return result


def rerun(fraction: float, work: Path, stages: list[str]) -> dict:
    """A run's stages again, measured the same way, with the committed HEAD's mkd/ (a fix to what the run found):
    its clone takes HEAD's mkd/ (params.yaml stays the run's), DVC re-runs each stage whose code changed, and
    the measurements go into the run's log under "reruns" (the run's own figures stay)."""
    from mkd.config import read_yaml

    set_env()
    log = LOGS / f"run-{fraction:g}.json"
    result = json.loads(log.read_text())
    clone = work / "repo"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "fetch", "-q", str(REPO), head], cwd=clone, check=True)
    subprocess.run(["git", "checkout", "-q", head, "--", "mkd"], cwd=clone, check=True)
    params = read_yaml(clone / "params.yaml")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(clone)}
    env.pop("MKD_MASSIVE", None)
    for stage in stages:
        m = run_stage(clone, stage, work / "logs" / f"rerun-{stage}.log", env, params)
        now = machine()
        m.update(commit=head, when=now["when"], load_before=now["load_before"])
        result.setdefault("reruns", {})[stage] = m
        print(f"{stage} at {head[:7]}: {m['wall_s']:.1f} s, peak RSS {m['peak_rss'] / 2**30:.2f} GiB", flush=True)
        write_json(log, result)
    return result


def machine() -> dict:
    from mkd.pipeline.provenance import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg()[0],
            "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


# ------------------------------------------------------------------------------------------ the probe at h=768

_PROBE_AT_SIZE = """
import json, resource, sys, torch
from transformers import RobertaConfig, RobertaModel
from mkd.models.probe import fit_standardized, standardized
rows, eval_rows, select_rows, hidden, vocab = map(int, sys.argv[1:6])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
imports = peak()
torch.manual_seed(0)
body = RobertaModel(RobertaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                                  num_hidden_layers=12, num_attention_heads=12, type_vocab_size=1), add_pooling_layer=False)
evals = torch.randn(eval_rows, hidden)            # the dev and test features, float32, kept for predicting
select = torch.randn(select_rows, hidden)         # a reference set's selection rows
host = peak()                                     # what stays on the host where the probe fits on a GPU
train = torch.randn(rows, hidden, dtype=torch.float64)   # embed(..., dtype=float64): handed over, standardized in place
labels = torch.arange(rows) % 60
x, mean, scale = standardized(train, in_place=True)
fit_standardized(x, mean, scale, labels, 60, c=1.0, max_iter=2)   # the memory of a fit is the same at 2 iterations as at 100
print(json.dumps({"imports": imports, "host_part": host, "peak": peak(), "train_float64_bytes": rows * hidden * 8}))
"""


def probe_at_size(rows: int, eval_rows: int, select_rows: int, hidden: int, vocab: int) -> dict:
    """Peak RSS of what the references stage holds that grows with the hidden size, at that size: a 12-layer base of
    that width, the evaluation and selection features, a training set's float64 features and one probe fit on
    them, in its own process. The data the stage holds besides is measured by the dry run."""
    r = subprocess.run([sys.executable, "-c", _PROBE_AT_SIZE, *map(str, (rows, eval_rows, select_rows, hidden, vocab))],
                       capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"the probe measurement failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the report


def grouped(stages: dict) -> dict:
    """The cells folded into one row (their maximum of each figure, and their sum of time); the rest as they are."""
    out, cells = {}, [s for name, s in stages.items() if name.startswith("cell")]
    for name, s in stages.items():
        if not name.startswith("cell"):
            out[name] = s
    if cells:
        out[f"cell (x{len(cells)}: max; time: sum)"] = {
            "wall_s": sum(c["wall_s"] for c in cells), "peak_rss": max(c["peak_rss"] for c in cells),
            "written": max(c["written"] for c in cells), "checkpoints_peak": max(c["checkpoints_peak"] for c in cells),
            "disk": {k: max(c["disk"][k] for c in cells) for k in cells[0]["disk"]}}
    return out


def report(small: dict, full: dict) -> str:
    gb, mb = 2 ** 30, 2 ** 20
    ratio = full["fraction"] / small["fraction"]
    reruns = full.get("reruns", {})
    lines = ["# The paper profile at full size on a CPU (`python -m benchmark.paper_scale`)", "",
             f"{full['machine']['when']}, {full['machine']['cpu']}, {full['machine']['cores']} cores, threads "
             f"{full['threads']}, load average {full['machine']['load_before']:.2f} before; commit {full['commit'][:7]}; "
             f"stand-in model `standin:2x64`, 24 steps a model (mkd/profiles/paper-dry.yaml). Rows: "
             f"{small['fraction']:g} and {full['fraction']:g} of every MASSIVE split "
             f"({full['token_lengths']['teacher']['rows']:,} teacher rows at {full['fraction']:g}). Each stage is one "
             "`dvc repro --single-item` (DVC's hashing and caching included); peak RSS is the largest process's.", "",
             f"| stage | time s ({small['fraction']:g}) | time s ({full['fraction']:g}) | time x | peak RSS GiB "
             f"({small['fraction']:g}) | peak RSS GiB ({full['fraction']:g}) | RSS above imports x | written MiB | "
             "outputs MiB | DVC cache MiB | checkpoints peak MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    a, b = grouped(small["stages"]), grouped(full["stages"])
    imports = min(st["peak_rss"] for st in full["stages"].values())   # `mkd validate`: the imports alone
    failures = []
    for name, st in b.items():
        t = a[name]
        outputs = sum(st["disk"][k] for k in ("artifacts", "results", "paper_tables"))
        time_ratio = st["wall_s"] / t["wall_s"] if t["wall_s"] else float("nan")
        rss_ratio = (st["peak_rss"] - imports) / max(t["peak_rss"] - imports, 1)
        lines.append(f"| {name} | {t['wall_s']:.1f} | {st['wall_s']:.1f} | {time_ratio:.2f} | {t['peak_rss'] / gb:.2f} | "
                     f"{st['peak_rss'] / gb:.2f} | {rss_ratio:.2f} | {st['written'] / mb:.0f} | {outputs / mb:.1f} | "
                     f"{st['disk']['dvc_cache'] / mb:.1f} | {st['checkpoints_peak'] / mb:.1f} |")
        peak = reruns.get(name, st)["peak_rss"]
        if peak > RSS_LIMIT:
            failures.append(f"{name}: peak RSS {peak / gb:.2f} GiB > 8 GiB")
        if time_ratio > LINEAR_SLACK * ratio:
            failures.append(f"{name}: time grows {time_ratio:.2f}x for {ratio:g}x the rows")
    for name, st in reruns.items():
        lines.append(f"| {name}, after the fix ({st['commit'][:7]}) | | {st['wall_s']:.1f} | | | {st['peak_rss'] / gb:.2f} | | "
                     f"{st['written'] / mb:.0f} | | | |")
    if "cell (x" in " ".join(b):
        cells = [st["wall_s"] for n, st in full["stages"].items() if n.startswith("cell")]
        lines += ["", f"Cells at {full['fraction']:g}: {min(cells):.1f}-{max(cells):.1f} s each (the table: their sum and "
                      "the largest of each other figure)."]
    totals = full.get("totals", {})
    lines += ["", f"Whole run: {full['total_s'] / 60:.1f} min ({small['total_s'] / 60:.1f} at {small['fraction']:g}). "
              f"`dvc status` afterwards: {' '.join(full['dvc_status_after'].split()) or '(nothing)'} (the validate stage is always_changed "
              f"by design); a no-op `dvc repro` {full['noop_repro_s']:.1f} s. On disk at {full['fraction']:g}: artifacts "
              f"{totals.get('artifacts', 0) / mb:,.0f} MiB, DVC cache {totals.get('dvc_cache', 0) / mb:,.0f} MiB, token cache "
              f"{totals.get('token_cache', 0) / mb:,.0f} MiB; results/{PROFILE}: {full['results_bytes'] / mb:.1f} MiB, of "
              f"which git tracks {sum(full['results_files'].values()) / mb:.2f} MiB (the rest: each cell's gzip-compressed "
              "predictions, DVC outputs).", ""]
    probe = full.get("probe_768")
    if probe:
        refs = reruns.get("references", full["stages"]["references"])
        on_gpu = refs["peak_rss"] + probe["host_part"] - probe["imports"]
        on_cpu = refs["peak_rss"] + probe["peak"] - probe["imports"]
        lines += [f"At the paper's width (768) the references stage holds more: measured apart (`probe`), a 12-layer "
                  f"base of that width with the evaluation and selection features take {(probe['host_part'] - probe['imports']) / gb:.2f} "
                  f"GiB, and the float64 training features with one probe fit on them "
                  f"{(probe['peak'] - probe['host_part']) / gb:.2f} GiB more ({probe['train_float64_bytes'] / gb:.2f} GiB of "
                  f"features). Added to the stage's peak here: **{on_gpu / gb:.1f} GiB** where the probe fits on a GPU "
                  f"(the features and the fit live there), **{on_cpu / gb:.1f} GiB** on a machine without one.", ""]
        if on_gpu > RSS_LIMIT:
            failures.append(f"references at width 768 with a GPU: {on_gpu / gb:.1f} GiB > 8 GiB")
    lines += ["Targets: peak RSS of every stage <= 8 GiB (after the fixes, where a stage was re-measured); time no "
              f"faster-growing than the rows (<= {LINEAR_SLACK:g} x {ratio:g}): " + (
                  "**met**" if not failures else "**not met**: " + "; ".join(failures)),
              "", "Token lengths (tokens per row, special tokens included; padded: the width of the batches built from them):", "",
              "| rows | n | mean | max | padded per row | batch |", "|---|---:|---:|---:|---:|---:|"]
    for name, st in full["token_lengths"].items():
        lines.append(f"| {name} | {st['rows']:,} | {st['mean']:.2f} | {st['max']} | {st['padded_per_row']:.2f} | {st['batch']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--fraction", type=float, required=True, help="share of every MASSIVE split (0 < f <= 1)")
    r.add_argument("--work", type=Path, default=None, help="scratch folder (default: mkd's cache, bench/paper-scale/<f>)")
    r.add_argument("--massive", type=Path, default=None, help="MASSIVE source (default: as data.massive: auto finds it)")
    rr = sub.add_parser("rerun", help="re-measure stages of a run with the committed HEAD's mkd/ (after a fix)")
    rr.add_argument("--fraction", type=float, required=True)
    rr.add_argument("--work", type=Path, default=None)
    rr.add_argument("--stage", action="append", required=True, help="a dvc.yaml stage (repeatable)")
    pr = sub.add_parser("probe", help="peak memory of the references stage's probe at the paper's width (768)")
    pr.add_argument("--full", default="1", help="the run whose row counts and vocabulary to use")
    rep = sub.add_parser("report")
    rep.add_argument("--small", default="0.25")
    rep.add_argument("--full", default="1")
    args = ap.parse_args(argv)
    if args.command == "run":
        if not 0 < args.fraction <= 1:
            ap.error(f"--fraction must be in (0, 1], got {args.fraction}")
        run(args.fraction, args.work or bench_cache() / "paper-scale" / f"{args.fraction:g}", args.massive)
        return 0
    if args.command == "rerun":
        rerun(args.fraction, args.work or bench_cache() / "paper-scale" / f"{args.fraction:g}", args.stage)
        return 0
    if args.command == "probe":
        log = LOGS / f"run-{args.full}.json"
        full = json.loads(log.read_text())
        lengths = full["token_lengths"]
        measured = probe_at_size(lengths["student_high"]["rows"], lengths["selection"]["rows"] + lengths["test"]["rows"],
                                 lengths["selection"]["rows"], 768, full["base_vocab"])
        full["probe_768"] = measured
        write_json(log, full)
        print(json.dumps(measured))
        return 0
    small, full = (json.loads((LOGS / f"run-{f}.json").read_text()) for f in (args.small, args.full))
    text = report(small, full)
    (REPO / "benchmark" / "paper_scale.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
