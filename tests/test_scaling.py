"""What the paper profile's real size needs: each fix for a stage that did not scale, tested at a size that shows it,
and the warning a run too large for the machine gets before it starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mkd.cli import main
from mkd.config import load_profile, merge, read_yaml, validate
from mkd.models.probe import fit_probe, tune_probe

REPO = Path(__file__).resolve().parents[1]


def _probe_before(features, labels, num_labels, c):
    """fit_probe as it was written before the in-place standardization (the reference the new one must equal)."""
    x = features.double()
    mean, scale = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-12)
    x = (x - mean) / scale
    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=100, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, labels, reduction="mean") + \
            (weight ** 2).sum() / (2 * c * len(labels))
        loss.backward()
        return loss

    opt.step(closure)
    return mean.float(), scale.float(), weight.detach().float(), bias.detach().float()


def test_the_probe_standardized_once_in_place_fits_bit_for_bit_what_it_fitted_before():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2_000, 32, generator=g) * 3 + 1
    labels = torch.randint(0, 5, (2_000,), generator=g)
    c_grid = [0.01, 1.0]
    before = {c: _probe_before(features, labels, 5, c) for c in c_grid}
    seen = {}

    def dev_score(probe):
        seen[len(seen)] = probe
        return 0.0   # a tie everywhere: the smaller C is kept

    probe, c, _ = tune_probe(features, labels, 5, c_grid, dev_score)
    assert c == 0.01
    for i, c in enumerate(c_grid):
        got = seen[i]
        for name, old, new in zip(("mean", "scale", "weight", "bias"), before[c], (got.mean, got.scale, got.weight, got.bias)):
            assert torch.equal(old, new), f"C={c}: {name} differs"
    assert torch.equal(fit_probe(features, labels, 5, c=1.0).weight, before[1.0][2])
    features_before = features.clone()
    tune_probe(features, labels, 5, c_grid, dev_score)
    assert torch.equal(features, features_before)   # standardizing in place works on a copy, not the caller's features
    given_up = features.double()
    in_place, c, _ = tune_probe(given_up, labels, 5, c_grid, dev_score, in_place=True)
    assert torch.equal(in_place.weight, before[0.01][2]) and not torch.equal(given_up, features.double())


_PROBE_MEMORY = """
import resource, sys, torch
from mkd.models.probe import tune_probe
n, h, in_place = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "in_place"
features = torch.randn(n, h, generator=torch.Generator().manual_seed(0))
labels = torch.arange(n) % 4
features = features.double() if in_place else features
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tune_probe(features, labels, 4, [0.1, 1.0], lambda probe: 0.0, in_place=in_place)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("mode, copies", [("copy", 1), ("in_place", 0)])
def test_tuning_the_probe_holds_at_most_one_float64_copy_of_the_features_whatever_the_number_of_cs(mode, copies):
    """At the paper's size (598,728 rows x 768) the features are 1.8 GB in float32: the probe held a float64 copy and
    two full-size temporaries per fit (~3.3x the float64 bytes above the features, measured), now one copy for every
    C, or none where the stage hands over float64 features (`in_place`, as the references stage does). Wide
    features and 4 labels, so the features, not L-BFGS's n x labels terms, are what the peak is made of (the
    paper's shape: 768 wide, 60 labels)."""
    n, h = 100_000, 512
    float64_bytes = n * h * 8
    r = subprocess.run([sys.executable, "-c", _PROBE_MEMORY, str(n), str(h), mode], capture_output=True, text=True,
                       timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert r.returncode == 0, r.stderr
    extra = int(r.stdout.split()[-1])
    # measured: 1.31x with a copy, 3.27x before the fix; the margin covers the allocator's own
    assert extra < (copies + 0.7) * float64_bytes, f"probe tuning peaked {extra / float64_bytes:.2f}x the float64 feature bytes"


# ------------------------------------------------------------------------------ the run's cost, before it starts


def test_the_paper_profile_s_projected_cost_is_the_step_budgets_times_the_model_shape():
    from mkd.models.sources import base_shape
    from mkd.pipeline.compute import CPU_FLOPS_PER_CORE, TOKENS_PER_ROW, cpu_hours, forward_flops, training_flops

    paper = validate(read_yaml(REPO / "params.yaml"))
    f = training_flops(paper)
    assert (f["layers"], f["hidden"], f["shape_known"], f["cells"]) == (12, 768, True, 36)
    assert f["teacher"] == pytest.approx(121_628 * 3 * forward_flops(128, TOKENS_PER_ROW, 12, 768))
    assert f["students"] == pytest.approx(36 * 56_133 * 3 * forward_flops(32, TOKENS_PER_ROW, 6, 768))
    # the usual 6 x N x tokens estimate, N = 12 h^2 a layer, is within a few % of the counted matmuls
    assert f["teacher"] == pytest.approx(6 * 12 * (12 * 768 ** 2) * 121_628 * 128 * TOKENS_PER_ROW, rel=0.05)
    assert cpu_hours(paper, 16) == pytest.approx(f["total"] / (CPU_FLOPS_PER_CORE * 16) / 3600)
    assert cpu_hours(paper, 16) > 4 * 24            # days on a 16-core node
    cpu = validate(merge(read_yaml(REPO / "params.yaml"), load_profile("cpu")))
    assert cpu_hours(cpu, 2) == pytest.approx(134 / 60, rel=0.05)   # the run it is calibrated on: 134 min on 2 cores
    assert base_shape("hub:someone/unknown-model") == (12, 768, False)
    assert base_shape("standin:2x64") == (2, 64, True)


def test_a_local_base_model_s_shape_is_read_from_its_config(tmp_path):
    from mkd.models.sources import base_shape

    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 64}))
    assert base_shape(f"local:{tmp_path}") == (2, 64, True)


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_params(folder: Path, profile: str | None):
    import shutil

    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    return ["validate"] + (["--profile", profile] if profile else [])


