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
    assert torch.allclose(LOSSES["logit_mse"](x), ((x.student_logits - x.teacher_logits) ** 2).mean())


def test_logit_kl_is_hinton_kl_scaled_by_t_squared():
    x = _inputs(temperature=3.0)
    p_t = F.softmax(x.teacher_logits / 3, -1)
    log_p_s = F.log_softmax(x.student_logits / 3, -1)
    by_hand = (p_t * (p_t.log() - log_p_s)).sum(-1).mean() * 9
    assert torch.allclose(LOSSES["logit_kl"](x), by_hand, atol=1e-6)
    same = LossInputs(student_logits=x.teacher_logits, labels=x.labels, teacher_logits=x.teacher_logits, temperature=3.0)
    assert LOSSES["logit_kl"](same).abs() < 1e-6


def test_hidden_mse_ignores_padding():
    s = [torch.zeros(1, 3, 2)]
    t = [torch.tensor([[[1.0, 1.0], [1.0, 1.0], [100.0, 100.0]]])]
    x = LossInputs(student_logits=torch.zeros(1, 2), labels=torch.tensor([0]), student_hidden=s, teacher_hidden=t,
                   attention_mask=torch.tensor([[1, 1, 0]]))
    assert math.isclose(float(LOSSES["hidden_mse"](x)), 1.0)


def test_hidden_cos_is_one_minus_the_cosine_per_token_padding_masked():
    """DistilBERT's cosine loss: aligned states cost 0 whatever their length, opposed 2, orthogonal 1; a padded
    token's states count for nothing; the mean runs over tokens, then mapped layers."""
    def loss(s, t, mask):
        return float(LOSSES["hidden_cos"](LossInputs(student_logits=torch.zeros(1, 2), labels=torch.tensor([0]),
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


def test_adding_a_loss_is_one_registered_function():
    @register_loss("l1_logits_test", teacher_logits=True)
    def l1(x):
        return (x.student_logits - x.teacher_logits).abs().mean()

    try:
        assert validate_objective({"l1_logits_test": 1.0}) == {"l1_logits_test": 1.0}
        total, _ = combined_loss({"l1_logits_test": 1.0}, _inputs())
        assert total > 0
    finally:
        del LOSSES["l1_logits_test"]


@pytest.mark.parametrize("objective, message", [({}, "empty"), ({"logit_mes": 1.0}, "unknown loss"), ({"ce": -1.0}, "non-negative"), ({"ce": 0.0}, "sum to zero")])
def test_bad_objectives(objective, message):
    with pytest.raises(ConfigError, match=message):
        validate_objective(objective)
