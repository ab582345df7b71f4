"""Synthetic `cells.csv` grids with known effects, for the analysis tests (no training involved)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mkd.axes import variant_name
from mkd.pipeline.results import CURVE_COLUMNS, REFERENCE_COLUMNS, TRAINING_COLUMNS, learning_curve

# MASSIVE locales (first entries in alphabetical order, en-US included early so small grids keep English).
LOCALES = [
    "en-US", "af-ZA", "am-ET", "ar-SA", "az-AZ", "bn-BD", "cy-GB", "da-DK", "de-DE", "el-GR", "es-ES", "fa-IR",
    "fi-FI", "fr-FR", "he-IL", "hi-IN", "hu-HU", "hy-AM", "id-ID", "is-IS", "it-IT", "ja-JP", "jv-ID", "ka-GE",
]
COLUMNS = ["profile", "cell", "language_set", "resource", "init", "kd", "seed", "split", "locale", "accuracy",
           "macro_f1"]


def make_synthetic_cells(
    path: str | Path | None = None,
    *,
    profile: str = "cpu",
    language_sets: Sequence[str] = ("cpu8",),
    resources: Sequence[str] = ("low", "high"),
    inits: Sequence[str] = ("random", "pretrained", "teacher"),
    kds: Sequence[str] = ("off", "on"),
    seeds: Sequence[int] = (0, 1, 2),
    n_locales: int = 16,
    splits: Sequence[str] = ("dev", "test"),
    teacher_effect: float = 0.0,
    kd_effect: float = 0.0,
    pretrained_effect: float = 0.0,
    base: float = 0.60,
    locale_sd: float = 0.05,
    seed_sd: float = 0.002,
    noise_sd: float = 0.01,
    teacher_rows: bool = True,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Build a long-format results grid; write it to `path` if given.

    score = base + locale offset (shared by all variants) + teacher_effect [init=teacher]
            + pretrained_effect [init=pretrained] + kd_effect [kd=on] + run offset (per seed run) + noise,
    clipped to [0, 1]. macro_f1 = accuracy - 0.05 (clipped). Optional teacher_model rows are noise the
    analysis must ignore.
    """
    rng = np.random.default_rng(rng_seed)
    locales = LOCALES[:n_locales]
    loc_off = dict(zip(locales, rng.normal(0, locale_sd, len(locales))))
    rows = []
    for ls in language_sets:
        for res in resources:
            res_off = -0.1 if res == "low" else 0.0
            for init in inits:
                for kd in kds:
                    for s in seeds:
                        run_off = rng.normal(0, seed_sd)
                        cell = f"{ls}-{res}-{init}-kd_{kd}-s{s}"
                        for split in splits:
                            for loc in locales:
                                acc = (base + res_off + loc_off[loc] + run_off + rng.normal(0, noise_sd)
                                       + (teacher_effect if init == "teacher" else 0.0)
                                       + (pretrained_effect if init == "pretrained" else 0.0)
                                       + (kd_effect if kd == "on" else 0.0))
                                acc = float(np.clip(acc, 0, 1))
                                rows.append([profile, cell, ls, res, init, kd, s, split, loc, acc,
                                             max(0.0, acc - 0.05)])
        if teacher_rows:
            for split in splits:
                for loc in locales:
                    rows.append([profile, f"{ls}-teacher", ls, "high", "teacher_model", "-", 0, split, loc, 0.9, 0.85])
    df = pd.DataFrame(rows, columns=COLUMNS)
    if path is not None:
        df.to_csv(path, index=False)
        write_companions(df, Path(path).parent)
    return df


def write_companions(
    cells: pd.DataFrame,
    folder: str | Path,
    *,
    teacher: float = 0.9,
    probe: float = 0.3,
    teacher_probe: float | None = None,
    teacher_trained_on: str | None = None,
    initial: dict | None = None,
    distinct: dict | None = None,
    n_labels: int = 60,
    probe_c: float = 0.1,
) -> None:
    """references.csv and training.csv beside a synthetic cells.csv, as `mkd collect` writes them.

    Every slice gets a probe scoring `probe`, the teacher scoring `teacher` (trained on `teacher_trained_on`,
    default the first language set at high resource) and chance 1/n_labels on every locale; the probe on the
    teacher's own rows scores `teacher_probe` (default `probe`). `initial[init]` is the dev accuracy before
    training (default: teacher 0.5, others chance), `distinct[(init, kd)]` the distinct test predictions
    (default n_labels); `probe_c` the C every probe chose."""
    folder = Path(folder)
    students = cells[cells["init"].isin(["random", "pretrained", "teacher"])]
    profile = students["profile"].iloc[0]
    first_ls = sorted(students["language_set"].unique())[0]
    trained_on = teacher_trained_on or f"{first_ls}-high"
    t_ls, t_res = trained_on.rsplit("-", 1)
    slices = sorted({(ls, r) for ls, r in zip(students["language_set"], students["resource"])})
    locales = sorted(students["locale"].unique())
    splits = sorted(students["split"].unique())
    refs = []
    for ls, res in slices:
        for split in splits:
            for loc in locales:
                refs.append([profile, "probe", ls, res, f"{ls}-{res}", split, loc, probe, probe])
                refs.append([profile, "teacher", ls, res, trained_on, split, loc, teacher, teacher])
                refs.append([profile, "chance", ls, res, "", split, loc, 1 / n_labels, float("nan")])
    if (t_ls, t_res) in set(slices):
        if teacher_probe is not None:
            refs = [r if not (r[1] == "probe" and r[4] == trained_on) else r[:7] + [teacher_probe, teacher_probe] for r in refs]
    else:
        for split in splits:
            for loc in locales:
                refs.append([profile, "probe", t_ls, t_res, trained_on, split, loc, teacher_probe if teacher_probe is not None else probe, probe])
                refs.append([profile, "teacher", t_ls, t_res, trained_on, split, loc, teacher, teacher])
    refs = [r + [probe_c if r[1] == "probe" else ""] for r in refs]
    pd.DataFrame(refs, columns=REFERENCE_COLUMNS).to_csv(folder / "references.csv", index=False)
    initial = {"teacher": 0.5, **(initial or {})}
    runs = students.drop_duplicates(["cell", "language_set", "resource", "init", "kd", "seed"])
    training = [[profile, r.cell, r.language_set, r.resource, r.init, r.kd, r.seed, initial.get(r.init, 1 / n_labels),
                 0.5, 80, 100, 2.0, "budget", (distinct or {}).get((r.init, r.kd), n_labels), 10.0] for r in runs.itertuples()]
    pd.DataFrame(training, columns=TRAINING_COLUMNS).to_csv(folder / "training.csv", index=False)
    # curves.csv through the collect stage's own writer: each run's dev accuracy rises linearly from its initial
    # value to its mean score over 100 steps, evaluated every 10
    curves = []
    for (ls, res, init, kd), g in students.groupby(["language_set", "resource", "init", "kd"]):
        runs = g.groupby("seed")["accuracy"].mean()
        start = initial.get(init, 1 / n_labels)
        histories = [[{"step": s, "train_loss": 1.0, "dev_accuracy": start + (end - start) * s / 100}
                      for s in range(10, 101, 10)] for end in runs]
        curves += [[variant_name(ls, res, init, kd)] + row for row in learning_curve(histories, [start] * len(runs))]
    pd.DataFrame(curves, columns=CURVE_COLUMNS).to_csv(folder / "curves.csv", index=False)
