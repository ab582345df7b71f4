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
def test_attention_maps_reach_the_losses_layer_matched_on_every_architecture(teachers, arch):
    """The attention losses read student layer i against teacher layer map[i]: zero for a full-depth teacher-init
    student, and not zero for a mapped student whose second layer is the teacher's last."""
    from mkd.training.loop import batch_loss, return_attention_maps

    teacher = _load(teachers[arch])
    full, mapped = _student("teacher", teachers[arch], [0, 1, 2, 3]), _student("teacher", teachers[arch], [0, 3])
    return_attention_maps(full, mapped, teacher)
    ids, mask = _inputs()
    objective = {"attention_mse": 1.0, "attention_kl": 1.0}
    with torch.no_grad():
        _, same = batch_loss(full, ids, mask, torch.zeros(3, dtype=torch.long), objective, teacher_model=teacher,
                             layer_map=[0, 1, 2, 3])
        _, other = batch_loss(mapped, ids, mask, torch.zeros(3, dtype=torch.long), objective, teacher_model=teacher,
                              layer_map=[1, 2])  # wrong on purpose: student layers 0, 1 hold teacher layers 0, 3
    assert same == {"attention_mse": 0.0, "attention_kl": 0.0}
    assert other["attention_mse"] > 0 and other["attention_kl"] > 0


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



# --- width: weight selection ------------------------------------------------------------------------------------
# The indices a narrower student must hold, written out by hand from the rule (whole heads, evenly spaced; within
# a narrower head, evenly spaced positions; feed-forward neurons evenly spaced), for TINY's hidden 32 (2 heads of
# 16) and feed-forward 37. Width 16 keeps head 0 whole; width 24 (2 heads of 12) keeps 12 of each head's 16.
WITHIN_12_OF_16 = [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14]
KEPT = {  # student hidden -> (its heads, hidden indices kept, feed-forward indices kept)
    16: (1, list(range(16)), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34]),     # 18 of 37
    24: (2, WITHIN_12_OF_16 + [16 + p for p in WITHIN_12_OF_16],
         [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26, 27, 29, 30, 31, 33, 34, 35]),  # 28
}


def _narrow(init, folder, hidden, mapping=(0, 3), heads=None):
    from mkd.models.students import student_width

    width = student_width(_load(folder).config, hidden, None, heads)
    return make_student(init, base_dir=folder, teacher_dir=folder, mapping=list(mapping), num_labels=5, seed=1,
                        width=width).eval()


def _expected_slice(tensor, shape, hidden, ffn):
    """The teacher tensor cut by hand: each dimension that narrowed takes the kept indices of its width (fused
    tensors, 2 or 3 blocks of one width, take them in every block)."""
    for d, (n, k) in enumerate(zip(tensor.shape, shape)):
        if n == k:
            continue
        for base_n, kept in ((32, hidden), (37, ffn)):
            blocks = n // base_n
            if n % base_n == 0 and k == blocks * len(kept):
                tensor = tensor.index_select(d, torch.tensor([b * base_n + i for b in range(blocks) for i in kept]))
                break
        else:
            raise AssertionError(f"dimension {d}: {n} -> {k} is no width of the test")
    return tensor


@pytest.mark.parametrize("arch", ARCHS)
def test_a_student_of_the_teachers_width_is_todays_copy_bit_for_bit(teachers, arch):
    """Width given explicitly as the teacher's goes through weight selection and must equal the plain copy."""
    from mkd.models.students import source_width

    plain = _student("teacher", teachers[arch], [0, 3]).state_dict()
    width = source_width(_load(teachers[arch]).config)
    full = make_student("teacher", base_dir=teachers[arch], teacher_dir=teachers[arch], mapping=[0, 3], num_labels=5,
                        seed=1, width=width).state_dict()
    assert plain.keys() == full.keys() and all(torch.equal(plain[k], full[k]) for k in plain)


@pytest.mark.parametrize("hidden", sorted(KEPT))
@pytest.mark.parametrize("arch", ARCHS)
def test_a_narrower_teacher_init_student_holds_exactly_the_selected_slices(teachers, arch, hidden):
    """Every tensor of a narrower teacher-init student is the mapped teacher tensor cut to the kept indices: the
    same hidden indices in the embeddings, every layer, the encoder-level tensors and the head."""
    heads, kept_hidden, kept_ffn = KEPT[hidden]
    if arch == "electra" and hidden == 16:  # the width of its embeddings: HF drops the projection, mkd refuses
        with pytest.raises(ConfigError, match="no place for the source's electra.embeddings_project"):
            _narrow("teacher", teachers[arch], hidden)
        return
    teacher = _load(teachers[arch])
    student = _narrow("teacher", teachers[arch], hidden, heads=heads)
    assert student.config.num_attention_heads == heads and student.config.hidden_size == hidden
    layers = layer_list_name(student)
    t, s = teacher.state_dict(), student.state_dict()
    narrowed = 0
    for key, value in s.items():
        src = key
        if key.startswith(layers + "."):
            index, rest = key[len(layers) + 1:].split(".", 1)
            src = f"{layers}.{[0, 3][int(index)]}.{rest}"
        narrowed += value.shape != t[src].shape
        assert torch.equal(value, _expected_slice(t[src], value.shape, kept_hidden, kept_ffn)), f"{arch}: {key}"
    assert narrowed > 10
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.isfinite(student(input_ids=ids, attention_mask=mask).logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_narrower_pretrained_and_random_students_build_and_pretrained_init_selects_the_body(teachers, arch):
    hidden = 24
    heads, kept_hidden, _ = KEPT[hidden]
    teacher = _load(teachers[arch])
    pre = _narrow("pretrained", teachers[arch], hidden, heads=heads)
    rnd = _narrow("random", teachers[arch], hidden, heads=heads)
    word = next(k for k in pre.state_dict() if k.endswith("word_embeddings.weight") or k.endswith("tok_embeddings.weight"))
    emb = teacher.state_dict()[word]
    expected = emb[:, kept_hidden] if emb.shape[1] == 32 else emb   # ELECTRA/RemBERT: a narrower embedding size stays
    assert torch.equal(pre.state_dict()[word], expected)
    assert not torch.equal(rnd.state_dict()[word], expected)
    assert {k: v.shape for k, v in pre.state_dict().items()} == {k: v.shape for k, v in rnd.state_dict().items()}


@pytest.mark.parametrize("given, message", [
    (dict(hidden=48), "between 1 and the teacher's 32"),
    (dict(hidden=20), "not a multiple of the teacher's head size 16"),
    (dict(hidden=24, heads=3), "must divide"),
    (dict(hidden=16, heads=4), "at most the teacher's 2 heads"),
    (dict(hidden=16, heads=2), None),
    (dict(hidden=16, intermediate=40), "between 1 and the teacher's 37"),
])
def test_student_widths_are_checked_against_the_teacher(teachers, given, message):
    from mkd.models.students import student_width

    config = _load(teachers["bert"]).config
    if message is None:
        assert student_width(config, given["hidden"], None, given["heads"]).head_size == 8
        return
    with pytest.raises(ConfigError, match=message):
        student_width(config, given["hidden"], given.get("intermediate"), given.get("heads"))
