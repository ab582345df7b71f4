"""One profile's cell scores as the analysis reads them: `cells.csv` validated, the variant labels, and the
aggregates every table, figure and claim is built from (seed-level scores, per-variant summary, reference means).

Input contract (long format, one row per trained cell x seed x split x locale):
    profile, cell, language_set, resource, init, kd, seed, split, locale, accuracy, macro_f1
resource in {low, high}; init a registered initialization (mkd.models.students; other init values, e.g. the teacher
model itself as "teacher_model", are ignored); kd in {off, on}; scores in [0, 1]. No average rows: averages are
computed here. Only results are read: no training code is imported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mkd.axes import KD_SETTINGS, METRICS, RESOURCES, initializations
from mkd.core.errors import ConfigError, DataError

REQUIRED_COLUMNS = (
    "profile", "cell", "language_set", "resource", "init", "kd", "seed", "split", "locale", "accuracy", "macro_f1",
)
RUN_KEY = ["language_set", "resource", "init", "kd", "seed"]
ROW_KEY = ["profile", "language_set", "resource", "init", "kd", "seed", "split", "locale"]


def short_label(init: str, kd: str) -> str:
    return init + ("+KD" if kd == "on" else "")


def variant_order() -> list[str]:
    """Every registered init x KD setting, in registry order: a new init can never lose its rows here."""
    return [short_label(i, k) for i in initializations() for k in KD_SETTINGS]


def variant_labels(df: pd.DataFrame) -> list[str]:
    """The short label (e.g. "teacher+KD") of each row's init x KD setting."""
    return [short_label(i, k) for i, k in zip(df["init"], df["kd"])]


