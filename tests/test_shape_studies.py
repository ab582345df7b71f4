"""The shape studies (mkd.studies.shape): their runs follow the grid's power rule, every run is a valid grid cell
with one shape changed, and their verdicts come from the grid's statistics: tested on runs of known effect."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest

from mkd.config import load_profile, merge, read_yaml, validate
from mkd.core.errors import ConfigError
from mkd.studies import shape

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu():
    return validate(merge(read_yaml(REPO / "params.yaml"), load_profile("cpu")))


def test_the_studies_run_the_power_rules_seeds_and_share_their_reference_runs(cpu):
    studies = shape.studies(cpu)
    maps, widths = studies["layer_maps"], studies["widths"]
    assert [s.layer_map for s in maps.shapes] == ["spread", "bottom", "top", "alternate_top", "symmetric"]
    assert [s.hidden_size for s in widths.shapes] == [None, 256, 192]  # e5-small's 384, 2/3 and 1/2 of it
    # the cpu profile's power rule: 6 runs of pretrained and teacher init, 3 of random init
    assert maps.seeds(cpu, "teacher") == [0, 1, 2, 3, 4, 5] and widths.seeds(cpu, "random") == [0, 1, 2]
    map_runs, width_runs = maps.runs(cpu), widths.runs(cpu)
    assert len(map_runs) == 5 * 2 * 6 and len(width_runs) == 3 * (3 + 6 + 6)
    assert len({r.id for r in map_runs}) == len(map_runs)
    shared = {r.id for r in map_runs} & {r.id for r in width_runs}
    # the profile's own shape (spread, full width) with pretrained and teacher init trains once for both studies
    assert shared == {f"cpu8-low-{i}-kdon-spread-hfull-s{s}" for i in ("pretrained", "teacher") for s in range(6)}


def test_a_runs_params_are_the_profiles_with_its_shape_and_validate(cpu):
    run = next(r for r in shape.studies(cpu)["widths"].runs(cpu) if r.shape.hidden_size == 192)
    p = shape.run_params(cpu, run)
    assert p["student"]["hidden_size"] == 192 and p["student"]["layer_map"] == "spread"
    assert cpu["student"]["hidden_size"] is None  # the profile itself untouched
    validate(p)
    p = shape.run_params(cpu, next(r for r in shape.studies(cpu)["layer_maps"].runs(cpu) if r.shape.layer_map == "symmetric"))
    assert p["student"]["layer_map"] == "symmetric" and p["student"]["hidden_size"] is None


@pytest.mark.parametrize("change, message", [
    (("student", "layer_map", "top"), r"compares with the spread map; the profile's student\.layer_map is 'top'"),
    (("grid", "resources", ["high"]), r"resource 'low' is not in the profile's grid\.resources"),
])
def test_a_study_the_profile_cannot_run_is_refused_before_any_work(cpu, change, message):
    p = deepcopy(cpu)
    section, key, value = change
    p[section][key] = value
    with pytest.raises(ConfigError, match=message):
        shape.studies(cpu)["layer_maps"].check(p)


NOISE = [-0.3, -0.1, 0.0, 0.1, 0.2, 0.1]  # run-to-run spread of every variant: sd 0.18 pp


def _rows(study, advantage_by_map):
    """Runs whose teacher init beats pretrained init by the given points per layer map, with NOISE."""
    rows = []
    for s in study.shapes:
        for init in study.inits:
            base = 50.0 + (advantage_by_map[s.layer_map] if init == "teacher" else 0.0)
            for n, e in enumerate(NOISE):
                rows.append({"shape": s.id, "init": init, "seed": n, "teacher_layers": "0 2 4 7 9 11",
                             "test_all": base + e, "test_train": base + 5 + e})
    return rows


def test_the_verdicts_find_the_effects_the_runs_hold(cpu):
    study = shape.studies(cpu)["layer_maps"]
    rows = _rows(study, {"spread": 10.0, "bottom": 10.0, "top": -5.0, "alternate_top": 10.0, "symmetric": 9.0})
    comps = shape.comparisons(rows, study, margin=2.0)
    got = {(c["kind"], c["shape"], c["locales"]): c for c in comps}
    assert len(comps) == 2 * (5 + 4)  # per locale set: 5 advantages, 4 dependences on the reference (spread)
    adv = got["advantage", "spread-hfull", "all"]
    assert adv["delta"] == pytest.approx(10.0) and adv["verdict"] == "reproduced" and adv["n_runs"] == "6/6"
    assert got["advantage", "top-hfull", "all"]["verdict"] == "contradicted"
    assert got["dependence", "top-hfull", "all"]["delta"] == pytest.approx(-15.0)
    assert got["dependence", "top-hfull", "all"]["verdict"] == "contradicted"
    # the reference's own advantage: equal within the ±2 pp margin
    assert got["dependence", "bottom-hfull", "train"]["verdict"] == "no effect"
    assert got["dependence", "symmetric-hfull", "all"]["delta"] == pytest.approx(-1.0)
    for c in comps:  # Holm within each kind never lowers a p-value
        assert c["p_holm"] >= c["p"] - 1e-12
    text = "\n".join(shape.findings(comps, study, 384))
    assert "top, width 384: teacher init -5.0 pp" in text and "**differs**" in text
    assert "bottom, width 384: teacher init +10.0 pp" in text and "**no effect**" in text


def test_too_few_runs_give_inconclusive_with_the_smallest_detectable_effect(cpu):
    study = shape.studies(cpu)["widths"]
    rows = [r for r in _rows(study, {"spread": 1.0}) if r["seed"] < 2]
    rows = [dict(r, test_all=r["test_all"] + (3.0 if r["seed"] == 1 and r["init"] == "teacher" else 0.0)) for r in rows]
    comps = shape.comparisons(rows, study, margin=2.0)
    c = next(c for c in comps if c["kind"] == "advantage" and c["shape"] == "spread-h192" and c["locales"] == "all")
    assert c["n_runs"] == "2/2" and c["verdict"] == "inconclusive" and c["mde"] > abs(c["delta"])
    table = shape.comparison_table(comps, study, 384)
    assert f"{c['mde']:.1f} |" in table


def test_the_accuracy_table_sets_every_init_beside_floor_teacher_and_chance(cpu):
    study = shape.studies(cpu)["widths"]
    refs = {"chance": 100 / 60, "probe_all": 40.0, "probe_train": 45.0, "teacher_all": 70.0, "teacher_train": 80.0}
    table = shape.accuracy_table(_rows(study, {"spread": 10.0}), study, refs, 384).splitlines()
    assert table[0] == "| shape | teacher layers | random | pretrained | teacher | probe floor | teacher model | chance |"
    assert table[2].startswith("| spread, width 384 | 0 2 4 7 9 11 | 50.0 ± 0.2 / 55.0 ± 0.2 (6) |")
    assert table[4].endswith("60.0 ± 0.2 / 65.0 ± 0.2 (6) | 40.0 / 45.0 | 70.0 / 80.0 | 1.7 |")
