"""What a full replication (the `paper` profile) costs on GPUs, projected from FLOPs, before anyone spends them.

    python -m benchmark.gpu_projection               # after the full-size dry run; writes benchmark/gpu_projection.md
    python -m benchmark.gpu_projection --tflops 120  # another GPU throughput (e.g. one measured, or bf16)

Counted: every stage's matmul FLOPs from xlm-roberta-base's shape (its config.json: 12 layers, hidden 768, MLP 3072,
12 heads; the students keep `student.layers` of them), the trimmed vocabulary and the MASSIVE token lengths of the
full-size dry run (`python -m benchmark.paper_scale run --fraction 1`: the real tokenizer on all 52 locales, batches
built as the loop builds them), and the steps and evaluations params.yaml sets. The formula is checked against
torch's FlopCounterMode (tests/test_scaling.py); a training step is 3 forwards.

Time: each step at the larger of its FLOPs at an assumed GPU throughput and a floor; evaluation rows likewise. The
floors are measured here, on the CPU: the training loop's own parts (pad_batch, batch_loss, update) run on a model of
the same structure at hidden 12 on a two-row batch, so what remains is the host's Python and op dispatch, which a GPU
step pays too.

**Unmeasured on a GPU**: the throughput is an assumption (ASSUMED_TFLOPS, with its reason). Where a GPU is at hand,
measure a few hundred steps of random-weight models of this shape at the paper's batch sizes and pass the
achieved rate as --tflops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmark.common import REPO, write_json
from mkd.pipeline.compute import forward_flops

LOGS = REPO / "benchmark" / "paper_scale_logs"


@dataclass(frozen=True)
class Shape:
    """An encoder's matmul shape (xlm-roberta-base's by default: its config.json on the Hub)."""

    layers: int = 12
    hidden: int = 768
    intermediate: int = 3072
    heads: int = 12
    max_positions: int = 514


XLMR_BASE = Shape()


def parameter_count(vocab: int, layers: int, shape: Shape = XLMR_BASE, labels: int = 60, head: bool = True) -> int:
    """Parameters of RobertaForSequenceClassification of this shape (what a checkpoint and the optimizer hold), or
    with `head` False of RobertaModel (the Hub checkpoint the base is: a pooler, no classification head), built on
    the meta device (no memory) and counted by mkd's count_parameters."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaModel

    from mkd.models.sources import count_parameters

    config = RobertaConfig(vocab_size=vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                           num_hidden_layers=layers, num_attention_heads=shape.heads,
                           max_position_embeddings=shape.max_positions, type_vocab_size=1, num_labels=labels)
    with torch.device("meta"):
        model = RobertaForSequenceClassification(config) if head else RobertaModel(config)
    return count_parameters(model)["total"]


# One H100 SXM in fp32 (the paper profile's mixed_precision "no"; torch leaves TF32 off for matmuls): 67 TFLOP/s
# peak (NVIDIA's datasheet), assumed 40 % achieved, what large models reach; the 6-layer student's ~450-token
# steps are too small for it, and there the measured floor is what binds. fp64 (the probe): 34 TFLOP/s peak.
ASSUMED_TFLOPS = 0.4 * 67
FP64_PER_FP32 = 0.5
# A checkpoint (training/loop.py): state.pt (fp32 weights, AdamW's two moments) and best.pt (the best weights so far).
# The full-size dry run's teacher checkpoint: 125.6 MiB for its 8.2 M parameters (16.0 bytes each).
CHECKPOINT_BYTES_PER_PARAM = 16


@dataclass(frozen=True)
class Rates:
    """A GPU's speed: its achieved TFLOP/s (assumed) and, per model, the floors a training step and an evaluation
    cannot go below: the loop's host work, measured by `host_step` (a GPU step dispatches the same ops)."""

    tflops: float
    teacher_step_ms: float
    student_step_ms: float
    teacher_eval_rows_per_s: float
    student_eval_rows_per_s: float