def load_cells(cells_csv: Path, profile: str | None = None, metric: str = "accuracy",
               split: str = "test") -> pd.DataFrame:
    """Read and validate `cells.csv`; return the rows of the three student inits on `split`.

    Raises DataError naming the problem for: a missing or empty file, missing columns, several profiles (or one
    other than `profile`), unknown resource/kd values, non-numeric or out-of-range scores, duplicate rows, and a
    run whose locales differ from the other runs of its language set.
    """
    cells_csv = Path(cells_csv)
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    if not cells_csv.is_file():
        raise DataError(f"results file not found: {cells_csv}; run the grid first")
    try:
        df = pd.read_csv(cells_csv, dtype={"profile": str, "cell": str, "language_set": str, "resource": str,
                                           "init": str, "kd": str, "split": str, "locale": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{cells_csv} is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{cells_csv} is not a readable CSV: {e}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{cells_csv} lacks column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    if df.empty:
        raise DataError(f"{cells_csv} has a header but no rows")
    profiles = sorted(df["profile"].dropna().astype(str).unique())
    if len(profiles) != 1:
        raise DataError(
            f"{cells_csv} holds {len(profiles)} profiles ({', '.join(profiles) or 'none'}); results of different "
            "profiles must never be mixed: analyse one profile's cells.csv at a time"
        )
    if profile is not None and profiles[0] != profile:
        raise DataError(f"{cells_csv} holds profile {profiles[0]!r}, but the analysis was asked for {profile!r}")
    key_cols = ["language_set", "resource", "init", "kd", "split", "locale", "seed"]
    nulls = [c for c in key_cols if df[c].isna().any()]
    if nulls:
        raise DataError(f"{cells_csv} has empty values in column(s) {', '.join(nulls)}")
    df = df[df["init"].isin(initializations())].copy()  # the teacher model's own rows etc. are not student variants
    if df.empty:
        raise DataError(f"{cells_csv} has no student rows (init in {', '.join(initializations())})")
    for col, allowed in (("resource", RESOURCES), ("kd", KD_SETTINGS)):
        bad = sorted(set(df[col]) - set(allowed))
        if bad:
            raise DataError(f"{cells_csv}: column {col} has value(s) {', '.join(map(repr, bad))}; allowed: "
                            f"{', '.join(allowed)}")
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any():
        raise DataError(f"{cells_csv}: column seed must hold integers")
    df["seed"] = seeds.astype(int)
    for m in METRICS:
        vals = pd.to_numeric(df[m], errors="coerce")
        if m == metric and vals.isna().any():
            bad = df.loc[vals.isna(), "cell"].astype(str).unique()[:3]
            raise DataError(f"{cells_csv}: column {m} has missing or non-numeric values (cell(s) {', '.join(bad)})")
        if ((vals < 0) | (vals > 1)).any():
            bad = df.loc[(vals < 0) | (vals > 1), "cell"].astype(str).unique()[:3]
            raise DataError(f"{cells_csv}: column {m} must lie in [0, 1] (a fraction, not a percentage); "
                            f"offending cell(s): {', '.join(bad)}")
        df[m] = vals
    dup = df.duplicated(ROW_KEY, keep=False)
    if dup.any():
        ex = df.loc[dup, ROW_KEY].drop_duplicates().head(3)
        desc = "; ".join(", ".join(f"{k}={r[k]}" for k in ROW_KEY[1:]) for _, r in ex.iterrows())
        raise DataError(f"{cells_csv} has {int(dup.sum())} duplicate rows for the same run, split and locale "
                        f"(e.g. {desc}); each run must be reported once")
    splits = sorted(df["split"].unique())
    df = df[df["split"] == split]
    if df.empty:
        raise DataError(f"{cells_csv} has no rows for split {split!r}; splits present: {', '.join(splits)}")
    for ls, g in df.groupby("language_set"):
        expected = set(g["locale"])
        for key, run in g.groupby(RUN_KEY):
            lack = sorted(expected - set(run["locale"]))
            if lack:
                cell = ", ".join(sorted(run["cell"].astype(str).unique()))
                shown = ", ".join(lack[:8]) + (f" and {len(lack) - 8} more" if len(lack) > 8 else "")
                raise DataError(
                    f"{cells_csv}: cell {cell} (language set {key[0]}, {key[1]} resource, init {key[2]}, KD {key[3]}, "
                    f"seed {key[4]}) lacks {len(lack)} locale(s) on {split} that other runs of language set {ls} "
                    f"have: {shown}; rerun its evaluation"
                )
    return df.reset_index(drop=True)


def slices_of(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (language_set, resource) slices in `df`, in report order."""
    pairs = {(ls, r) for ls, r in zip(df["language_set"], df["resource"])}
    return sorted(pairs, key=lambda s: (s[0], RESOURCES.index(s[1])))


def seed_level(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run: the locale-averaged score."""
    out = df.groupby(RUN_KEY, as_index=False)[metric].mean()
    out["variant"] = variant_labels(out)
    return out


def summary_frame(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (language_set, resource, init, kd): mean/std over seeds of the locale-averaged score, in [0, 1]."""
    sl = seed_level(df, metric)
    g = sl.groupby(["language_set", "resource", "init", "kd"])[metric]
    out = g.agg(mean="mean", std=lambda x: float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
                n_seeds="count").reset_index()
    nloc = df.groupby(["language_set", "resource", "init", "kd"])["locale"].nunique().rename("n_locales")
    loc_means = df.groupby(["language_set", "resource", "init", "kd", "locale"])[metric].mean()
    worst = loc_means.groupby(["language_set", "resource", "init", "kd"]).agg(["min", "max"])
    worst.columns = ["locale_min", "locale_max"]
    out = out.merge(nloc.reset_index(), on=["language_set", "resource", "init", "kd"])
    out = out.merge(worst.reset_index(), on=["language_set", "resource", "init", "kd"])
    out["variant"] = variant_labels(out)
    out["metric"] = metric
    order = {v: n for n, v in enumerate(variant_order())}
    out["_o"] = out["variant"].map(order)
    out["_r"] = out["resource"].map(RESOURCES.index)
    return out.sort_values(["language_set", "_r", "_o"]).drop(columns=["_o", "_r"]).reset_index(drop=True)


REFERENCE_LABELS = {"probe": "frozen probe (floor)", "teacher": "teacher (ceiling)", "chance": "chance"}
REFERENCE_COLUMNS = {"probe": "probe", "teacher": "teacher model"}  # their column names beside the variants


def reference_means(refs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (language_set, resource, reference): the locale-averaged score of the probe, the teacher and chance."""
    if refs is None or refs.empty:
        return pd.DataFrame(columns=["language_set", "resource", "reference", "mean"])
    value = "accuracy" if metric not in refs.columns else metric
    return (refs.groupby(["language_set", "resource", "reference"])[value].mean().rename("mean").reset_index())


def probe_c(refs: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """{(language_set, resource): the C the frozen probe chose on dev, as text} where references.csv records it
    (`probe_c`; older files lack the column, then {}). Where seeds draw their own rows a slice has a probe per
    draw, and its Cs are joined: "1/10"."""
    if refs is None or refs.empty or "probe_c" not in refs.columns:
        return {}
    r = refs[(refs.reference == "probe")].dropna(subset=["probe_c"])
    return {(ls, res): "/".join(f"{float(c):g}" for c in str(g["probe_c"].iloc[0]).split("/"))
            for (ls, res), g in r.groupby(["language_set", "resource"])}
