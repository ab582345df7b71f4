"""Sanity gates: is the regime meaningful enough for a verdict? Checked on the data, before any verdict.

A claim about initialization versus distillation means something only where the models learn. Each gate is a
data-driven check with its numbers; a comparison that rests on a failed gate is reported as "not testable at
this scale", never as reproduced or contradicted.

  teacher_beats_probe   the teacher beats a frozen-probe floor (linear classifier on the frozen base model's
                        embeddings of the teacher's own training rows) on its training locales. A teacher below
                        it was not trained into a useful model: nothing distilled or copied from it is a test.
  init_learns           each init's students (KD off and on, all seeds) beat `min_chance_multiple` x chance on
                        their training locales with the most data the grid gives them (the language set's
                        largest resource level). An init that cannot learn at all with the most data says
                        something about the scale, not about initialization. Failing to learn from the low
                        resource alone is the low-resource question itself, so that is not a gate.
  teacher_init_starts   a teacher-initialized student, before any training, is above `min_chance_multiple` x
                        chance on its training locales' dev rows: the copied layers carry what the teacher
                        knows, so "initialization from the teacher" is what was tested.
  not_degenerate        every seed of a variant predicts at least `min_distinct_fraction` of the labels: a
                        collapsed, (nearly) constant-prediction model is no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mkd.core.errors import DataError

@dataclass
class GateCheck:
    gate: str
    scope: str        # what it was checked for, e.g. "teacher shared (cpu8-high)", "cpu8 / random init"
    passed: bool
    detail: str       # the numbers
    blocks: list = field(default_factory=list)  # (language_set, resource or None, init or None, kd or None)


@dataclass
class GateReport:
    checks: list[GateCheck]

    def blockers(self, language_set: str, resource: str, variants: Sequence[Mapping[str, str]]) -> list[str]:
        """Reasons a comparison of `variants` in this slice is not testable (empty: testable)."""
        reasons = []
        for c in self.checks:
            if c.passed:
                continue
            for ls, res, init, kd in c.blocks:
                if ls != language_set or (res is not None and res != resource):
                    continue
                if init is None or any(v["init"] == init and (kd is None or v["kd"] == kd) for v in variants):
                    reasons.append(f"gate {c.gate} failed for {c.scope}: {c.detail}")
                    break
        return reasons

    def summary_rows(self) -> list[list[str]]:
        return [[c.gate, c.scope, "pass" if c.passed else "FAIL", c.detail] for c in self.checks]


def load_references(path: Path, split: str, metric: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"{path} not found; run `dvc repro collect` (the references stage writes the probe and teacher scores)")
    ref = pd.read_csv(path, dtype={"reference": str, "language_set": str, "resource": str, "trained_on": str,
                                   "split": str, "locale": str}, keep_default_na=False, na_values=[""])
    missing = [c for c in ("reference", "language_set", "resource", "trained_on", "split", "locale", metric) if c not in ref.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
    ref = ref[ref["split"] == split].copy()
    ref[metric] = pd.to_numeric(ref[metric], errors="coerce")
    return ref


def load_training(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"{path} not found; run `dvc repro collect`")
    return pd.read_csv(path, dtype={"language_set": str, "resource": str, "init": str, "kd": str})


def _mean_on(df: pd.DataFrame, locales: Sequence[str] | None, metric: str) -> float:
    sub = df if locales is None else df[df["locale"].isin(list(locales))]
    return float(sub.groupby("locale")[metric].mean().mean()) if not sub.empty else float("nan")


def _largest_resource(resources: Sequence[str], sizes: Mapping[str, float] | None) -> str:
    if sizes:
        known = [r for r in resources if r in sizes]
        if known:
            return max(known, key=lambda r: sizes[r])
    return "high" if "high" in resources else sorted(resources)[-1]


def check_gates(
    cells: pd.DataFrame,
    references: pd.DataFrame,
    training: pd.DataFrame,
    train_locales: Mapping[str, Sequence[str]],
    metric: str = "accuracy",
    min_chance_multiple: float = 5.0,
    min_distinct_fraction: float = 0.1,
    resource_sizes: Mapping[str, float] | None = None,
    num_labels: int | None = None,
) -> GateReport:
    """Run every gate on one profile's results (`cells`: student rows of the analysed split, as load_cells gives;
    `references`: that split's rows of references.csv; `training`: training.csv)."""
    chance_rows = references[references["reference"] == "chance"]
    if chance_rows.empty:
        raise DataError("references.csv has no chance rows; re-run `dvc repro collect`")
    chance = float(chance_rows["accuracy"].iloc[0])
    n_labels = num_labels or int(round(1 / chance))
    k = min_chance_multiple
    checks: list[GateCheck] = []
    slices = sorted({(ls, r) for ls, r in zip(cells["language_set"], cells["resource"])})
    sets = sorted({ls for ls, _ in slices})

    # teacher_beats_probe: once per teacher (its rows name the data it was trained on)
    teachers = references[references["reference"] == "teacher"]
    for trained_on, g in teachers.groupby("trained_on"):
        own_ls, own_res = trained_on.rsplit("-", 1)
        served = sorted({(ls, r) for ls, r in zip(g["language_set"], g["resource"]) if (ls, r) in set(slices)})
        teacher_rows = g[(g["language_set"] == g["language_set"].iloc[0]) & (g["resource"] == g["resource"].iloc[0])]
        probe_rows = references[(references["reference"] == "probe") & (references["trained_on"] == trained_on)]
        locs = train_locales.get(own_ls)
        t_acc, p_acc = _mean_on(teacher_rows, locs, metric), _mean_on(probe_rows, locs, metric)
        passed = bool(np.isfinite(t_acc) and np.isfinite(p_acc) and t_acc > p_acc)
        where = f"its {len(locs)} training locales" if locs else "all locales"
        checks.append(GateCheck(
            "teacher_beats_probe", f"teacher trained on {trained_on}", passed,
            f"teacher {100 * t_acc:.1f} % vs frozen probe {100 * p_acc:.1f} % ({metric}, {where})",
            [(ls, r, None, None) for ls, r in served]))

    # init_learns: per language set and init, at the largest resource level
    for ls in sets:
        sub = cells[cells["language_set"] == ls]
        res = _largest_resource(sorted(sub["resource"].unique()), resource_sizes)
        locs = train_locales.get(ls)
        for init in sorted(sub["init"].unique()):
            acc = _mean_on(sub[(sub["resource"] == res) & (sub["init"] == init)], locs, metric)
            where = f"{len(locs)} training locales" if locs else "all locales"
            checks.append(GateCheck(
                "init_learns", f"{ls} / {init} init", bool(acc >= k * chance),
                f"{100 * acc:.1f} % at {res} resource on its {where} (mean over KD and seeds) vs {k:g} x chance = {100 * k * chance:.1f} %",
                [(ls, None, init, None)]))

    # teacher_init_starts and not_degenerate: from training.csv
    tr = training[training["language_set"].isin(sets)]
    for (ls, res), g in tr[tr["init"] == "teacher"].groupby(["language_set", "resource"]):
        start = pd.to_numeric(g["initial_dev_accuracy"], errors="coerce").mean()
        checks.append(GateCheck(
            "teacher_init_starts", f"{ls}-{res} / teacher init", bool(start >= k * chance),
            f"{100 * start:.1f} % dev accuracy before training (training locales) vs {k:g} x chance = {100 * k * chance:.1f} %",
            [(ls, res, "teacher", None)]))
    min_distinct = max(2, int(np.ceil(min_distinct_fraction * n_labels)))
    distinct = pd.to_numeric(tr["distinct_test_predictions"], errors="coerce")
    bad = tr[distinct < min_distinct]
    for (ls, res, init, kd), g in bad.groupby(["language_set", "resource", "init", "kd"]):
        checks.append(GateCheck(
            "not_degenerate", f"{ls}-{res} / {init} init, KD {kd}", False,
            f"seed(s) {', '.join(map(str, sorted(g['seed'])))} predict only "
            f"{', '.join(map(str, g['distinct_test_predictions']))} of {n_labels} labels (< {min_distinct})",
            [(ls, res, init, kd)]))
    if bad.empty:
        checks.append(GateCheck("not_degenerate", "every variant", True,
                                f"every seed predicts >= {min_distinct} of {n_labels} labels on test"))
    return GateReport(checks)

