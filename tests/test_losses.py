"""Distillation losses against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from mkd.core.errors import ConfigError
from mkd.training.losses import LOSSES, LossInputs, combined_loss, register_loss, validate_objective


def _inputs(**kw):
    torch.manual_seed(0)
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    return LossInputs(student_logits=s, labels=torch.tensor([0, 1, 2, 3]), teacher_logits=t, **kw)


def test_logit_mse_is_mean_squared_difference():
    x = _inputs()
    assert torch.allclose(LOSSES["logit_mse"].fn(x), ((x.student_logits - x.teacher_logits) ** 2).mean())


def test_logit_kl_is_hinton_kl_scaled_by_t_squared():
    x = _inputs(temperature=3.0)
    p_t = F.softmax(x.teacher_logits / 3, -1)
    log_p_s = F.log_softmax(x.student_logits / 3, -1)
    by_hand = (p_t * (p_t.log() - log_p_s)).sum(-1).mean() * 9
    assert torch.allclose(LOSSES["logit_kl"].fn(x), by_hand, atol=1e-6)
    same = LossInputs(student_logits=x.teacher_logits, labels=x.labels, teacher_logits=x.teacher_logits, temperature=3.0)
    assert LOSSES["logit_kl"].fn(same).abs() < 1e-6


def test_hidden_mse_ignores_padding():
    s = [torch.zeros(1, 3, 2)]
    t = [torch.tensor([[[1.0, 1.0], [1.0, 1.0], [100.0, 100.0]]])]
    x = LossInputs(student_logits=torch.zeros(1, 2), labels=torch.tensor([0]), student_hidden=s, teacher_hidden=t,
                   attention_mask=torch.tensor([[1, 1, 0]]))
    assert math.isclose(float(LOSSES["hidden_mse"].fn(x)), 1.0)


def test_hidden_cos_is_one_minus_the_cosine_per_token_padding_masked():
    """DistilBERT's cosine loss: aligned states cost 0 whatever their length, opposed 2, orthogonal 1; a padded
    token's states count for nothing; the mean runs over tokens, then mapped layers."""
    def loss(s, t, mask):
        return float(LOSSES["hidden_cos"].fn(LossInputs(student_logits=torch.zeros(1, 2), labels=torch.tensor([0]),
                                                     student_hidden=s, teacher_hidden=t,
                                                     attention_mask=torch.tensor([mask]))))

    t = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    assert math.isclose(loss([3 * t], [t], [1, 1, 1]), 0.0, abs_tol=1e-6)
    assert math.isclose(loss([-t], [t], [1, 1, 0]), 2.0, rel_tol=1e-6)
    orthogonal = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [-5.0, 5.0]]])          # token 1 aligned, 0 and 2 orthogonal
    assert math.isclose(loss([orthogonal], [t], [1, 1, 1]), 2 / 3, rel_tol=1e-6)
    assert math.isclose(loss([orthogonal], [t], [1, 1, 0]), 1 / 2, rel_tol=1e-6)
    assert math.isclose(loss([3 * t, -t], [t, t], [1, 1, 1]), 1.0, rel_tol=1e-6)  # the mean over two layers


def test_combined_loss_weights_parts():
    x = _inputs()
    total, parts = combined_loss({"ce": 0.25, "logit_mse": 0.75}, x)
    assert math.isclose(float(total), 0.25 * parts["ce"] + 0.75 * parts["logit_mse"], rel_tol=1e-6)
    assert math.isclose(parts["ce"], float(F.cross_entropy(x.student_logits, x.labels)), rel_tol=1e-6)


def _attention(rows):
    """(1, heads, tokens, tokens) attention probabilities from per-head rows of scores (softmax over keys)."""
    return torch.softmax(torch.tensor(rows, dtype=torch.float32), dim=-1).unsqueeze(0)


def _attention_inputs(student, teacher, mask):
    return LossInputs(student_logits=torch.zeros(1, 2), labels=torch.tensor([0]), student_attentions=student,
                      teacher_attentions=teacher, attention_mask=torch.tensor([mask]))