def test_validate_warns_that_the_paper_profile_needs_a_gpu_where_torch_sees_none(in_tmp, monkeypatch, capsys):
    from mkd.pipeline import compute

    monkeypatch.setattr(compute, "gpu_visible", lambda: False)
    args = _write_params(in_tmp, None)
    assert main(args) == 0                       # a warning, not a refusal: the user may mean it
    err = capsys.readouterr().err
    assert "warning: profile paper trains" in err and "no CUDA GPU is visible" in err
    assert "docs/scaling-out.md" in err and "--profile cpu" in err
    monkeypatch.setattr(compute, "gpu_visible", lambda: True)
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_validate_says_nothing_of_gpus_for_the_cpu_profiles_and_never_asks_torch(in_tmp, monkeypatch, capsys, profile):
    from mkd.pipeline import compute

    def asked():
        raise AssertionError("a profile a CPU finishes asked whether a GPU is visible")

    monkeypatch.setattr(compute, "gpu_visible", asked)
    assert main(_write_params(in_tmp, profile)) == 0
    assert "warning" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ the full-size dry run's harness


def test_a_massive_subset_keeps_every_locale_parallel_and_every_intent(massive_dir, tmp_path):
    """benchmark.paper_scale's smaller size: the first share of a stratified order of en-US's ids, in every locale."""
    from benchmark.paper_scale import subset_massive
    from mkd.data.reader import load_massive

    out = subset_massive(massive_dir, tmp_path / "massive", 0.02)
    data = load_massive(out, ["en-US", "km-KH", "ca-ES"])
    sizes = {split: len(rows) for split, rows in data["en-US"].items()}
    assert sizes == {"train": 231, "dev": 41, "test": 60}       # ceil(2 % of 11,514 / 2,033 / 2,974)
    for split in sizes:
        ids = [sorted(ex.id for ex in data[loc][split]) for loc in data]
        assert ids[0] == ids[1] == ids[2]
    assert len({ex.intent for ex in data["en-US"]["train"]}) == 60
    assert len(list(out.glob("*.jsonl.gz"))) == 52


def _run_log(fraction, wall, rss_gib, cells=2):
    stage = lambda w, r: {"wall_s": w, "peak_rss": r * 2 ** 30, "written": 0, "cpu_s": w, "checkpoints_peak": 0,
                          "disk": {k: 0 for k in ("artifacts", "results", "paper_tables", "dvc_cache", "token_cache",
                                                  "mkd_cache_arrow")}}
    stages = {"validate": stage(5, 0.3), "references": stage(wall, rss_gib)}
    stages.update({f"cell@all-low-random-off-{i}": stage(wall / 2, 1.0) for i in range(cells)})
    row = {"rows": 10, "mean": 12.0, "max": 40, "padded_per_row": 12.5, "batch": 128}
    return {"fraction": fraction, "machine": {"when": "2026-12-07 00:00", "cpu": "test", "cores": 2, "load_before": 0.1},
            "threads": 2, "commit": "0" * 40, "stages": stages, "total_s": 100, "dvc_status_after": "", "noop_repro_s": 3,
            "results_bytes": 2 ** 20, "results_files": {"results/x/cells.csv": 1000},
            "token_lengths": {"teacher": row, "test": row}}


