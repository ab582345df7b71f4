"""The training loop on real MASSIVE rows, the real tokenizer and a student of the real e5-small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mkd.core.errors import TrainingError
from mkd.models.features import encode, length_grouped_batches
from mkd.models.students import make_student
from mkd.training.loop import EncodedSet, TrainConfig, fit

LOCALES = ("en-US", "de-DE", "sw-KE")


@pytest.fixture(scope="module")
def sets(smoke_data_dir, tiny_base_dir):
    from mkd.data import load_prepared
    from mkd.models.sources import load_tokenizer

    data = load_prepared(smoke_data_dir)
    tok = load_tokenizer(tiny_base_dir)

    def es(examples):
        ids = encode(tok, [e.utt for e in examples], 64)
        return EncodedSet(ids, torch.tensor([data.labels.id(e.intent) for e in examples]), [e.locale for e in examples])

    return es(data.train(LOCALES, "high")), es(data.split(LOCALES, "dev")), tok.pad_token_id


def _student(base, seed=0):
    return make_student("pretrained", base_dir=base, teacher_dir=None, mapping=[0, 11], num_labels=60, seed=seed)


# 180 training rows (3 locales x 60) at batch 16: 12 steps an epoch; 2 epochs, evaluated once an epoch
CFG = dict(max_steps=24, eval_every=12, batch_size=16, lr=3e-4, checkpoint_every=3, seed=5)


def test_training_lowers_loss_and_returns_best_dev(sets, tiny_base_dir):
    train, dev, pad = sets
    model = _student(tiny_base_dir)
    stats = fit(model, train, dev, TrainConfig(**{**CFG, "max_steps": 36}), pad_id=pad, name="t")
    losses = [h["train_loss"] for h in stats["history"]]
    assert losses[-1] < losses[0]
    assert stats["best_dev_accuracy"] == max(h["dev_accuracy"] for h in stats["history"])
    assert [h["step"] for h in stats["history"]] == [12, 24, 36] and stats["stopped"] == "budget"
    assert stats["steps"] == 36 and stats["train_examples_seen"] == 3 * len(train) and stats["epochs"] == 3.0
    assert stats["train_examples_per_second"] > 0


def test_a_budget_that_ends_mid_epoch_is_evaluated_at_its_end(sets, tiny_base_dir):
    train, dev, pad = sets
    stats = fit(_student(tiny_base_dir), train, dev, TrainConfig(**{**CFG, "max_steps": 8, "eval_every": 5}),
                pad_id=pad, name="t")
    assert [h["step"] for h in stats["history"]] == [5, 8] and stats["steps"] == 8
    first_epoch = length_grouped_batches([len(x) for x in train.ids], 16, seed=CFG["seed"], epoch=0)
    assert stats["train_examples_seen"] == sum(len(b) for b in first_epoch[:8])
    assert stats["epochs"] == stats["train_examples_seen"] / len(train)


def test_early_stopping_stops_after_patience_evaluations_without_a_new_best(sets, tiny_base_dir):
    # A learning rate too small to change a prediction: dev accuracy is the same at every evaluation, so the
    # first is the best and the run stops `patience` evaluations later, far inside its budget.
    train, dev, pad = sets
    cfg = TrainConfig(**{**CFG, "max_steps": 1000, "eval_every": 2, "patience": 3, "lr": 1e-20, "head_lr": 1e-20,
                         "weight_decay": 0.0})
    stats = fit(_student(tiny_base_dir), train, dev, cfg, pad_id=pad, name="flat")
    assert stats["stopped"] == "patience" and stats["steps"] == 8 and stats["best_step"] == 2
    assert [h["step"] for h in stats["history"]] == [2, 4, 6, 8]


@pytest.mark.parametrize("min_steps, stops_at, stopped", [(13, 14, "patience"), (8, 8, "patience"), (20, 20, "budget")])
def test_no_early_stop_before_min_steps(sets, tiny_base_dir, min_steps, stops_at, stopped):
    # The flat run above (best at step 2, patience 3, stopping at step 8) kept going to min_steps: it stops at the
    # first evaluation from there on (step 14 for min_steps 13); min_steps = the budget trains it all.
    train, dev, pad = sets
    cfg = TrainConfig(**{**CFG, "max_steps": 20 if stopped == "budget" else 1000, "eval_every": 2, "patience": 3,
                         "min_steps": min_steps, "lr": 1e-20, "head_lr": 1e-20, "weight_decay": 0.0})
    stats = fit(_student(tiny_base_dir), train, dev, cfg, pad_id=pad, name="flat")
    assert stats["stopped"] == stopped and stats["steps"] == stops_at and stats["best_step"] == 2
    assert [h["step"] for h in stats["history"]] == list(range(2, stops_at + 1, 2))


def test_an_early_stopped_run_keeps_its_best_on_dev_weights(sets, tiny_base_dir):
    from mkd.training.loop import dev_accuracy

    train, dev, pad = sets
    model = _student(tiny_base_dir)
    cfg = TrainConfig(**{**CFG, "max_steps": 60, "eval_every": 1, "patience": 1, "lr": 1e-3, "head_lr": 1e-2})
    stats = fit(model, train, dev, cfg, pad_id=pad, name="peak")
    accs = [h["dev_accuracy"] for h in stats["history"]]
    assert stats["stopped"] == "patience" and stats["steps"] < 60
    # it stopped at the first evaluation without a new best; the model holds the best evaluation's weights
    assert accs[-1] <= max(accs[:-1]) and all(b > a for a, b in zip(accs[:-2], accs[1:-1]))
    assert stats["best_step"] == stats["steps"] - 1 and stats["best_dev_accuracy"] == accs[-2]
    assert dev_accuracy(model, dev, pad) == stats["best_dev_accuracy"]


@pytest.mark.parametrize("killed_at", [5, 14])  # before the first evaluation (step 12); after it (its best weights on disk only)
def test_same_seed_same_weights_and_resume_after_interruption_equals_uninterrupted(sets, tiny_base_dir, tmp_path, killed_at):
    train, dev, pad = sets
    cfg = TrainConfig(**{**CFG, "patience": 1})  # the early-stopping state travels in the checkpoint too
    a = _student(tiny_base_dir)
    stats_a = fit(a, train, dev, cfg, pad_id=pad, name="a", checkpoint_dir=tmp_path / "a")
    b = _student(tiny_base_dir)
    fit(b, train, dev, cfg, pad_id=pad, name="b")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    # killed mid-epoch (the last checkpoint at step 3 or 12), then restarted from scratch objects
    c = _student(tiny_base_dir)
    out = fit(c, train, dev, cfg, pad_id=pad, name="c", checkpoint_dir=tmp_path / "c", interrupt_at_step=killed_at)
    assert out == {"interrupted_at_step": killed_at}
    assert (tmp_path / "c" / "state.pt").exists()
    c2 = _student(tiny_base_dir, seed=99)  # a fresh process would rebuild the student; the checkpoint overrides it
    stats_c = fit(c2, train, dev, cfg, pad_id=pad, name="c", checkpoint_dir=tmp_path / "c")
    assert stats_c["history"] == stats_a["history"] and stats_c["stopped"] == stats_a["stopped"]
    assert all(torch.equal(v, c2.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("checkpoint_every, state_steps", [
    (10, [10, 20, 24]),              # on its schedule and at the end; not at the evaluations (every 4 steps)
    (0, [4, 8, 12, 16, 20, 24]),     # 0: at each evaluation
])
def test_checkpoints_are_written_on_their_schedule_and_at_the_end_not_at_every_evaluation(
        sets, tiny_base_dir, tmp_path, monkeypatch, checkpoint_every, state_steps):
    from mkd.training import loop

    train, dev, pad = sets
    writes, save = [], loop._save

    def recording_save(obj, path):
        writes.append((Path(path).name, obj["progress"]["step"] if "progress" in obj else None))
        save(obj, path)

    monkeypatch.setattr(loop, "_save", recording_save)
    cfg = TrainConfig(**{**CFG, "eval_every": 4, "checkpoint_every": checkpoint_every})
    stats = fit(_student(tiny_base_dir), train, dev, cfg, pad_id=pad, name="c", checkpoint_dir=tmp_path / "c")
    assert [h["step"] for h in stats["history"]] == [4, 8, 12, 16, 20, 24]
    assert [step for name, step in writes if name == "state.pt"] == state_steps
    # A new best's weights go to disk with the next checkpoint, just before its state: one best.pt write per
    # checkpoint that follows an improvement, none for a checkpoint after evaluations without one.
    accs = [h["dev_accuracy"] for h in stats["history"]]
    improved_at = [h["step"] for i, h in enumerate(stats["history"]) if accs[i] > max([-1.0] + accs[:i])]
    bounds = [0] + state_steps
    expected = []
    for prev, step in zip(bounds, bounds[1:]):
        if any(prev < s <= step for s in improved_at):
            expected.append(("best.pt", None))
        expected.append(("state.pt", step))
    assert writes == expected
    assert ("best.pt", None) in writes


def test_kd_needs_teacher_logits_of_the_right_length(sets, tiny_base_dir):
    train, dev, pad = sets
    with pytest.raises(TrainingError, match="needs teacher logits"):
        fit(_student(tiny_base_dir), train, dev, TrainConfig(objective={"logit_mse": 1.0}), pad_id=pad, name="x")
    with pytest.raises(TrainingError, match="teacher logits for"):
        fit(_student(tiny_base_dir), train, dev, TrainConfig(objective={"logit_mse": 1.0}), pad_id=pad, name="x",
            teacher_logits=torch.zeros(3, 60))


def test_distillation_moves_student_logits_toward_teacher(sets, tiny_base_dir):
    train, dev, pad = sets
    torch.manual_seed(0)
    target = torch.randn(len(train), 60)
    model = _student(tiny_base_dir)
    from mkd.evaluation.predict import predict_logits

    before = torch.nn.functional.mse_loss(predict_logits(model, train.ids, pad), target)
    fit(model, train, dev, TrainConfig(**{**CFG, "objective": {"logit_mse": 1.0}}), pad_id=pad, name="kd", teacher_logits=target)
    after = torch.nn.functional.mse_loss(predict_logits(model, train.ids, pad), target)
    assert after < before


def test_nan_loss_stops_with_a_clear_error_naming_the_run_and_step(sets, tiny_base_dir, tmp_path):
    train, dev, pad = sets
    logits = torch.zeros(len(train), 60)
    logits[len(train) // 2 :] = float("nan")  # a corrupt teacher-logit cache
    with pytest.raises(TrainingError, match=r"cell X: the loss became nan at step \d+ \(epoch 1\)"):
        fit(_student(tiny_base_dir), train, dev, TrainConfig(**{**CFG, "objective": {"logit_mse": 1.0}}), pad_id=pad,
            name="cell X", teacher_logits=logits, checkpoint_dir=tmp_path)
    assert not (tmp_path / "best.pt").exists()


def test_hidden_mse_pulls_student_layers_toward_their_mapped_teacher_layers(sets, tiny_base_dir):
    from transformers import AutoModelForSequenceClassification

    from mkd.models.features import pad_batch

    train, dev, pad = sets
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=60).eval()
    student = make_student("random", base_dir=tiny_base_dir, teacher_dir=None, mapping=[0, 11], num_labels=60, seed=0)
    ids, mask = pad_batch(train.ids[:32], pad)

    def gap():
        with torch.no_grad():
            s = student.eval()(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        return sum(float(((s[i + 1] - t[j + 1]) ** 2).mean()) for i, j in enumerate([0, 11]))

    before = gap()
    fit(student, train, dev, TrainConfig(**{**CFG, "objective": {"hidden_mse": 1.0}}), pad_id=pad, name="hid",
        teacher_model=teacher, layer_map=[0, 11])
    assert gap() < 0.85 * before
