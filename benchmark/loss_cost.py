"""What a distillation objective costs per training step: logit losses, hidden-state losses, attention losses.

    python -m benchmark.loss_cost                     # the cpu profile's student, 40 steps per objective (~6 min, 2 cores)
    python -m benchmark.loss_cost --steps 10          # a quick look

A cpu-profile student (teacher init, 6 of 12 layers, spread map, batch 16 of the cpu8 high-resource rows) trains
from the same start on the same batches under each objective, with the loop's own parts (make_student,
configure_optimizer, batch_loss, update; return_attention_maps where the objective reads attention maps). The
objectives take turns step by step (round robin, one model and optimizer each), so background load falls on all
alike. Reported: the median step time, and its ratio to the grid's KD-on objective (ce + logit_mse). One more
row runs that objective under eager attention: what computing attention maps on every step would cost an
objective that does not read them (mkd computes them only when a loss reads them).

Needs the cpu profile's base and teacher (`mkd exp --profile cpu`, or `mkd study layer_maps --profile cpu`, builds
them). Writes benchmark/loss_cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OBJECTIVES = {  # name -> (objective, eager attention although no loss reads the maps)
    "ce (KD off)": ({"ce": 1.0}, False),
    "ce + logit_mse (the grid's KD on)": ({"ce": 0.5, "logit_mse": 0.5}, False),
    "ce + logit_mse, eager attention": ({"ce": 0.5, "logit_mse": 0.5}, True),
    "ce + hidden_mse": ({"ce": 0.5, "hidden_mse": 0.5}, False),
    "ce + hidden_cos": ({"ce": 0.5, "hidden_cos": 0.5}, False),
    "ce + attention_mse": ({"ce": 0.5, "attention_mse": 0.5}, False),
    "ce + attention_kl": ({"ce": 0.5, "attention_kl": 0.5}, False),
    "ce + hidden_mse + attention_mse (TinyBERT-like)": ({"ce": 0.4, "hidden_mse": 0.3, "attention_mse": 0.3}, False),
}
REFERENCE = "ce + logit_mse (the grid's KD on)"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per objective (default 40)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps per objective (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    from mkd.core.kernels import pin_cpu_isa

    from benchmark.common import cpu_params, set_env

    set_env()
    params = cpu_params()
    pin_cpu_isa(params["cpu_isa"])
    import torch

    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from mkd.data import seed_for
    from mkd.models.features import length_grouped_batches, pad_batch
    from mkd.models.students import layer_map, make_student
    from mkd.pipeline.encoder import Encoder
    from mkd.pipeline.grid import Paths, teacher_key
    from mkd.pipeline.provenance import cpu_model
    from mkd.training.loop import (batch_loss, configure_optimizer, linear_schedule, return_attention_maps,
                                   train_config, update)
    from mkd.training.losses import reads_of
    from mkd.training.recipe import section_for_init
    from transformers import AutoModelForSequenceClassification

    paths = Paths(params, REPO)
    key = teacher_key(params, "cpu8", "high")[0]
    teacher_dir = paths.teachers / key
    if not (teacher_dir / "config.json").exists():
        print(f"loss_cost: no teacher at {teacher_dir}; build the cpu profile's upstream first "
              "(`mkd study layer_maps --profile cpu` or `mkd exp --profile cpu`)", file=sys.stderr)
        return 2
    enc = Encoder(params, paths)
    _, train = enc.train("cpu8", "high", 0)
    s = params["student"]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    mapping = layer_map(s["layer_map"], teacher.config.num_hidden_layers, s["layers"])
    seed = seed_for("student", "cpu8", "high", 0)
    batches = length_grouped_batches([len(x) for x in train.ids], s["batch_size"], seed=seed, epoch=0)
    batches = batches[: args.warmup + args.steps]
    logits = torch.zeros(len(train), len(enc.data.labels))  # values do not change the cost; the cached ones' shape

    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    runs = {}
    for name, (objective, eager) in OBJECTIVES.items():
        model = make_student("teacher", base_dir=paths.base, teacher_dir=teacher_dir, mapping=mapping,
                             num_labels=len(enc.data.labels), seed=seed)
        cfg = replace(train_config(section_for_init(s, "teacher"), objective, seed), max_steps=len(batches))
        optimizer = configure_optimizer(model, cfg, torch.device("cpu"))
        reads = reads_of(objective)
        own_teacher = None
        if reads & {"hidden", "attentions"}:
            own_teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
        if "attentions" in reads or eager:
            return_attention_maps(model, own_teacher)
        runs[name] = {"model": model.train(), "optimizer": optimizer, "scheduler": linear_schedule(optimizer, cfg, cfg.max_steps),
                      "cfg": cfg, "teacher": own_teacher, "times": []}
    load_before = os.getloadavg()
    for step, batch in enumerate(batches):
        ids, mask = pad_batch([train.ids[i] for i in batch], enc.pad_id)
        index = torch.as_tensor(batch)
        for name, (objective, _) in OBJECTIVES.items():
            r = runs[name]
            t0 = time.perf_counter()
            loss, _ = batch_loss(r["model"], ids, mask, train.labels[index], r["cfg"].objective,
                                 loss_options=r["cfg"].loss_options, teacher_logits=logits[index],
                                 teacher_model=r["teacher"], layer_map=mapping)
            update(accelerator, r["model"], r["optimizer"], r["scheduler"], loss, r["cfg"].max_grad_norm)
            if step >= args.warmup:
                r["times"].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    ref = statistics.median(runs[REFERENCE]["times"])
    rows = [(name, statistics.median(r["times"]), statistics.median(r["times"]) / ref) for name, r in runs.items()]
    lines = [f"# Step time by objective ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`python -m benchmark.loss_cost --steps {args.steps}`: {cpu_model()}, {args.threads} torch threads, "
             f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; the cpu profile's student "
             f"(teacher init, {len(mapping)} of {teacher.config.num_hidden_layers} layers, batch {s['batch_size']}, "
             f"cpu8-high rows), {args.steps} timed steps per objective after {args.warmup}, objectives taking turns "
             "step by step on the same batches.", "",
             "| objective | reads | median step, s | × the grid's KD on |", "|---|---|---:|---:|"]
    for name, median, ratio in rows:
        objective, eager = OBJECTIVES[name]
        reads = ", ".join(sorted(reads_of(objective))) or "labels only"
        lines.append(f"| {name} | {reads}{' (eager attention as attention losses switch on; maps not asked for)' if eager else ''} | {median:.3f} | {ratio:.2f} |")
    text = "\n".join(lines) + "\n"
    out = REPO / "benchmark" / "loss_cost.md"
    out.write_text(text, encoding="utf-8")
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps({n: runs[n]["times"] for n in runs}, indent=1) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
