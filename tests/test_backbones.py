"""Weight-copy initialization on the encoders users bring: tiny random models built offline from configs (no
download), one per architecture, saved as a teacher folder and initialized through mkd's own make_student."""

from __future__ import annotations

import pytest
import torch

from mkd.core.errors import ConfigError
from mkd.models.students import layer_list_name, make_student

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=64)


def _config(arch: str):
    import transformers as t

    if arch == "bert":
        return t.BertConfig(**TINY)
    if arch == "xlm-roberta":
        return t.XLMRobertaConfig(**TINY, pad_token_id=1)
    if arch == "distilbert":
        return t.DistilBertConfig(vocab_size=99, dim=32, n_layers=4, n_heads=2, hidden_dim=37, max_position_embeddings=64)
    if arch == "deberta-v2":  # mDeBERTa-v3's settings: relative attention, log buckets, normed rel_embeddings
        return t.DebertaV2Config(**TINY, relative_attention=True, position_buckets=16, max_relative_positions=32,
                                 norm_rel_ebd="layer_norm", pos_att_type=["p2c", "c2p"], position_biased_input=False)
    if arch == "electra":  # embeddings smaller than the hidden size: embeddings_project sits outside the layers
        return t.ElectraConfig(**TINY, embedding_size=16)
    if arch == "rembert":
        return t.RemBertConfig(**TINY, input_embedding_size=16, output_embedding_size=16, pad_token_id=0, bos_token_id=2,
                               eos_token_id=3)
    if arch == "modernbert":  # layers 0 and 3 full attention, 1 and 2 a sliding window
        return t.ModernBertConfig(**TINY, global_attn_every_n_layers=3, local_attention=8, pad_token_id=0)
    raise KeyError(arch)


ARCHS = ("bert", "xlm-roberta", "distilbert", "deberta-v2", "electra", "rembert", "modernbert")
# tensors of the encoder outside its layer list, which a copy must carry over (beside the embeddings)
ENCODER_LEVEL = {"deberta-v2": ("deberta.encoder.rel_embeddings.weight", "deberta.encoder.LayerNorm.weight"),
                 "electra": ("electra.embeddings_project.weight",), "rembert": ("rembert.encoder.embedding_hidden_mapping_in.weight",),
                 "modernbert": ("model.final_norm.weight",)}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """arch -> folder of a tiny fine-tuned-shaped teacher (5 labels), seeded."""
    from transformers import AutoModelForSequenceClassification

    out = {}
    for arch in ARCHS:
        config = _config(arch)
        config.num_labels = 5
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
        folder = tmp_path_factory.mktemp(arch)
        model.save_pretrained(folder)
        out[arch] = folder
    return out


def _load(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def _student(init, folder, mapping, seed=1):
    return make_student(init, base_dir=folder, teacher_dir=folder, mapping=mapping, num_labels=5, seed=seed).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ARCHS)
def test_teacher_init_copies_every_tensor_through_the_map(teachers, arch):
    teacher = _load(teachers[arch])
    mapping = [0, 3]
    student = _student("teacher", teachers[arch], mapping)
    layers = layer_list_name(student)
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        src = key
        if key.startswith(layers + "."):
            index, rest = key[len(layers) + 1:].split(".", 1)
            src = f"{layers}.{mapping[int(index)]}.{rest}"
        assert torch.equal(value, t[src]), f"{arch}: {key} is not {src}"
    for key in ENCODER_LEVEL.get(arch, ()):
        assert key in s and torch.equal(s[key], t[key]), key


@pytest.mark.parametrize("arch", ARCHS)
def test_a_full_depth_teacher_init_student_gives_the_teachers_logits(teachers, arch):
    from mkd.training.loop import batch_loss

    teacher = _load(teachers[arch])
    student = _student("teacher", teachers[arch], [0, 1, 2, 3])
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(student(input_ids=ids, attention_mask=mask).logits, teacher(input_ids=ids, attention_mask=mask).logits)
        # the hidden-state loss reads student layer i against teacher layer map[i]: zero for the identity map
        loss, parts = batch_loss(student, ids, mask, torch.zeros(3, dtype=torch.long), {"hidden_mse": 1.0},
                                 teacher_model=teacher, layer_map=[0, 1, 2, 3])
    assert parts["hidden_mse"] == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_a_mapped_students_first_layer_matches_the_teachers(teachers, arch):
    # layer 0 <- teacher layer 0 on the same embeddings: its hidden state is the teacher's, bit for bit, so the
    # hidden-state loss aligns layer outputs (index i + 1 of hidden_states) and not their inputs
    teacher = _load(teachers[arch])
    student = _student("teacher", teachers[arch], [0, 3])
    ids, mask = _inputs()
    with torch.no_grad():
        hs = student(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        ht = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hs) == 3 and torch.equal(hs[1], ht[1])


@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_init_copies_the_body_and_draws_a_new_head(teachers, arch):
    teacher = _load(teachers[arch])
    student = _student("pretrained", teachers[arch], [0, 3])
    prefix = student.base_model_prefix + "."
    t, s = teacher.state_dict(), student.state_dict()
    head = [k for k in s if not k.startswith(prefix)]
    assert head and any(not torch.equal(s[k], t[k]) for k in head if s[k].dim() == 2)
    embeddings = [k for k in s if k.startswith(prefix) and "embeddings" in k and s[k].dim() == 2]
    assert embeddings and all(torch.equal(s[k], t[k]) for k in embeddings)


def test_modernbert_layers_keep_their_attention_type_and_a_map_that_cannot_is_refused(teachers):
    folder = teachers["modernbert"]
    teacher_types = _load(folder).config.layer_types
    student = _student("teacher", folder, [0, 2])
    assert student.config.layer_types == [teacher_types[0], teacher_types[2]] and teacher_types[0] != teacher_types[2]
    # the teacher's layer 0 has no attention norm, its others have one: no other layer can stand first
    with pytest.raises(ConfigError, match=r"student layer 0 and source layer 1 hold different tensors .*attn_norm"):
        _student("teacher", folder, [1, 3])
