"""Do a profile's results hold up when the grid is run again elsewhere (another CPU model, another machine)?
Compares two checkouts in which the profile has run: the shared teacher, every variant's mean test accuracy,
how many cells came back identical, the steps each cell trained, and the claims summary of both.

    python -m benchmark.compare_runs --a . --b ../cpu-run [--profile cpu] > benchmark/cpu_grid_cross_cpu.md

`--a` and `--b` are folders holding results/<profile>/ (and, for the claims, paper_tables/<profile>/claims.md).
Nothing is run or written; markdown goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def _summary(root: Path, profile: str) -> dict:
    return json.loads((root / "results" / profile / "summary.json").read_text())


def _table(root: Path, profile: str, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "results" / profile / name)


def variant_accuracies(a: Path, b: Path, profile: str) -> pd.DataFrame:
    """Mean test accuracy (%) per variant (language set / resource / init / KD) in a and b, and b - a."""
    sa, sb = (_summary(r, profile)["test_accuracy"] for r in (a, b))
    rows = [(k, 100 * sa[k], 100 * sb[k], 100 * (sb[k] - sa[k])) for k in sa if k in sb]
    return pd.DataFrame(rows, columns=["variant", "a %", "b %", "b - a (pp)"])


def identical_cells(a: Path, b: Path, profile: str) -> tuple[int, int]:
    """(cells whose every per-locale accuracy is the same in a and b, cells in both)."""
    ca, cb = (_table(r, profile, "cells.csv") for r in (a, b))
    m = ca.merge(cb, on=["cell", "split", "locale"], suffixes=("_a", "_b"))
    same = (m.accuracy_a == m.accuracy_b).groupby(m.cell).all()
    return int(same.sum()), len(same)


def training(a: Path, b: Path, profile: str) -> dict:
    ta, tb = (_table(r, profile, "training.csv") for r in (a, b))
    t = ta.merge(tb, on="cell", suffixes=("_a", "_b"))
    return {"cells": len(t), "same steps": int((t.steps_a == t.steps_b).sum()),
            "same best step": int((t.best_step_a == t.best_step_b).sum()),
            "steps a": int(t.steps_a.sum()), "steps b": int(t.steps_b.sum()),
            "train seconds a": round(float(t.train_seconds_a.sum())), "train seconds b": round(float(t.train_seconds_b.sum()))}


def claims_summary(root: Path, profile: str) -> list[str]:
    """The summary table's rows of claims.md (the first table, one row per claim)."""
    path = root / "paper_tables" / profile / "claims.md"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| claim |")), None)
    if start is None:
        return []
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line.replace("<br>", " "))
    return rows


def report(a: Path, b: Path, profile: str) -> str:
    out = [f"# benchmark.compare_runs: `{profile}` in {a} (a) and {b} (b)", ""]
    ta, tb = (_summary(r, profile).get("teacher_test_accuracy") for r in (a, b))
    out += [f"Teacher test accuracy: a {ta}, b {tb}", ""]
    acc = variant_accuracies(a, b, profile)
    out += [acc.to_markdown(index=False, floatfmt=".1f"), "",
            f"Mean |b - a| {acc['b - a (pp)'].abs().mean():.2f} pp, largest {acc['b - a (pp)'].abs().max():.1f} pp.", ""]
    same, cells = identical_cells(a, b, profile)
    out += [f"Cells with every accuracy identical: {same} of {cells}.", "",
            "Training: " + ", ".join(f"{k} {v}" for k, v in training(a, b, profile).items()), ""]
    for name, root in (("a", a), ("b", b)):
        rows = claims_summary(root, profile)
        if rows:
            out += [f"Claims summary, {name}:", "", *rows, ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args()
    print(report(args.a, args.b, args.profile))


if __name__ == "__main__":
    main()
