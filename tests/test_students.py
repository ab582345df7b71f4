"""Student initialization by weight copy, on the real multilingual-e5-small."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForSequenceClassification, XLMRobertaConfig, XLMRobertaForSequenceClassification

from mkd.core.errors import ConfigError
from mkd.models.students import copy_weights, layer_map, make_student

# ---------------------------------------------------------------- layer maps (pure data)


def test_spread_map_includes_first_and_last_like_distilbert():
    assert layer_map("spread", 12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's extract.py map
    assert layer_map("spread", 12, 2) == [0, 11]
    assert layer_map("spread", 12, 12) == list(range(12))
    assert layer_map("spread", 12, 1) == [11]


def test_bottom_top_and_explicit_maps():
    assert layer_map("bottom", 12, 3) == [0, 1, 2]
    assert layer_map("top", 12, 3) == [9, 10, 11]
    assert layer_map([0, 5, 11], 12, 3) == [0, 5, 11]


def test_bistil_s_regular_map_and_the_symmetric_layer_dropping_map():
    """alternate_top: BiStil's "regular" strategy (compress_model keeps the layers k mod 2 = 1 of 12 for 6);
    symmetric: bottom and top kept, the middle dropped (Sajjad et al. 2023)."""
    assert layer_map("alternate_top", 12, 6) == [1, 3, 5, 7, 9, 11]
    assert layer_map("alternate_top", 12, 4) == [2, 5, 8, 11]
    assert layer_map("alternate_top", 12, 12) == list(range(12))
    assert layer_map("symmetric", 12, 6) == [0, 1, 2, 9, 10, 11]
    assert layer_map("symmetric", 12, 5) == [0, 1, 2, 10, 11]
    assert layer_map("symmetric", 12, 1) == [0]
    # every named map is a valid map (strictly increasing, inside the teacher) at every depth a student can have
    from mkd.models.students import LAYER_MAPS

    for name in LAYER_MAPS:
        for teacher in (1, 2, 6, 12, 24):
            for student in range(1, teacher + 1):
                mapping = layer_map(name, teacher, student)
                assert len(mapping) == student and mapping == sorted(set(mapping)), (name, teacher, student)
                assert 0 <= mapping[0] and mapping[-1] < teacher, (name, teacher, student)


@pytest.mark.parametrize(
    "strategy, teacher, student, message",
    [
        ([0, 12], 12, 2, "outside the teacher's layers"),
        ([-1, 3], 12, 2, "outside the teacher's layers"),
        ([3, 3], 12, 2, "repeats a teacher layer"),
        ("spread", 12, 13, "deeper than the teacher"),
        ([0, 1, 2], 12, 2, "has 3 entries but student.layers=2"),
        ("middle", 12, 2, "unknown layer map strategy"),
        ([], 12, None, "empty"),
    ],
)
def test_impossible_layer_maps_are_clear_errors(strategy, teacher, student, message):
    with pytest.raises(ConfigError, match=message):
        layer_map(strategy, teacher, student)


# ---------------------------------------------------------------- copying on the real model


@pytest.fixture(scope="module")
def teacher_dir(e5_small_dir, tmp_path_factory):
    """A 'fine-tuned teacher' stand-in: the real e5-small body with a seeded, non-trivial 60-way head."""
    torch.manual_seed(123)
    model = AutoModelForSequenceClassification.from_pretrained(e5_small_dir, num_labels=60)
    out = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(out)
    return out


def test_copied_tensors_equal_the_mapped_source_bit_for_bit(e5_small_dir, teacher_dir):
    mapping = [0, 2, 4, 7, 9, 11]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    student = make_student("teacher", base_dir=e5_small_dir, teacher_dir=teacher_dir, mapping=mapping, num_labels=60, seed=0)
    t, s = teacher.state_dict(), student.state_dict()
    assert student.config.num_hidden_layers == 6
    for i, j in enumerate(mapping):
        for name in ("attention.self.query.weight", "intermediate.dense.weight", "output.LayerNorm.bias"):
            assert torch.equal(s[f"bert.encoder.layer.{i}.{name}"], t[f"bert.encoder.layer.{j}.{name}"])
    for name in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(s[name], t[name])
    # every student tensor came from the teacher (nothing left at its random init)
    for key, value in s.items():
        source_key = re.sub(r"encoder\.layer\.(\d+)\.", lambda m: f"encoder.layer.{mapping[int(m.group(1))]}.", key)
        assert torch.equal(value, t[source_key]), key


def test_pretrained_init_copies_body_but_not_head(e5_small_dir, teacher_dir):
    base = AutoModelForSequenceClassification.from_pretrained(e5_small_dir, num_labels=60)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    s = make_student("pretrained", base_dir=e5_small_dir, teacher_dir=teacher_dir, mapping=[0, 11], num_labels=60, seed=0).state_dict()
    b = base.state_dict()
    assert torch.equal(s["bert.encoder.layer.1.attention.self.key.weight"], b["bert.encoder.layer.11.attention.self.key.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(s["classifier.weight"], teacher.state_dict()["classifier.weight"])


def test_full_depth_teacher_student_predicts_exactly_what_the_teacher_predicts(e5_small_dir, teacher_dir, massive_dir):
    from mkd.data import load_locale
    from mkd.models.sources import load_tokenizer

    rows = load_locale(massive_dir, "de-DE", splits=("test",))["test"][:32]
    tok = load_tokenizer(e5_small_dir)
    batch = tok([r.utt for r in rows], padding=True, return_tensors="pt")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    student = make_student("teacher", base_dir=e5_small_dir, teacher_dir=teacher_dir, mapping=list(range(12)), num_labels=60, seed=7).eval()
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, teacher(**batch).logits)


def test_random_students_are_seeded(e5_small_dir):
    a = make_student("random", base_dir=e5_small_dir, teacher_dir=None, mapping=[0, 1], num_labels=60, seed=1).state_dict()
    b = make_student("random", base_dir=e5_small_dir, teacher_dir=None, mapping=[0, 1], num_labels=60, seed=1).state_dict()
    c = make_student("random", base_dir=e5_small_dir, teacher_dir=None, mapping=[0, 1], num_labels=60, seed=2).state_dict()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])


def test_student_saves_and_loads_as_a_hugging_face_folder(e5_small_dir, teacher_dir, tmp_path):
    student = make_student("teacher", base_dir=e5_small_dir, teacher_dir=teacher_dir, mapping=[0, 11], num_labels=60, seed=0)
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.config.num_hidden_layers == 2
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in student.state_dict().items())


def test_copy_is_architecture_generic_for_xlm_roberta():
    cfg = XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, num_labels=5)
    torch.manual_seed(0)
    teacher = XLMRobertaForSequenceClassification(cfg)
    cfg2 = XLMRobertaConfig(**{**cfg.to_dict(), "num_hidden_layers": 2})
    student = XLMRobertaForSequenceClassification(cfg2)
    copied = copy_weights(student, teacher, [1, 3], copy_head=True)
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["roberta.encoder.layer.0.output.dense.weight"], t["roberta.encoder.layer.1.output.dense.weight"])
    assert torch.equal(s["classifier.out_proj.weight"], t["classifier.out_proj.weight"])
    assert "classifier.dense.weight" in copied


def _tiny(family: str, layers: int, seed: int = 0):
    """A tiny randomly initialized classifier of one architecture family (config only: no download)."""
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    if family == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=layers, n_heads=2,
                                                                    hidden_dim=64, num_labels=5))
    cls, config = {"bert": (BertForSequenceClassification, BertConfig),
                   "xlm-roberta": (XLMRobertaForSequenceClassification, XLMRobertaConfig)}[family]
    return cls(config(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=64, num_labels=5))


@pytest.mark.parametrize("family, layers", [("bert", "bert.encoder.layer"), ("xlm-roberta", "roberta.encoder.layer"),
                                            ("distilbert", "distilbert.transformer.layer")])
def test_layer_map_is_honoured_whatever_the_architecture_names_its_layers(family, layers):
    # DistilBERT's layers are transformer.layer.N: a copy keyed on `encoder.layer` once gave layer i <- layer i
    teacher, student = _tiny(family, 4, seed=0), _tiny(family, 2, seed=1)
    mapping = [1, 3]
    copied = copy_weights(student, teacher, mapping, copy_head=True)
    t, s = teacher.state_dict(), student.state_dict()
    layer_keys = [k for k in copied if k.startswith(layers + ".")]
    assert layer_keys and all(k in copied for k in s)  # every tensor copied, the layers among them
    for key in layer_keys:
        index, rest = key[len(layers) + 1:].split(".", 1)
        assert torch.equal(s[key], t[f"{layers}.{mapping[int(index)]}.{rest}"]), key
        if s[key].dim() == 2:  # random matrices (biases and norms start equal in every layer)
            assert not torch.equal(s[key], t[key]), f"{key} was copied from the same index, not through the map"


def test_a_model_without_one_clear_layer_list_is_refused():
    class NoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = XLMRobertaConfig(num_hidden_layers=2)
            self.body = torch.nn.Linear(4, 4)

    with pytest.raises(ConfigError, match="cannot tell which module list holds its 2 encoder layers"):
        copy_weights(NoLayers(), NoLayers(), [0, 1], copy_head=True)


def test_copy_refuses_mismatched_architectures():
    """A narrower feed-forward width is weight selection (tests/test_backbones.py); a different vocabulary or a
    student wider than its source is no selection of the source's neurons and is refused."""
    cfg = XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, num_labels=5)
    teacher = XLMRobertaForSequenceClassification(cfg)

    def student(**changes):
        return XLMRobertaForSequenceClassification(XLMRobertaConfig(**{**cfg.to_dict(), "num_hidden_layers": 2, **changes}))

    copied = copy_weights(student(intermediate_size=48), teacher, [0, 1], copy_head=False)
    assert "roberta.encoder.layer.1.intermediate.dense.weight" in copied
    with pytest.raises(ConfigError, match="shape mismatch for 'roberta.embeddings.word_embeddings.weight'"):
        copy_weights(student(vocab_size=120), teacher, [0, 1], copy_head=False)
    with pytest.raises(ConfigError, match="wider than its source \\(intermediate 96 > 64\\)"):
        copy_weights(student(intermediate_size=96), teacher, [0, 1], copy_head=False)