def test_the_scale_report_flags_a_stage_above_8_gib_or_growing_faster_than_its_rows():
    from benchmark.paper_scale import report

    linear = report(_run_log(0.25, 100, 2.0), _run_log(1, 400, 6.0))
    assert "**met**" in linear and "| references | 100.0 | 400.0 | 4.00 | 2.00 | 6.00 | 3.35 |" in linear
    assert "| cell (x2: max; time: sum) | 100.0 | 400.0 | 4.00 | 1.00 | 1.00 |" in linear
    faster = report(_run_log(0.25, 100, 2.0), _run_log(1, 1_000, 9.0))
    assert "**not met**" in faster
    assert "references: peak RSS 9.00 GiB > 8 GiB" in faster and "references: time grows 10.00x for 4x the rows" in faster
    # a stage re-measured after a fix is judged by its new peak, shown beside the old one
    fixed = _run_log(1, 400, 9.0)
    fixed["reruns"] = {"references": {**fixed["stages"]["references"], "peak_rss": 5 * 2 ** 30, "commit": "f" * 40}}
    text = report(_run_log(0.25, 100, 2.0), fixed)
    assert "**met**" in text and "| references, after the fix (fffffff) | | 400.0 | | | 5.00 |" in text
    # at the paper's width the references stage holds the probe's features too: judged with them (on a GPU node)
    fixed["probe_768"] = {"imports": 2 ** 30, "host_part": 3 * 2 ** 30, "peak": 9 * 2 ** 30, "train_float64_bytes": 0}
    wide = report(_run_log(0.25, 100, 2.0), fixed)
    assert "**7.0 GiB** where the probe fits on a GPU" in wide and "**13.0 GiB** on a machine without one" in wide
    assert "**met**" in wide
    fixed["probe_768"]["host_part"] = 5 * 2 ** 30
    assert "references at width 768 with a GPU: 9.0 GiB > 8 GiB" in report(_run_log(0.25, 100, 2.0), fixed)


# ------------------------------------------------------------------------------ the GPU projection's arithmetic


@pytest.mark.parametrize("layers,width", [(2, 7), (3, 19)])
def test_the_projection_s_flop_formula_is_what_torch_counts_for_a_roberta_of_that_shape(layers, width):
    """compute.forward_flops against FlopCounterMode on a small RobertaForSequenceClassification (every matmul: projections,
    MLP, attention's scores and mix, the head); a training step counts 3 forwards; parameter_count is transformers'."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from benchmark.gpu_projection import Shape, parameter_count
    from mkd.pipeline.compute import forward_flops

    shape = Shape(layers=layers, hidden=32, intermediate=96, heads=4, max_positions=40)
    config = RobertaConfig(vocab_size=101, hidden_size=32, intermediate_size=96, num_hidden_layers=layers,
                           num_attention_heads=4, max_position_embeddings=40, type_vocab_size=1, num_labels=5,
                           attn_implementation="eager")   # type_vocab_size 1: xlm-roberta-base's
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    ids = torch.randint(3, 101, (6, width))
    with FlopCounterMode(display=False) as counted:
        with torch.no_grad():
            model(input_ids=ids)
    assert counted.get_total_flops() == forward_flops(6, width, layers, 32, 96, labels=5)
    with FlopCounterMode(display=False) as counted:
        model(input_ids=ids, labels=torch.zeros(6, dtype=torch.long)).loss.backward()
    assert counted.get_total_flops() == 3 * forward_flops(6, width, layers, 32, 96, labels=5)
    assert parameter_count(101, layers, shape, labels=5) == sum(p.numel() for p in model.parameters())


def test_the_projection_counts_the_paper_profile_s_steps_evaluations_and_cells():
    """The paper profile's counts, from params.yaml, and hours that follow them: every cell the same, so 8 GPUs
    take the upstream stages plus ceil(36 / 8) = 5 cells' time."""
    from benchmark.gpu_projection import Rates, evaluations, projection

    params = validate(read_yaml(REPO / "params.yaml"))
    row = lambda rows, w: {"rows": rows, "mean": w - 1, "max": 60, "padded_per_row": w, "batch": 32}
    lengths = {"teacher": row(598_728, 14.0), "student_high": row(598_728, 14.0), "student_low": row(59_852, 14.0),
               "selection": row(105_716, 13.0), "test": row(154_648, 13.0)}
    assert evaluations(121_628, 4678) == 26 and evaluations(56_133, 1871) == 31
    p = projection(params, lengths, vocab=200_000, rates=Rates(tflops=50, teacher_step_ms=0, student_step_ms=0,
                                                                   teacher_eval_rows_per_s=1e12, student_eval_rows_per_s=1e12))
    w = p["work"]
    assert w["cells"] == 36 and w["teacher"]["steps"] == 121_628 and w["cell"]["steps"] == 56_133
    assert w["teacher"]["eval_rows"] == 26 * 105_716 + 260_364
    assert w["cell"]["eval_rows"] == 32 * 105_716 + 260_364           # the initial evaluation, 31 more, the last predictions
    assert w["logits"]["eval_rows"] == 3 * (598_728 + 59_852)
    # FLOP-bound (no floors): a cell's hours are its FLOPs over the rate
    cell_flops = w["cell"]["steps"] * w["cell"]["step_flops"] + w["cell"]["eval_flops"]
    assert p["hours"]["cell"] == pytest.approx(cell_flops / 50e12 / 3600)
    assert p["grid"][8]["wall_h"] == pytest.approx(p["upstream_h"] + 5 * p["hours"]["cell"])
    assert p["grid"][1]["gpu_h"] == pytest.approx(p["upstream_h"] + 36 * p["hours"]["cell"])
    # a floor above the FLOP time binds: 56,133 steps at 3 ms
    floored = projection(params, lengths, 200_000, Rates(1e6, 0, 3, 1e12, 1e12))
    assert floored["hours"]["cell"] == pytest.approx(56_133 * 0.003 / 3600, rel=1e-3)


