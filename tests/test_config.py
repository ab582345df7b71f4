"""Parameters are validated before any work starts; profiles apply through DVC's own -S grammar."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import yaml

from mkd.config import SCHEMA, load_profile, merge, overrides_as_set_params, read_yaml, validate
from mkd.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper():
    return read_yaml(REPO / "params.yaml")


def test_params_yaml_is_the_paper_profile_and_lists_every_key(paper):
    p = validate(paper)
    assert p["profile"] == "paper" and p["base"]["model"] == "hub:xlm-roberta-base"
    assert p["grid"]["inits"] == ["random", "pretrained", "teacher"] and len(p["grid"]["seeds"]) >= 3

    def keys(tree, prefix=""):
        return {f"{prefix}{k}" for k, v in tree.items()} | {x for k, v in tree.items() if isinstance(v, dict) for x in keys(v, f"{prefix}{k}.")}

    assert keys(SCHEMA) <= keys(paper)


@pytest.mark.parametrize("profile", ["cpu", "smoke", "paper-dry"])
def test_profiles_validate_and_name_their_outputs(paper, profile):
    p = validate(merge(paper, load_profile(profile)))
    assert p["profile"] == profile  # outputs land in artifacts/<profile>, results/<profile>: never mixed


def _broken(paper, path, value):
    p = deepcopy(paper)
    node = p
    *parents, last = path.split(".")
    for k in parents:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return p


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("studnet", {}, r"unknown parameter studnet; did you mean 'student'"),
        ("student.layrs", 3, r"unknown parameter student\.layrs; did you mean 'student\.layers'"),
        ("student.layers", "six", r"student\.layers must be int"),
        ("student.layers", True, r"student\.layers must be int"),
        ("student.lr", "fast", r"student\.lr must be int or float"),
        ("grid.seeds", [], r"grid\.seeds is empty"),
        ("grid.seeds", [0, 1, 1], r"grid\.seeds repeats a value"),
        ("grid.extra_seeds", {"inits": ["teacher"], "seeds": [4, 4]}, r"grid\.extra_seeds\.seeds repeats a value"),
        ("grid.extra_seeds", {"inits": ["teacher"], "seeds": [2, 3]}, r"grid\.extra_seeds\.seeds repeats grid\.seeds' 2"),
        ("grid.extra_seeds", {"inits": ["techer"], "seeds": [3]}, r"grid\.extra_seeds\.inits names 'techer', not in grid\.inits"),
        ("grid.extra_seeds", {"inits": ["teacher"], "seeds": []}, r"grid\.extra_seeds\.seeds is empty but the other list is not"),
        ("grid.extra_seeds", {"inits": [], "seeds": [-3]}, r"grid\.extra_seeds\.seeds must be non-negative integers"),
        ("grid.extra_seeds", {"seeds": [3]}, r"missing parameter grid\.extra_seeds\.inits"),
        ("grid.inits", ["teachr"], r"did you mean 'teacher'"),
        ("grid.kd", [False, True], r"quote them"),
        ("student.layers", 13, r"deeper than the teacher"),
        ("student.layer_map", [0, 12, 3, 4, 5, 6], r"outside the teacher's layers"),
        ("student.layer_map", [0, 1, 1, 2, 3, 4], r"repeats a teacher layer"),
        ("data.train_sizes", {"low": 5000, "high": 0.1}, r"low \(5000\) is larger than data\.train_sizes\.high"),
        ("data.train_sizes", {"low": 1.5, "high": 1.0}, r"fraction in \(0, 1\]"),
        ("grid.resources", ["low", "medium"], r"resource 'medium' is not defined"),
        ("grid.language_sets", ["xx-XX"], r"grid\.language_sets"),
        ("teacher.scope", "everywhere", r"teacher\.scope must be one of"),
        ("student.objective.on", {"ce": 0.5, "logit_mes": 0.5}, r"unknown loss 'logit_mes'; did you mean 'logit_mse'"),
        # `kd_loss: ce` once replaced the CE weight; an objective without a KD term would make KD on = KD off
        ("student.objective.on", {"ce": 1.0}, r"student.objective.on has no distillation term, so KD on would train exactly as KD off"),
        ("student.objective.off", {"ce": 0.5, "logit_mse": 0.5}, r"student.objective.off has the distillation term\(s\) logit_mse"),
        ("student.objective.on", {"ce": 0.5, "logit_mse": {"weight": 0.5, "temperature": 4}},
         r"logit_mse has no option 'temperature' \(it takes only a weight\)"),
        ("student.objective.on", {"ce": 0.5, "logit_kl": {"weight": 0.5, "temperature": 0}}, r"temperature must be > 0"),
        # the flat form of before the objective was keyed by KD setting: the new form in the message
        ("student.objective", {"ce": 0.5, "logit_mse": 0.5}, r"one objective per KD setting now: .*off: \{ce: 1\.0\}"),
        ("student.objective", {"on": {"ce": 0.5, "logit_mse": 0.5}}, r"no entry for grid.kd 'off'"),
        ("student.objective", {"off": {"ce": 1.0}, "on": {"ce": 0.5, "logit_mse": 0.5}, "maybe": {"ce": 1.0}},
         r"student.objective.maybe: the KD settings are off and on"),
        ("student.by_init", {"random": {}, "teacher": {}}, r"student.by_init has no entry for pretrained: .*add pretrained: \{\}"),
        ("student.kd_loss", "logit_mse", r"student\.kd_loss is gone: the objective is data"),
        ("student.temperature", 4.0, r"student\.temperature is gone: .*logit_kl: \{weight: 0\.5, temperature"),
        ("data.allow_partial", "yes", r"data\.allow_partial must be bool"),
        # refused by validate, before `prepare`, not at build-base after it
        ("base.model", "xlm-roberta-base", r"base.model 'xlm-roberta-base' is no known form and no existing folder "
                                           r"\(a Hub model\? write hub:xlm-roberta-base\)"),
        ("base.model", "local:/nonexistent/xlmr", r"base.model: folder /nonexistent/xlmr does not exist"),
        ("base.model", "hub:", r"hub: needs a model id"),
        ("student", KeyError, r"missing parameter student"),
        # a narrower student (weight selection): whole numbers, never wider than the teacher
        ("student.hidden_size", 0, r"student\.hidden_size must be a whole number >= 1 or null"),
        ("student.hidden_size", 1024, r"student\.hidden_size 1024 is wider than hub:xlm-roberta-base's 768"),
        ("student.num_attention_heads", True, r"student\.num_attention_heads must be int"),
    ],
)
def test_bad_parameters_are_clear_errors(paper, path, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(_broken(paper, path, value))


def test_a_resource_the_analysis_cannot_compare_is_refused_before_training(paper):
    # It once validated, trained every cell and failed only at `analyze` (the claims know high and low).
    params = _broken(paper, "data.train_sizes", {"low": 100, "mid": 500, "high": 1000})
    params["grid"]["resources"] = ["low", "mid", "high"]
    with pytest.raises(ConfigError, match=r"the analysis compares the resources high and low .*not 'mid'"):
        validate(params)


def test_a_narrower_student_with_a_hidden_or_attention_loss_is_refused(paper):
    # their states have the teacher's width on one side and the student's on the other: refused before any work
    for loss in ("hidden_mse", "hidden_cos", "attention_mse", "attention_kl"):
        params = _broken(paper, "student.hidden_size", 512)
        params["student"]["objective"]["on"] = {"ce": 0.5, loss: 0.5}
        with pytest.raises(ConfigError, match=rf"student\.objective\.on has {loss}, .*hidden_size=512"):
            validate(params)
    params = _broken(paper, "student.hidden_size", 768)  # the teacher's own width: a plain copy, any loss
    params["student"]["objective"]["on"] = {"ce": 0.5, "hidden_mse": 0.5}
    assert validate(params)["student"]["hidden_size"] == 768


def test_profile_override_of_unknown_key_is_an_error(paper):
    with pytest.raises(ConfigError, match=r"student\.max_step; did you mean 'max_steps'"):
        merge(paper, {"student": {"max_step": 3}})


@pytest.mark.parametrize("section", ["teacher", "student"])
def test_an_epoch_count_is_refused_with_the_step_budget_that_replaces_it(paper, section):
    params = deepcopy(paper)
    params[section]["epochs"] = 3
    with pytest.raises(ConfigError, match=rf"{section}\.epochs is gone: .*max_steps .*eval_every .*patience"):
        validate(params)


@pytest.mark.parametrize("c_grid", [[], [0.1, 0], [0.1, -1.0], ["1"], [True]])
def test_a_probe_c_grid_without_positive_numbers_is_refused(paper, c_grid):
    params = deepcopy(paper)
    params["probe"]["c_grid"] = c_grid
    with pytest.raises(ConfigError, match=r"probe\.c_grid must be a non-empty list of positive numbers"):
        validate(params)


@pytest.mark.parametrize("profile", ["cpu", "smoke", "paper-dry"])
def test_set_params_arguments_reproduce_the_profile_through_dvcs_parser(paper, profile, tmp_path):
    """The -S arguments `mkd exp` passes, applied by DVC's own override code, give exactly merge(paper, profile)."""
    from dvc.utils.hydra import apply_overrides

    target = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", target)
    args = overrides_as_set_params(load_profile(profile), paper)
    apply_overrides(target, [a for a in args if a != "-S"])
    assert read_yaml(target) == merge(paper, load_profile(profile))