def test_attention_mse_is_the_mean_squared_difference_over_real_query_key_pairs():
    """TinyBERT's attention loss, by hand: the squared differences of the probabilities where query and key are
    both real tokens, averaged over those pairs, heads and mapped layers; padding counts for nothing."""
    torch.manual_seed(0)
    s, t = _attention(torch.randn(2, 3, 3).tolist()), _attention(torch.randn(2, 3, 3).tolist())
    full = float(LOSSES["attention_mse"].fn(_attention_inputs([s], [t], [1, 1, 1])))
    assert math.isclose(full, float(((s - t) ** 2).mean()), rel_tol=1e-6)
    by_hand = float(((s - t)[..., :2, :2] ** 2).mean())      # token 2 padded: the 2 x 2 real pairs of each head
    assert math.isclose(float(LOSSES["attention_mse"].fn(_attention_inputs([s], [t], [1, 1, 0]))), by_hand, rel_tol=1e-6)
    assert LOSSES["attention_mse"].fn(_attention_inputs([t, s], [t, s], [1, 1, 1])) == 0
    two_layers = float(LOSSES["attention_mse"].fn(_attention_inputs([s, t], [t, t], [1, 1, 1])))
    assert math.isclose(two_layers, full / 2, rel_tol=1e-6)   # the mean over mapped layers


def test_attention_kl_is_minilm_s_kl_on_the_last_layer_over_real_queries():
    """KL(teacher || student) of each head's distribution over keys, last mapped layer only, averaged over heads
    and real queries; a padded key holds probability 0 in both maps (the model masks it) and adds nothing."""
    torch.manual_seed(1)
    big = -1e9  # a masked key's score: probability 0 after the softmax, as the model's own mask gives
    s_rows, t_rows = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    s_rows[..., 2], t_rows[..., 2] = big, big
    s, t = _attention(s_rows.tolist()), _attention(t_rows.tolist())
    kl = (t * (t.clamp_min(1e-30).log() - s.clamp_min(1e-30).log()))[..., :2, :2].sum(-1)   # (1, heads, queries)
    value = float(LOSSES["attention_kl"].fn(_attention_inputs([torch.rand_like(s), s], [t, t], [1, 1, 0])))
    assert math.isclose(value, float(kl[..., :2].mean()), rel_tol=1e-5)   # the first layer's maps are not read
    assert float(LOSSES["attention_kl"].fn(_attention_inputs([t], [t], [1, 1, 0]))) == 0
    assert value > 0


def test_each_loss_is_one_spec_naming_what_it_reads():
    """The registry is the one table: the cell, the loop and validation read what a loss reads from its spec."""
    from mkd.training.losses import READS, parse_objective

    reads = {name: set(spec.reads) for name, spec in LOSSES.items()}
    assert reads["ce"] == set() and reads["logit_mse"] == reads["logit_kl"] == {"teacher_logits"}
    assert reads["hidden_mse"] == reads["hidden_cos"] == {"hidden"}
    assert reads["attention_mse"] == reads["attention_kl"] == {"attentions"}
    assert all(spec.reads <= set(READS) and spec.name == name for name, spec in LOSSES.items())
    assert LOSSES["logit_kl"].options == {"temperature": 2.0}
    assert parse_objective({"ce": 0.5, "attention_kl": 0.5}).reads == {"attentions"}
    assert parse_objective({"ce": 1.0}).reads == frozenset()


def test_adding_a_loss_is_one_registered_function_and_a_name_registered_twice_is_refused():
    @register_loss("l1_logits_test", reads=["teacher_logits"])
    def l1(x):
        return (x.student_logits - x.teacher_logits).abs().mean()

    try:
        assert validate_objective({"l1_logits_test": 1.0}) == {"l1_logits_test": 1.0}
        total, _ = combined_loss({"l1_logits_test": 1.0}, _inputs())
        assert total > 0
        with pytest.raises(ConfigError, match="'l1_logits_test' is registered twice"):
            register_loss("l1_logits_test")(lambda x: x.student_logits.sum())
        with pytest.raises(ConfigError, match="registered twice"):
            register_loss("ce")(lambda x: x.student_logits.sum())
        assert LOSSES["l1_logits_test"].fn is l1 and LOSSES["ce"].fn.__name__ == "cross_entropy"
    finally:
        del LOSSES["l1_logits_test"]
    with pytest.raises(ConfigError, match="a loss may read"):
        register_loss("bad_reads_test", reads=["teacher_hiden"])


@pytest.mark.parametrize("objective, message", [({}, "empty"), ({"logit_mes": 1.0}, "unknown loss"), ({"ce": -1.0}, "non-negative"), ({"ce": 0.0}, "sum to zero")])
def test_bad_objectives(objective, message):
    with pytest.raises(ConfigError, match=message):
        validate_objective(objective)