def test_the_measured_step_floor_runs_the_loop_s_own_step_and_counts_its_ops():
    """host_step trains with the loop's parts: the KD objective's step dispatches more ops than cross-entropy's,
    a deeper model more again, and each step and evaluation takes time."""
    from benchmark.gpu_projection import host_step
    from mkd.training.losses import objective_for

    params = validate(read_yaml(REPO / "params.yaml"))
    ce = host_step(params["student"], {"ce": 1.0}, layers=1, width=5, steps=2)
    kd = host_step(params["student"], objective_for(params["student"], "on"), layers=1, width=5, steps=2)
    deeper = host_step(params["student"], {"ce": 1.0}, layers=2, width=5, steps=2)
    assert ce["ms"] > 0 and ce["eval_rows_per_s"] > 0 and ce["width"] == 5
    assert ce["ops"] < kd["ops"] and ce["ops"] < deeper["ops"]


def test_the_disk_projection_adds_the_dry_run_s_measured_files_to_the_paper_models_own():
    """What does not depend on the model comes from the dry run's stage records; the model files are 4 bytes a
    parameter, checkpoints 16 (weights, AdamW's two moments, the best weights), the larger of the teacher's alone and
    one per worker; DVC's cache a copy of every output (not of the token cache, which is no output)."""
    from benchmark.gpu_projection import disk, parameter_count

    run = _run_log(1, 400, 6.0, cells=3)
    run["stages"]["prepare"] = {**run["stages"]["validate"], "disk": {"artifacts": 100, "results": 0}}
    run["stages"]["logits"] = {**run["stages"]["validate"], "disk": {"artifacts": 1000, "results": 0}}
    for name, st in run["stages"].items():
        if name.startswith("cell"):
            st["disk"] = {**st["disk"], "results": 10}
    run["totals"] = {"token_cache": 7}
    d = disk(run, vocab=100_000, student_layers=6, workers=8)
    assert d["measured"] == {"data and draws": 100, "teacher logits": 1000, "predictions (all cells)": 30, "token cache": 7}
    teacher, student = parameter_count(100_000, 12), parameter_count(100_000, 6)
    assert d["models"]["teacher"] == 4 * teacher
    assert d["checkpoints_peak"] == max(16 * teacher, 8 * 16 * student) == 8 * 16 * student
    assert d["dvc_cache"] == 1130 + sum(d["models"].values())
    assert disk(run, 100_000, 6, workers=1)["checkpoints_peak"] == 16 * teacher