def _mkd(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mkd.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_rejects_bad_params_before_any_work_and_writes_nothing(paper, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_broken(paper, "student.layers", 20)))
    for command in ("prepare", "train-teachers", "validate"):
        r = _mkd(command, cwd=tmp_path)
        assert r.returncode == 2
        assert "student.layers=20 is deeper than the teacher" in r.stderr
        assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cli_validate_and_grid_on_the_real_params(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    r = _mkd("validate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "36 grid cells" in r.stdout  # 1 language set x 2 resources x 3 inits x 2 KD x 3 seeds
    r = _mkd("grid", "--profile", "cpu", cwd=tmp_path)
    cells = r.stdout.split()
    # 2 language sets x 2 resources x 2 KD x (6 teacher + 6 pretrained + 3 random runs: grid.extra_seeds)
    assert len(cells) == 120 and "cpu8-low-teacher-kdon-s5" in cells and "en-high-random-kdoff-s2" in cells
    assert "en-high-random-kdoff-s3" not in cells and "en-high-pretrained-kdoff-s3" in cells
    text = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    for key, value in (("layer_map", "symmetric"), ("hidden_size", "512")):
        text, n = re.subn(rf"(?m)^(  {key}:) *\S+", rf"\1 {value}", text, count=1)
        assert n == 1, key
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    r = _mkd("grid", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the students every cell builds, on stderr: depth, the map as teacher layers, the width and its kind
    assert "6 layers, layer map symmetric -> [0, 1, 2, 9, 10, 11], hidden_size 512 (weight selection)" in r.stderr



_CELL = ["cell", "--language-set", "all", "--resource", "low", "--init", "teacher", "--kd", "on", "--seed", "0"]


def test_a_multi_process_launch_is_refused_before_any_work(tmp_path):
    """Two processes (torchrun on CPU, as `accelerate launch --multi_gpu` would start on GPUs; on a CPU-only machine
    `accelerate launch --cpu --num_processes 2` starts one) would each train on their share of the batches with a
    schedule counted for all of them, and both write the cell: mkd refuses the launch, naming the way to scale out.

    torchrun ends the other rank (SIGTERM) as soon as one rank exits non-zero, so how many ranks get to print is a
    matter of scheduling: through torchrun only "the launch fails, some rank says why, nothing is written" is
    guaranteed. Each rank's own refusal is checked without a race in the test below."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mkd.cli", *_CELL]
    r = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert r.stderr.count("multi-process launch") >= 1, r.stderr[-2000:]
    assert "one `dvc repro --single-item cell@...` per device" in r.stderr
    assert "Traceback" not in r.stderr.split("multi-process launch")[0]  # refused, not crashed, before the message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_of_a_multi_process_launch_refuses_on_its_own(tmp_path, rank):
    """Each process of a 2-process launch, started with the environment torchrun gives it (no launcher, so no
    other rank can end it first), refuses before any work and writes nothing."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "mkd.cli", *_CELL], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("multi-process launch") == 1, r.stderr[-2000:]
    assert "one `dvc repro --single-item cell@...` per device" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cli_exp_finds_the_venvs_dvc_without_an_activated_venv(tmp_path):
    """`.venv/bin/mkd exp ...` must work without `source .venv/bin/activate`: dvc (and the `mkd` its stages
    call) come from beside the running interpreter, not from whatever PATH holds."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    if shutil.which("dvc", path=bare["PATH"]):
        pytest.skip("a system-wide dvc would hide the bug this test looks for")
    r = subprocess.run([sys.executable, "-m", "mkd.cli", "exp", "--profile", "smoke", "--", "--help"], cwd=tmp_path,
                       env=bare, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: dvc experiments run" in r.stdout


@pytest.mark.parametrize("key, value, message", [
    ("profile", "../../elsewhere", "not a safe folder name"),
    ("profile", "", "not a safe folder name"),
    ("profile", "..", "not a safe folder name"),
    ("threads", -3, "threads must be >= 0"),
    ("cell_threads", -1, "cell_threads must be >= 0 or null"),
    ("cpu_isa", "sse9", "or one of avx2, avx512, got 'sse9'"),
    ("data.max_length", 1, "data.max_length must be >= 8"),
    ("student.lr", float("inf"), "student.lr must be a finite number"),
    ("student.objective.on.logit_mse", float("nan"), "student.objective.on.logit_mse must be a finite number"),
    ("teacher.weight_decay", -0.1, "teacher.weight_decay must be >= 0"),
    ("student.checkpoint_every", -1, "student.checkpoint_every must be >= 0"),
    ("analysis.bootstrap_resamples", 0, "bootstrap_resamples must be >= 100"),
    ("analysis.min_chance_multiple", 0.5, "min_chance_multiple must be a finite number >= 1"),
    ("base.pooling", "max", "base.pooling must be one of cls, mean"),
    ("student.head_lr", 0, "student.head_lr must be a finite number > 0"),
    ("student.min_steps", -1, "student.min_steps must be >= 0"),
    ("student.min_steps", 56134, r"student.min_steps \(56134\) is beyond student.max_steps \(56133\).* set min_steps <= "
                                r"max_steps \(e.g. 28066, half the budget\) or 0"),
    ("teacher.min_steps", 10 ** 6, r"teacher.min_steps \(1000000\) is beyond teacher.max_steps"),
])
def test_values_that_would_fail_late_or_write_outside_the_repo_are_refused_up_front(paper, key, value, message):
    bad = deepcopy(paper)
    node = bad
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=message):
        validate(bad)


def _outside(allowed):
    """A value of the right type that the field's allowed values refuse."""
    if allowed.choices:
        return "fp8"
    if allowed.exclusive_maximum is not None:
        return allowed.exclusive_maximum
    return allowed.exclusive_minimum if allowed.exclusive_minimum is not None else allowed.minimum - 1


def _another_valid(f, current):
    """A valid value other than `current` (the paper's) and other than the field's default."""
    allowed, types = f.metadata["allowed"], f.metadata["types"]
    if types is bool:
        return not current
    if allowed.choices:
        return next(c for c in allowed.choices if c not in (current, f.default))
    if types is int:
        return current + 1
    if allowed.exclusive_maximum is not None:
        return (current + allowed.exclusive_maximum) / 2
    return current * 2 + 0.5


@pytest.mark.parametrize("section", ["teacher", "student"])
def test_a_recipe_field_is_all_a_training_hyperparameter_needs(paper, section):
    """A hyperparameter is declared once, as a field of mkd.training.recipe.Recipe: from that field alone it is in SCHEMA
    (typed), range-checked by validate, and reaches the TrainConfig the pipeline hands `fit`, numbers as floats."""
    from dataclasses import fields

    from mkd.training.recipe import NUMBER, Recipe
    from mkd.training.loop import TrainConfig, train_config

    recipe = fields(Recipe)
    assert issubclass(TrainConfig, Recipe)
    for f in recipe:
        assert SCHEMA[section][f.name] == f.metadata["types"]
        with pytest.raises(ConfigError, match=rf"parameter {section}\.{f.name} must be"):
            validate(_broken(paper, f"{section}.{f.name}", [1]))
        if f.metadata["allowed"] is not None:
            with pytest.raises(ConfigError, match=rf"^{section}\.{f.name} must be "):
                validate(_broken(paper, f"{section}.{f.name}", _outside(f.metadata["allowed"])))

    params = deepcopy(paper)
    changed = {f.name: _another_valid(f, paper[section][f.name]) for f in recipe}
    params[section].update(changed)
    config = train_config(validate(params)[section], {"ce": 1.0}, seed=3)
    for f in recipe:
        value = getattr(config, f.name)
        assert value == changed[f.name] and value != f.default, f.name
        assert type(value) is (float if f.metadata["types"] == NUMBER else type(changed[f.name])), f.name
    # a number written as an int (`lr: 1`) reaches the training code as the float it always was
    assert type(train_config({**paper[section], "lr": 1}, {"ce": 1.0}, seed=3).lr) is float


@pytest.mark.parametrize("by_init, message", [
    ({"randm": {"lr": 1e-3}}, r"student.by_init: unknown initialization 'randm'; did you mean 'random'\?"),
    ({"random": {"max_steps": 10}}, r"student.by_init.random.max_steps cannot differ per init: only lr, head_lr, "
                                    r"weight_decay, warmup_ratio may .*; set student.max_steps instead"),
    ({"random": {"batch_size": 8}}, r"student.by_init.random.batch_size cannot differ per init"),
    ({"random": {"lr": 0}}, r"^student.by_init.random.lr must be a finite number > 0, got 0"),
    ({"random": {"lr": "fast"}}, r"student.by_init.random.lr must be a number, got 'fast'"),
    ({"random": {"lr": True}}, r"student.by_init.random.lr must be a number, got True"),
    ({"random": 1e-3}, r"student.by_init.random must be a mapping of recipe values for random-init students"),
    ({"teacher": {"warmup_ratio": 1.0}}, r"student.by_init.teacher.warmup_ratio must be in \[0, 1\)"),
])
def test_a_per_init_recipe_value_is_checked_like_the_section_it_overrides(paper, by_init, message):
    bad = deepcopy(paper)
    bad["student"]["by_init"] = by_init
    with pytest.raises(ConfigError, match=message):
        validate(bad)


def test_a_per_init_recipe_reaches_that_init_only_and_profiles_can_add_inits(paper):
    """by_init is the one place a per-init rate lives: section_for_init applies it for the cell stage and the
    recipe search alike; a profile may add an init's rates to the base's by_init, and an older params file without
    the key is refused with what to add (each cell declares its init's entry to DVC)."""
    from mkd.training.loop import train_config
    from mkd.training.recipe import section_for_init

    base = merge(paper, {"student": {"by_init": {"random": {"lr": 1e-3}}}})
    p = validate(merge(base, {"student": {"by_init": {"pretrained": {"head_lr": 1e-2}, "random": {"head_lr": 2e-2}}}}))
    s = p["student"]
    assert s["by_init"] == {"random": {"lr": 1e-3, "head_lr": 2e-2}, "pretrained": {"head_lr": 1e-2}, "teacher": {}}
    random, pretrained, teacher = (train_config(section_for_init(s, i), {"ce": 1.0}, seed=0) for i in ("random", "pretrained", "teacher"))
    assert (random.lr, random.head_lr) == (1e-3, 2e-2)
    assert (pretrained.lr, pretrained.head_lr) == (s["lr"], 1e-2)
    assert (teacher.lr, teacher.head_lr) == (s["lr"], s["head_lr"])
    assert random.max_steps == pretrained.max_steps == teacher.max_steps == s["max_steps"]  # one budget
    old = deepcopy(paper)
    del old["student"]["by_init"]
    with pytest.raises(ConfigError, match=r"no entry for random, pretrained, teacher: .*add random: \{\}, pretrained: \{\}"):
        validate(old)
