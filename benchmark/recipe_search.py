"""Choose the training recipe on dev, never on test: teacher and student variants of a profile, side by side
with the frozen probe trained on the same rows.

    python -m benchmark.recipe_search --profile cpu --scratch /tmp/mkd-recipe \
        --teacher 'cls:lr=1e-4,head_lr=3e-3' --teacher 'mean:lr=1e-4,head_lr=3e-3'

Each variant is `pooling:key=value,...` over the profile's teacher (or student) section. Prints one JSON line
per run: dev accuracy on the training locales (the model-selection set) and on every eval locale, and the wall
time. The numbers that chose the committed recipe are quoted in params.yaml / the profile's comments.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_variant(spec: str) -> tuple[str, dict]:
    pooling, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value.lower()) if value.lower() in ("true", "false") else float(value) if "." in value or "e" in value else int(value)
    return pooling, overrides


def dev_scores(predict, enc, params, train_locales) -> dict:
    """Locale-averaged dev accuracy (%) on the training locales and on every eval locale; `predict` maps an
    EncodedSet to predicted labels (a fine-tuned model's or the probe's)."""
    from mkd.evaluation.predictions import per_locale_metrics
    from mkd.pipeline.grid import language_set

    out = {}
    for name, locales in (("dev_train_locales", train_locales), ("dev_all", language_set(params, params["data"]["eval_languages"]))):
        _, es = enc.split(locales, "dev")
        acc = per_locale_metrics(predict(es).tolist(), es.labels.tolist(), es.locales)["accuracy"]["avg"]
        out[name] = round(100 * acc, 2)
    return out


def summarize(lines: list[str], within: float = 1.0) -> str:
    """Markdown of a student search's JSON lines: dev accuracy on the training locales per init x recipe (one
    column per slice and their mean), each init's best recipe, and whether one shared recipe is within `within`
    dev points of every init's best (each init gets the same tuning effort)."""
    from collections import defaultdict

    scores = defaultdict(dict)  # (init, recipe) -> {slice: dev}
    steps = {}
    for line in lines:
        r = json.loads(line)
        if not str(r.get("run", "")).startswith("student "):
            continue
        init_slice, _, recipe = r["run"][len("student "):].partition("@")
        init, _, slice_ = init_slice.partition("/")
        scores[init, recipe][slice_] = r["dev_train_locales"]
        steps[init, recipe, slice_] = r["history"][-1].get("step", "") if r["history"] else 0
    slices = sorted({s for v in scores.values() for s in v})
    mean = {k: sum(v.values()) / len(v) for k, v in scores.items() if len(v) == len(slices)}
    inits = list(dict.fromkeys(i for i, _ in scores))
    out = ["| init | recipe | " + " | ".join(f"{s} dev % (steps)" for s in slices) + " | mean |",
           "|---|---|" + "---:|" * (len(slices) + 1)]
    for (init, recipe), v in scores.items():
        out.append(f"| {init} | {recipe} | " + " | ".join(f"{v.get(s, float('nan')):.2f} ({steps.get((init, recipe, s), '')})"
                                                       for s in slices) + f" | {mean.get((init, recipe), float('nan')):.2f} |")
    best = {i: max((k for k in mean if k[0] == i), key=mean.get) for i in inits if any(k[0] == i for k in mean)}
    out += ["", "Best per init (mean over slices): " + "; ".join(f"{i}: {r} ({mean[i, r]:.2f})" for i, r in best.values())]
    recipes = {r for _, r in mean}
    shared = [r for r in recipes if all((i, r) in mean and mean[i, r] >= mean[best[i]] - within for i in best)]
    partial = [i for i in inits if i not in best]  # no recipe run on every slice: no mean to compare
    out.append(f"Recipes within {within:g} dev point(s) of every init's best: " + (", ".join(sorted(shared)) or "none")
               + (f" (inits compared: {', '.join(best)}; not run on every slice: {', '.join(partial)})" if partial else ""))
    return "\n".join(out)


