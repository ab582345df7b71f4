"""The paper's claims as data: their text and the comparisons each rests on (`family_specs`), and which claims a
grid can test at all (`testable_claims`). No pandas or scipy: `mkd validate` reads it before any work."""

from __future__ import annotations

from enum import Enum
from typing import Mapping, Sequence

from mkd.axes import KD_SETTINGS as KDS, initializations


class Verdict(str, Enum):
    """What a comparison (and a claim within a slice) can come to; claims.md, stats.json, the tables and the tests
    read these. A claim's direction is always "a > b" (its comparisons are written so)."""

    REPRODUCED = "reproduced"          # the effect is there, in the claimed direction
    CONTRADICTED = "contradicted"      # it is there, in the other direction
    NO_EFFECT = "no effect"            # equivalent to zero within ±analysis.equivalence_margin (two one-sided tests)
    INCONCLUSIVE = "inconclusive"      # none of the above: its minimum detectable effect says how little was seen
    TESTS_DISAGREE = "inconclusive (tests disagree)"  # significant over runs, the other way across locales
    NOT_TESTABLE = "not testable at this scale"       # rests on a failed sanity gate or a collapsed model
    SKIPPED = "skipped"                # a variant it needs is not in the grid

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


VERDICTS = tuple(v.value for v in Verdict)

ENGLISH_LOCALES = frozenset({"en-US"})
# Language sets whose training locales are known without being told: trained on English only.
DEFAULT_TRAIN_LOCALES: dict[str, tuple[str, ...]] = {"en": ("en-US",)}

CLAIMS = {
    1: "Initializing the student from the fine-tuned teacher's weights beats random initialization.",
    2: "Initializing the student from the fine-tuned teacher's weights beats initializing it from the "
    "pretrained (not fine-tuned) student model.",
    3: "The effect of teacher-weight initialization exceeds the effect of knowledge distillation itself "
    "(init effect = teacher init - pretrained init, both without KD; KD effect = pretrained init with KD - "
    "without KD).",
    4: "Knowledge distillation helps: KD on beats KD off within each initialization.",
    5: "In the low-resource setting, teacher-weight initialization keeps multilingual ability: its advantage "
    "holds on non-English locales, and on locales the student was never trained on.",
}


def _v(init: str, kd: str) -> dict:
    return {"init": init, "kd": kd}


def family_specs(
    slices: Sequence[tuple[str, str]],
    locales_by_set: Mapping[str, Sequence[str]],
    train_locales: Mapping[str, Sequence[str]] | None = None,
) -> list[dict]:
    """The comparisons the paper's claims rest on, per (language_set, resource) slice."""
    train_locales = {**DEFAULT_TRAIN_LOCALES, **(train_locales or {})}
    specs = []
    for ls, res in slices:
        base = {"language_set": ls, "resource": res, "locale_subset": "all", "locales": None}
        for kd in KDS:
            specs.append({**base, "claim": 1, "combo_a": [(1.0, _v("teacher", kd))],
                          "combo_b": [(1.0, _v("random", kd))]})
        for kd in KDS:
            specs.append({**base, "claim": 2, "combo_a": [(1.0, _v("teacher", kd))],
                          "combo_b": [(1.0, _v("pretrained", kd))]})
        specs.append({
            **base, "claim": 3, "label": "init effect vs KD effect",
            "combo_a": [(1.0, _v("teacher", "off")), (-1.0, _v("pretrained", "off"))],
            "combo_b": [(1.0, _v("pretrained", "on")), (-1.0, _v("pretrained", "off"))],
        })
        for init in initializations():  # `init`: claim 4 is also reported per init (claim_verdicts_by_init)
            specs.append({**base, "claim": 4, "init": init, "combo_a": [(1.0, _v(init, "on"))],
                          "combo_b": [(1.0, _v(init, "off"))]})
        if res != "low":
            continue
        all_loc = list(locales_by_set.get(ls, []))
        subsets: list[tuple[str, list[str]]] = []
        non_en = [l for l in all_loc if l not in ENGLISH_LOCALES]
        seen = train_locales.get(ls)
        unseen = [l for l in all_loc if l not in set(seen)] if seen is not None else None
        if unseen is not None and set(unseen) == set(non_en):
            subsets.append(("non-English = unseen in training", non_en))
        else:
            subsets.append(("non-English", non_en))
            if unseen:
                subsets.append(("unseen in training", unseen))
        for name, locs in subsets:
            if not locs:
                continue
            for other in ("random", "pretrained"):
                for kd in KDS:
                    specs.append({**base, "claim": 5, "locale_subset": name, "locales": locs,
                                  "combo_a": [(1.0, _v("teacher", kd))], "combo_b": [(1.0, _v(other, kd))]})
    return specs


def testable_claims(inits: Sequence[str], kds: Sequence[str]) -> list[int]:
    """The claims with at least one comparison whose variants are all in a grid of these inits and KD settings."""
    variants = {(i, k) for i in inits for k in kds}
    testable = set()
    for spec in family_specs([("any", "high")], {}):
        needed = {(v["init"], v["kd"]) for _, v in spec["combo_a"] + spec["combo_b"]}
        if needed <= variants:
            testable.add(spec["claim"])
    if 1 in testable or 2 in testable:  # claim 5 compares the same variants as 1 and 2, on low-resource locales
        testable.add(5)
    return sorted(testable)