def host_step(section: dict, objective, layers: int, width: int, steps: int = 40) -> dict:
    """The loop's host work per training step, measured: a model of xlm-roberta-base's structure (`layers` layers,
    12 heads, the classification head) at hidden 12, trained with the loop's own parts (pad_batch, batch_loss,
    update: clipping, fused AdamW, the schedule) on two rows of `width` and `width` - 2 tokens (padded, as real
    batches are: the attention mask's ops run), on the CPU. Every op's data is then
    a few hundred numbers, so what is left is Python and op dispatch, which a GPU step pays whatever its batch (and
    there each op also launches a kernel). The op count does not depend on the rows. Likewise an evaluation: a
    forward pass of such a batch, for `eval_batch_size` rows a batch. -> {"ms": median ms a step, "ops": ATen ops a
    step, "eval_rows_per_s": rows a second at that floor}"""
    import statistics
    import time

    import torch
    from accelerate import Accelerator
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from mkd.evaluation.predict import predict_logits
    from mkd.models.features import pad_batch
    from mkd.training.loop import batch_loss, configure_optimizer, linear_schedule, train_config, update

    cfg = train_config(section, objective, seed=0)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=1000, hidden_size=12, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=12,
        type_vocab_size=1, num_labels=60))
    accelerator = Accelerator(cpu=True)
    optimizer = configure_optimizer(model, cfg, "cpu")
    scheduler = linear_schedule(optimizer, cfg, 10 * steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    row = [list(range(5, 5 + width)), list(range(5, 3 + width))]
    labels, teacher_logits = torch.zeros(2, dtype=torch.long), torch.zeros(2, 60)

    def step():
        ids, mask = pad_batch(row, 1)
        loss, _ = batch_loss(model, ids, mask, labels, cfg.objective, loss_options=cfg.loss_options,
                             teacher_logits=teacher_logits)
        update(accelerator, model, optimizer, scheduler, loss, cfg.max_grad_norm)
        return float(loss.detach())

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    def median_s(fn, times):
        out = []
        for _ in range(times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    for _ in range(5):
        step()                                   # warm-up: the optimizer's state, the allocator
    with Count():
        step()
    step_s = median_s(step, steps)
    forward_s = median_s(lambda: predict_logits(model, row, 1, len(row)), steps)
    return {"ms": 1e3 * step_s, "ops": Count.ops, "eval_rows_per_s": cfg.eval_batch_size / forward_s,
            "layers": layers, "width": width, "threads": torch.get_num_threads()}


def evaluations(max_steps: int, eval_every: int) -> int:
    """How many evaluations `fit` runs: every `eval_every` steps and at the budget's end (training/loop.py)."""
    return max_steps // eval_every + (1 if max_steps % eval_every else 0)


def stage_work(params: dict, lengths: dict, vocab: int) -> dict:
    """{stage: {"steps", "step_flops", "eval_rows", "eval_flops", "fp64_flops", "params"}} for the teacher, the
    references, the logits and one cell of the paper profile (`lengths`: the dry run's token_lengths)."""
    from mkd.pipeline.grid import all_seeds, grid_cells
    from mkd.pipeline.stages.references import distinct_draws, reference_datasets

    t, s, labels = params["teacher"], params["student"], 60
    sel, test = lengths["selection"], lengths["test"]
    eval_rows = lengths["selection"]["rows"] + lengths["test"]["rows"]    # the dev and test rows a model predicts
    w_eval = (sel["padded_per_row"] * sel["rows"] + test["padded_per_row"] * test["rows"]) / eval_rows
    train_rows = {res: lengths[f"student_{res}"] for res in params["grid"]["resources"]}
    teacher_rows = lengths["teacher"]

    def fwd(rows, width, layers, head=True):
        return forward_flops(rows, width, layers, XLMR_BASE.hidden, XLMR_BASE.intermediate, labels=labels, head=head)

    teacher_evals = evaluations(t["max_steps"], t["eval_every"])
    teacher = {"steps": t["max_steps"],
               "step_flops": 3 * fwd(t["batch_size"], teacher_rows["padded_per_row"], XLMR_BASE.layers),
               "eval_rows": teacher_evals * sel["rows"] + eval_rows,
               "params": parameter_count(vocab, XLMR_BASE.layers)}
    teacher["eval_flops"] = fwd(teacher["eval_rows"], w_eval, XLMR_BASE.layers)
    # references: the frozen base embeds the evaluation rows, each reference set's selection rows and every distinct
    # draw's training rows; the probe's L-BFGS (fp64) makes <= 1.25 x 100 loss evaluations a C, each 3 x 2 n h C
    draws = len(distinct_draws(params))
    embed_rows = eval_rows + len(reference_datasets(params)) * sel["rows"] + \
        draws * sum(r["rows"] for r in train_rows.values())
    probe_rows = draws * sum(r["rows"] for r in train_rows.values())
    references = {"steps": 0, "step_flops": 0.0, "eval_rows": embed_rows,
                  "eval_flops": fwd(embed_rows, w_eval, XLMR_BASE.layers, head=False),
                  "fp64_flops": 125 * len(params["probe"]["c_grid"]) * 6 * probe_rows * XLMR_BASE.hidden * labels}
    logit_rows = len(all_seeds(params)) * sum(r["rows"] for r in train_rows.values())
    logits = {"steps": 0, "step_flops": 0.0, "eval_rows": logit_rows,
              "eval_flops": sum(len(all_seeds(params)) * fwd(r["rows"], r["padded_per_row"], XLMR_BASE.layers)
                                for r in train_rows.values())}
    # a cell: the initial evaluation, one every eval_every steps and at the end, then every evaluation row predicted
    width = max(r["padded_per_row"] for r in train_rows.values())   # the high draw's (the low draw's is shorter)
    cell_evals = 1 + evaluations(s["max_steps"], s["eval_every"])
    cell = {"steps": s["max_steps"], "step_flops": 3 * fwd(s["batch_size"], width, s["layers"]),
            "eval_rows": cell_evals * sel["rows"] + eval_rows, "params": parameter_count(vocab, s["layers"])}
    cell["eval_flops"] = fwd(cell["eval_rows"], w_eval, s["layers"])
    return {"teacher": teacher, "references": references, "logits": logits, "cell": cell,
            "cells": len(grid_cells(params))}


def hours(work: dict, rates: Rates, step_ms: float, eval_rows_per_s: float) -> float:
    """GPU-hours of one stage: each step at the larger of its FLOPs and the floor; evaluation rows likewise."""
    rate = rates.tflops * 1e12
    step_s = max(work["step_flops"] / rate, step_ms / 1e3) if work["steps"] else 0.0
    eval_s = max(work["eval_flops"] / rate, work["eval_rows"] / eval_rows_per_s)
    fp64_s = work.get("fp64_flops", 0.0) / (rate * FP64_PER_FP32)
    return (work["steps"] * step_s + eval_s + fp64_s) / 3600


def projection(params: dict, lengths: dict, vocab: int, rates: Rates, gpus: tuple[int, ...] = (1, 8)) -> dict:
    """Hours of the teacher, the references and logits, one cell, and the whole grid on each of `gpus` GPUs (one
    node, `mkd fanout --gpus`: the upstream stages on one GPU, then the cells spread, largest first; all cells
    of the paper grid have the same step budget)."""
    work = stage_work(params, lengths, vocab)
    teacher_eval = rates.teacher_eval_rows_per_s
    h = {"teacher": hours(work["teacher"], rates, rates.teacher_step_ms, teacher_eval),
         "references": hours(work["references"], rates, 0.0, teacher_eval),
         "logits": hours(work["logits"], rates, 0.0, teacher_eval),
         "cell": hours(work["cell"], rates, rates.student_step_ms, rates.student_eval_rows_per_s)}
    upstream = h["teacher"] + h["references"] + h["logits"]
    grid = {g: {"wall_h": upstream + math.ceil(work["cells"] / g) * h["cell"],
                "gpu_h": upstream + work["cells"] * h["cell"]} for g in gpus}
    return {"work": work, "hours": h, "upstream_h": upstream, "grid": grid}


def measured_floors(params: dict, width: int) -> dict:
    """host_step for the teacher (12 layers, its section, cross-entropy) and a KD-on student (student.layers)."""
    from mkd.training.losses import objective_for

    return {"teacher": host_step(params["teacher"], {"ce": 1.0}, XLMR_BASE.layers, width),
            "student": host_step(params["student"], objective_for(params["student"], "on"), params["student"]["layers"],
                                 width)}


def disk(run: dict, vocab: int, student_layers: int, workers: int = 8) -> dict:
    """Bytes on disk at the paper's size: what does not depend on the model as the full-size dry run measured it
    (prepared data and draws, teacher logits, each cell's predictions, the token cache), the model-sized files
    computed for xlm-roberta-base (the trimmed base and the teacher in fp32; checkpoints, at most one per model
    training at once: the teacher alone, then one per worker). DVC's cache holds a second copy of every output
    (its default on most filesystems; with `dvc config cache.type hardlink` it holds the only one)."""
    stages = run["stages"]
    cells = [st for name, st in stages.items() if name.startswith("cell")]
    measured = {"data and draws": stages["prepare"]["disk"]["artifacts"],
                "teacher logits": stages["logits"]["disk"]["artifacts"],
                "predictions (all cells)": sum(c["disk"]["results"] for c in cells),
                "token cache": run.get("totals", {}).get("token_cache", 0)}
    teacher = parameter_count(vocab, XLMR_BASE.layers)
    models = {"base (trimmed)": 4 * parameter_count(vocab, XLMR_BASE.layers, head=False), "teacher": 4 * teacher}
    checkpoints = max(CHECKPOINT_BYTES_PER_PARAM * teacher,
                      workers * CHECKPOINT_BYTES_PER_PARAM * parameter_count(vocab, student_layers))
    outputs = sum(measured.values()) - measured["token cache"] + sum(models.values())
    return {"measured": measured, "models": models, "checkpoints_peak": checkpoints, "dvc_cache": outputs,
            "total": sum(measured.values()) + sum(models.values()) + checkpoints + outputs}


def report(params: dict, run: dict, tflops: float, floors: dict) -> str:
    lengths, vocab = run["token_lengths"], run["base_vocab"]
    t, s = floors["teacher"], floors["student"]
    rates = Rates(tflops, t["ms"], s["ms"], t["eval_rows_per_s"], s["eval_rows_per_s"])
    p = projection(params, lengths, vocab, rates)
    w, h = p["work"], p["hours"]
    lines = ["# GPU cost of the paper profile, projected (unmeasured on a GPU)", "",
             f"`python -m benchmark.gpu_projection` ({floors['when']}, {floors['cpu']}, {t['threads']} thread). Counted: "
             f"every stage's matmul FLOPs from xlm-roberta-base's shape, the trimmed vocabulary ({vocab:,} pieces) and "
             f"the token lengths of the full-size dry run ({run['machine']['when']}, benchmark/paper_scale.md), the steps "
             "and evaluations params.yaml sets. **Assumed**: one H100 SXM achieving "
             f"{tflops:.1f} TFLOP/s in fp32 (the paper profile's precision; 40 % of its 67 TFLOP/s peak), fp64 at half "
             "that. **Measured on this CPU**, as floors no GPU step goes below: the loop's host work per step "
             f"(a model of the same structure at hidden 12 on two rows of up to {t['width']} tokens: dispatch, not arithmetic): teacher {t['ms']:.1f} ms "
             f"({t['ops']:,} ATen ops a step), {params['student']['layers']}-layer student {s['ms']:.1f} ms "
             f"({s['ops']:,} ops); evaluations at most {t['eval_rows_per_s']:,.0f} / {s['eval_rows_per_s']:,.0f} rows/s. "
             "A GPU host's faster cores lower the floors; each op's kernel launch (a few us) raises them.", "",
             "| stage | steps | FLOP a step | FLOP-bound ms a step | floor ms | evaluated rows | FLOP, evaluations | "
             "parameters | GPU-hours |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor = {"teacher": t["ms"], "cell": s["ms"]}
    for name in ("teacher", "references", "logits", "cell"):
        x = w[name]
        flop_ms = f"{1e3 * x['step_flops'] / (tflops * 1e12):.1f}" if x["steps"] else "—"
        lines.append(f"| {name} | {x['steps']:,} | {x['step_flops']:.3g} | {flop_ms} | "
                     f"{floor[name]:.1f} | " if name in floor else f"| {name} | — | — | — | — | ")
        params_text = f"{x['params']:,}" if "params" in x else "— (the teacher's or the base's)"
        lines[-1] += f"{x['eval_rows']:,.0f} | {x['eval_flops']:.3g} | {params_text} | {h[name]:.2f} |"
    lines += ["", f"Grid of {w['cells']} cells: " + "; ".join(
        f"on {g} GPU{'s' if g > 1 else ''} {v['wall_h']:.1f} h wall, {v['gpu_h']:.1f} GPU-hours" for g, v in p["grid"].items()),
        "", f"Checkpoints ({CHECKPOINT_BYTES_PER_PARAM} bytes a parameter: the fp32 weights and AdamW's two moments, "
        f"and the best weights so far): teacher {CHECKPOINT_BYTES_PER_PARAM * w['teacher']['params'] / 1e9:.1f} GB, a cell "
        f"{CHECKPOINT_BYTES_PER_PARAM * w['cell']['params'] / 1e9:.1f} GB, one per model at a time (the newest replaces "
        "the last; removed when the model is done)."]
    d = disk(run, vocab, params["student"]["layers"])
    lines += ["", "Disk at the paper's size (measured by the dry run where it does not depend on the model; the models' "
              "files computed; 8 workers):", "", "| what | GB |", "|---|---:|"]
    for name, b in {**d["measured"], **d["models"], "checkpoints at once (peak)": d["checkpoints_peak"],
                    "DVC cache (a copy of every output)": d["dvc_cache"], "total": d["total"]}.items():
        lines.append(f"| {name} | {b / 1e9:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=LOGS / "run-1.json", help="the full-size dry run's log")
    ap.add_argument("--tflops", type=float, default=ASSUMED_TFLOPS, help="achieved TFLOP/s of one GPU (fp32)")
    args = ap.parse_args(argv)
    if not args.run.exists():
        ap.error(f"{args.run} not found: run `python -m benchmark.paper_scale run --fraction 1` first")
    import torch

    from benchmark.paper_scale import machine
    from mkd.config import read_yaml, validate

    torch.set_num_threads(1)     # host work is one thread's: the loop dispatches ops one after another
    params = validate(read_yaml(REPO / "params.yaml"))
    run = json.loads(args.run.read_text())
    width = round(run["token_lengths"]["student_high"]["padded_per_row"])
    m = machine()
    floors = {**measured_floors(params, width), "cpu": m["cpu"], "when": m["when"], "load_before": m["load_before"]}
    write_json(LOGS / "host_step.json", floors)
    text = report(params, run, args.tflops, floors)
    (REPO / "benchmark" / "gpu_projection.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
