"""The recipe's parts: pooling, the head's own learning rate, frozen copied embeddings, the frozen probe."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, XLMRobertaConfig

from mkd.models import heads
from mkd.core.errors import ConfigError
from mkd.models.probe import embed, fit_probe
from mkd.models.students import make_student
from mkd.training.loop import EncodedSet, TrainConfig, configure_optimizer, dev_accuracy, fit


def _tiny(config_cls, pooling):
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     num_labels=5, max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    heads.set_pooling(cfg, pooling)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


IDS = torch.tensor([[0, 5, 6, 7, 2, 1, 1], [0, 8, 9, 2, 1, 1, 1]])
MASK = (IDS != 1).long()


@pytest.mark.parametrize("config_cls", [BertConfig, XLMRobertaConfig])
def test_cls_pooling_is_the_hugging_face_head(config_cls):
    model = _tiny(config_cls, "cls")
    assert torch.equal(heads.forward(model, IDS, MASK).logits, model(input_ids=IDS, attention_mask=MASK).logits)


@pytest.mark.parametrize("config_cls", [BertConfig, XLMRobertaConfig])
def test_mean_pooling_feeds_the_masked_mean_to_the_models_own_head(config_cls):
    model = _tiny(config_cls, "mean")
    hidden = model.base_model(input_ids=IDS, attention_mask=MASK).last_hidden_state
    pooled = torch.stack([hidden[i, MASK[i].bool()].mean(0) for i in range(len(IDS))])
    if config_cls is BertConfig:
        expected = model.classifier(torch.tanh(model.base_model.pooler.dense(pooled)))
    else:
        head = model.classifier
        expected = head.out_proj(torch.tanh(head.dense(pooled)))
    assert torch.allclose(heads.forward(model, IDS, MASK).logits, expected, atol=1e-6)
    # padding does not change a sentence's logits under mean pooling
    longer = torch.cat([IDS, torch.ones(2, 3, dtype=torch.long)], 1)
    assert torch.allclose(heads.forward(model, longer, (longer != 1).long()).logits, expected, atol=1e-5)


def test_pooling_travels_in_the_config_and_unknown_pooling_is_refused(tmp_path):
    model = _tiny(BertConfig, "mean")
    model.save_pretrained(tmp_path)
    assert heads.pooling_of(AutoModelForSequenceClassification.from_pretrained(tmp_path)) == "mean"
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        heads.set_pooling(model.config, "max")


def test_optimizer_gives_the_head_its_own_rate_and_freezes_only_word_embeddings():
    model = _tiny(BertConfig, "mean")
    cfg = TrainConfig(lr=1e-4, head_lr=3e-3, weight_decay=0.01, freeze_word_embeddings=True)
    opt = configure_optimizer(model, cfg, "cpu")
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert not names["bert.embeddings.word_embeddings.weight"].requires_grad
    assert id(names["bert.embeddings.word_embeddings.weight"]) not in by_param
    assert by_param[id(names["bert.embeddings.position_embeddings.weight"])]["lr"] == 1e-4
    assert by_param[id(names["bert.encoder.layer.0.attention.self.query.weight"])]["lr"] == 1e-4
    for head in ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight"):
        assert by_param[id(names[head])]["lr"] == 3e-3, head
    assert by_param[id(names["classifier.bias"])]["weight_decay"] == 0.0
    assert by_param[id(names["classifier.weight"])]["weight_decay"] == 0.01
    assert len(by_param) == sum(p.requires_grad for p in model.parameters())
    plain = configure_optimizer(_tiny(BertConfig, "cls"), TrainConfig(lr=1e-4), "cpu")
    assert {g["lr"] for g in plain.param_groups} == {1e-4}  # head_lr None = lr


def test_fit_leaves_frozen_word_embeddings_untouched_and_learns(smoke_data_dir, tiny_base_dir):
    from mkd.data import load_prepared
    from mkd.models.features import encode
    from mkd.models.sources import load_tokenizer

    data = load_prepared(smoke_data_dir)
    tok = load_tokenizer(tiny_base_dir)
    locales = ("en-US", "de-DE", "sw-KE")

    def es(examples):
        return EncodedSet(encode(tok, [e.utt for e in examples], 64),
                          torch.tensor([data.labels.id(e.intent) for e in examples]), [e.locale for e in examples])

    train, dev = es(data.train(locales, "high")), es(data.split(locales, "dev"))
    student = make_student("pretrained", base_dir=tiny_base_dir, teacher_dir=None, mapping=[0, 11], num_labels=60, seed=0)
    heads.set_pooling(student.config, "mean")
    before = student.bert.embeddings.word_embeddings.weight.detach().clone()
    start = dev_accuracy(student, dev, tok.pad_token_id)
    cfg = TrainConfig(max_steps=36, eval_every=12, batch_size=16, lr=3e-4, head_lr=3e-3, freeze_word_embeddings=True, checkpoint_every=0)
    stats = fit(student, train, dev, cfg, pad_id=tok.pad_token_id, name="recipe")
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, before)
    # 3 locales x 60 rows, 3 epochs (36 steps of 16), 2 layers: it learns (the loss falls, dev rises) with the embeddings fixed
    losses = [h["train_loss"] for h in stats["history"]]
    assert losses[-1] < losses[0] - 0.1 and stats["best_dev_accuracy"] > 2 * start


def test_probe_minimizes_the_stated_objective_and_separates_separable_data():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=gen) * 3
    y = torch.arange(200) % 4
    x = centers[y] + torch.randn(200, 8, generator=gen)
    probe = fit_probe(x, y, 4, c=1.0, max_iter=200)
    assert (probe.predict(x) == y).float().mean() > 0.95
    # the optimum of C * sum(CE) + ||W||^2 / 2: its gradient vanishes there
    xs = ((x - probe.mean) / probe.scale).double()
    w = probe.weight.double().requires_grad_(True)
    b = probe.bias.double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(xs @ w.T + b, y, reduction="sum") + (w ** 2).sum() / 2
    loss.backward()
    assert w.grad.abs().max() < 1e-3 * len(y) and b.grad.abs().max() < 1e-3 * len(y)


def test_probe_embeddings_are_the_masked_mean_of_a_frozen_encoder(tiny_base_dir):
    from transformers import AutoModel

    body = AutoModel.from_pretrained(tiny_base_dir)
    seqs = [[0, 10, 11, 2], [0, 12, 2]]
    got = embed(body, seqs, pad_id=1)
    for i, s in enumerate(seqs):
        want = body(input_ids=torch.tensor([s])).last_hidden_state[0].mean(0)
        assert torch.allclose(got[i], want, atol=1e-5)
