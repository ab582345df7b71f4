"""The pipeline's stages on an accelerator: the `paper` profile's code path (teacher, logits, cells, references on
a GPU) at smoke size, where a GPU machine is at hand. CI has none; this is run by hand.

    python -m benchmark.device_check make-base BASE_DIR OUT_DIR --layers 2   # here: cut a built base to 2 layers
    python -m benchmark.device_check run --base OUT_DIR --massive DIR --work W   # there: every stage, then a report

`make-base` keeps the first N encoder layers of a Hugging Face folder (e.g. the smoke profile's trimmed e5-small,
artifacts/smoke/base), so the check carries a few MB of real weights instead of the whole model. `run` writes the
smoke profile's params with that base (`local:`), runs each `mkd` stage in order in its own process, as DVC
would, then prints one JSON line: the device every stage saw, the teacher's and each cell's test accuracy, the
wall time of each stage, and whether a second run of one cell (`mkd verify`) reproduced it bit for bit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def make_base(src: Path, out: Path, layers: int) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(src)
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(f"{out}: {layers} layers, {sum(p.numel() for p in model.parameters()):,} parameters")


def run(base: Path, massive: Path, work: Path) -> dict:
    import torch

    from mkd.config import load_profile, merge, read_yaml, validate

    repo = Path(__file__).resolve().parents[1]
    params = merge(read_yaml(repo / "params.yaml"), load_profile("smoke"))
    params["data"]["massive"] = str(massive.resolve())
    params["base"].update(model=f"local:{base.resolve()}", trim_vocab=True)
    params["teacher"].update(max_steps=36, eval_every=12, patience=0, mixed_precision="bf16" if torch.cuda.is_available() else "no")
    params["grid"].update(resources=["low"], seeds=[0])
    validate(params)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = [["validate", "--stamp"], ["prepare"], ["build-base"], ["train-teachers"], ["references"], ["cache-logits"]]
    stages += [["cell", "--language-set", "smoke", "--resource", "low", "--init", i, "--kd", k, "--seed", "0"]
               for i in ("random", "pretrained", "teacher") for k in ("off", "on")]
    stages += [["collect"], ["analyze"], ["verify", "--cells", "1"]]
    report = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "seconds": {}}
    for args in stages:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mkd.cli", "-q", *args], cwd=work, capture_output=True, text=True)
        name = f"cell {args[6]} kd {args[8]}" if args[0] == "cell" else args[0]
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
        if r.returncode not in (0, 1) or (r.returncode == 1 and args[0] != "verify"):
            report["failed"] = {"stage": name, "rc": r.returncode, "stderr": r.stderr[-3000:]}
            return report
        if args[0] == "verify":
            report["verify"] = r.stdout.strip()
    teacher = json.loads((work / "artifacts/smoke/teachers/shared/teacher_metrics.json").read_text())
    report["teacher_test_accuracy"] = teacher["metrics"]["test"]["accuracy"]["avg"]
    report["teacher_device"] = teacher["provenance"].get("device")
    cells = sorted((work / "results/smoke/cells").iterdir())
    from mkd.data import LabelVocab
    from mkd.evaluation.predictions import FILE_NAME, Predictions

    labels = LabelVocab.load(work / "artifacts/smoke/data/labels.json")
    report["cells"] = {c.name: round(Predictions.read(c / FILE_NAME).scores(labels)["test"]["accuracy"]["avg"], 4) for c in cells}
    report["cell_devices"] = sorted({json.loads((c / "info.json").read_text())["provenance"].get("device") for c in cells})
    return report


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make-base")
    m.add_argument("src", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--layers", type=int, default=2)
    r = sub.add_parser("run")
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--massive", type=Path, required=True)
    r.add_argument("--work", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "make-base":
        make_base(args.src, args.out, args.layers)
    else:
        print(json.dumps(run(args.base, args.massive, args.work)))


if __name__ == "__main__":
    main()