def model_predictions(model, pad_id):
    from mkd.evaluation.predict import predict_logits

    return lambda es: predict_logits(model, es.ids, pad_id).argmax(-1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--scratch", type=Path, default=None, help="a folder for this search's data, base and checkpoints (required)")
    ap.add_argument("--set", action="append", default=[], help="profile override key=value (dotted), JSON value")
    ap.add_argument("--teacher", action="append", default=[], help="teacher variant pooling:key=value,...")
    ap.add_argument("--student", action="append", default=[], help="student variant init@pooling:key=value,... (teacher = first --teacher)")
    ap.add_argument("--teacher-dir", type=Path, default=None, help="a teacher saved by an earlier search (instead of --teacher)")
    ap.add_argument("--probe", action="store_true", help="also fit the frozen probe on the teacher's rows")
    ap.add_argument("--summarize", type=Path, default=None, help="print the markdown summary of a search's log and stop")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize.read_text().splitlines()))
        return
    if args.scratch is None:
        ap.error("--scratch is required (a folder for this search's data, base and checkpoints)")

    from transformers import AutoModelForSequenceClassification

    from mkd.pipeline import stages
    from mkd.pipeline.encoder import Encoder
    from mkd.pipeline.grid import Paths, language_set
    from mkd.config import load_params, load_profile, merge, validate
    from mkd.data import seed_for
    from mkd.models.heads import set_pooling
    from mkd.models.students import layer_map, make_student
    from mkd.training.loop import fit, train_config
    from mkd.training.recipe import section_for_init

    params = merge(load_params("params.yaml"), load_profile(args.profile))
    for item in args.set:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = json.loads(value)
    params = validate(params)
    torch.set_num_threads(params["threads"] or torch.get_num_threads())
    paths = Paths(params, args.scratch)
    if not (paths.data / "manifest.json").exists():
        stages.prepare(params, args.scratch)
    if not (paths.base / "config.json").exists():
        stages.build_base(params, args.scratch)
    enc = Encoder(params, paths)
    t = params["teacher"]
    tls = language_set(params, t["language_set"])
    _, train = enc.train(t["language_set"], t["resource"])
    _, dev = enc.split(tls, "dev")
    print(json.dumps({"train_rows": len(train), "dev_rows": len(dev)}), flush=True)

    if args.probe:
        from mkd.models.probe import embed, fit_probe, load_frozen_encoder

        t0 = time.perf_counter()
        body = load_frozen_encoder(paths.base)
        probe = fit_probe(embed(body, train.ids, enc.pad_id), train.labels, len(enc.data.labels))
        res = dev_scores(lambda es: probe.predict(embed(body, es.ids, enc.pad_id)), enc, params, tls)
        print(json.dumps({"run": "probe", **res, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)

    teacher_dir = args.teacher_dir
    for i, spec in enumerate(args.teacher):
        pooling, over = parse_variant(spec)
        section = {**t, **over}
        seed = seed_for("teacher", t["seed"], "shared")
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(paths.base, num_labels=len(enc.data.labels))
        set_pooling(model.config, pooling)
        cfg = train_config(section, {"ce": 1.0}, seed)
        t0 = time.perf_counter()
        stats = fit(model, train, dev, cfg, pad_id=enc.pad_id, name=f"teacher {spec}")
        print(json.dumps({"run": f"teacher {spec}", **dev_scores(model_predictions(model, enc.pad_id), enc, params, tls), "history": stats["history"],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        if i == 0:
            teacher_dir = args.scratch / "teacher0"
            model.save_pretrained(teacher_dir)

    s = params["student"]
    for spec in args.student:
        init_ls, _, rest = spec.partition("@")
        init, _, ls_res = init_ls.partition("/")
        ls, _, res = (ls_res or "cpu8/high").partition("/")
        pooling, over = parse_variant(rest)
        section = {**section_for_init(s, init), **over}  # the profile's rates for this init, then the variant's
        _, strain = enc.train(ls, res)
        sls = language_set(params, ls)
        _, sdev = enc.split(sls, "dev")
        mapping = layer_map(over.get("layer_map", s["layer_map"]), 12, over.get("layers", s["layers"]))
        seed = seed_for("student", ls, res, 0)
        student = make_student(init, base_dir=paths.base, teacher_dir=teacher_dir, mapping=mapping,
                               num_labels=len(enc.data.labels), seed=seed)
        set_pooling(student.config, pooling)
        before = dev_scores(model_predictions(student, enc.pad_id), enc, params, sls)
        cfg = train_config(section, {"ce": 1.0}, seed)
        t0 = time.perf_counter()
        stats = fit(student, strain, sdev, cfg, pad_id=enc.pad_id, name=f"student {spec}")
        print(json.dumps({"run": f"student {spec}", "rows": len(strain), "before": before,
                          **dev_scores(model_predictions(student, enc.pad_id), enc, params, sls), "history": stats["history"],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
