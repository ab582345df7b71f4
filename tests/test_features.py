"""mkd.models.features: the token cache (real XLM-R tokenizer of multilingual-e5-small) and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mkd.data import load_locale
from mkd.core.errors import ConfigError
from mkd.models.features import encode, length_grouped_batches, pad_batch, tokenizer_fingerprint

TOKENIZER_JSON = Path("/work/cache/e5x/semantra_multilingual/assets/multilingual-e5-small/tokenizer.json")


def _load(tokenizer_json: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )


@pytest.fixture(scope="module")
def tokenizer_json(request) -> Path:
    """The XLM-R tokenizer of multilingual-e5-small: the local asset, else the converted model's folder."""
    if TOKENIZER_JSON.is_file():
        return TOKENIZER_JSON
    try:
        path = Path(request.getfixturevalue("e5_small_dir")) / "tokenizer.json"
    except Exception as exc:  # noqa: BLE001 - any failure to build the model means: no tokenizer here
        pytest.skip(f"no multilingual-e5-small tokenizer: {TOKENIZER_JSON} is missing and e5_small_dir failed ({exc})")
    if not path.is_file():
        pytest.skip(f"no multilingual-e5-small tokenizer at {TOKENIZER_JSON} or {path}")
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_json):
    return _load(tokenizer_json)


class Counting:
    """Forwards everything to the tokenizer and counts the tokenizing calls."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.fixture(scope="module")
def en_train(massive_dir):
    return load_locale(massive_dir, "en-US", ("train",))["train"]


@pytest.fixture(scope="module")
def sw_dev(massive_dir):
    return load_locale(massive_dir, "sw-KE", ("dev",))["dev"]


# --------------------------------------------------------------------------------------------- encode

def test_encode_ids(tokenizer, sw_dev, tmp_path):
    texts = [e.utt for e in sw_dev[:200]] + ["neno " * 300]
    ids = encode(tokenizer, texts, max_length=32, cache_dir=tmp_path)
    assert len(ids) == len(texts)
    assert all(s[0] == tokenizer.cls_token_id and s[-1] == tokenizer.sep_token_id for s in ids)
    assert len(ids[-1]) == 32 and max(len(s) for s in ids) == 32  # truncated
    assert len({len(s) for s in ids}) > 5 and tokenizer.pad_token_id not in {t for s in ids for t in s}  # not padded
    assert ids[0] == tokenizer(texts[0])["input_ids"]


def test_cache_hit_does_not_tokenize(tokenizer, tokenizer_json, sw_dev, tmp_path):
    texts = [e.utt for e in sw_dev[:500]]
    counting = Counting(tokenizer)
    first = encode(counting, texts, max_length=64, cache_dir=tmp_path)
    calls = counting.calls
    assert calls >= 1 and len(list(tmp_path.iterdir())) == 1
    second = encode(counting, texts, max_length=64, cache_dir=tmp_path)
    assert counting.calls == calls and second == first
    # a fresh tokenizer object from the same file hits the same cache (the key is its state, not its identity)
    fresh = Counting(_load(tokenizer_json))
    assert tokenizer_fingerprint(fresh) == tokenizer_fingerprint(counting)
    assert encode(fresh, texts, max_length=64, cache_dir=tmp_path) == first and fresh.calls == 0
    # other max_length or other texts: a miss
    encode(counting, texts, max_length=16, cache_dir=tmp_path)
    assert counting.calls == calls + 1
    encode(counting, texts[:-1], max_length=64, cache_dir=tmp_path)
    assert counting.calls == calls + 2
    assert len(list(tmp_path.iterdir())) == 3


def test_corrupt_cache_is_a_miss(tokenizer, sw_dev, tmp_path):
    texts = [e.utt for e in sw_dev[:50]]
    first = encode(tokenizer, texts, cache_dir=tmp_path)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[:40])
    counting = Counting(tokenizer)
    assert encode(counting, texts, cache_dir=tmp_path) == first and counting.calls == 1
    assert encode(counting, texts, cache_dir=tmp_path) == first and counting.calls == 1  # rewritten


def test_default_cache_dir_is_under_mkd_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MKD_CACHE", str(tmp_path))
    encode(tokenizer, ["hello", "world"])
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    assert encode(tokenizer, []) == []
    with pytest.raises(ConfigError):
        encode(tokenizer, ["x"], max_length=0)


# ------------------------------------------------------------------------------------------- batching

def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_batches_cover_every_index_once_and_are_deterministic():
    lengths = [(i * 37) % 50 + 1 for i in range(1013)]
    for shuffle in (True, False):
        for grouped in (True, False):
            batches = length_grouped_batches(lengths, 16, seed=5, epoch=0, shuffle=shuffle, group_by_length=grouped)
            flat = [i for b in batches for i in b]
            assert sorted(flat) == list(range(len(lengths)))
            assert all(1 <= len(b) <= 16 for b in batches) and sum(len(b) < 16 for b in batches) <= (3 if shuffle and grouped else 1)
            assert batches == length_grouped_batches(lengths, 16, seed=5, epoch=0, shuffle=shuffle, group_by_length=grouped)
    a = length_grouped_batches(lengths, 16, seed=5, epoch=0)
    assert a != length_grouped_batches(lengths, 16, seed=5, epoch=1)
    assert a != length_grouped_batches(lengths, 16, seed=6, epoch=0)
    # evaluation order: no shuffling; original order when not grouped
    assert length_grouped_batches(lengths, 16, 5, 0, shuffle=False, group_by_length=False)[0] == list(range(16))
    evaluation = length_grouped_batches(lengths, 16, 5, 0, shuffle=False)
    assert evaluation == length_grouped_batches(lengths, 16, 99, 7, shuffle=False)
    assert length_grouped_batches([], 4, 0, 0) == []
    with pytest.raises(ConfigError):
        length_grouped_batches(lengths, 0, 0, 0)


def test_grouping_cuts_padding_on_real_massive_lengths(en_train):
    lengths = [len(e.utt.split()) + 2 for e in en_train]
    grouped = length_grouped_batches(lengths, 32, seed=0, epoch=0)
    random_ = length_grouped_batches(lengths, 32, seed=0, epoch=0, group_by_length=False)
    assert _padding(grouped, lengths) < 0.3 * _padding(random_, lengths)
    evaluation = length_grouped_batches(lengths, 32, seed=0, epoch=0, shuffle=False)
    assert _padding(evaluation, lengths) <= _padding(grouped, lengths)
    # grouped batches are still shuffled: the batch order is not sorted by length
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10]], pad_id=1)
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    ids, mask = pad_batch([[3, 4]], pad_id=0)
    assert ids.shape == (1, 2) and mask.tolist() == [[1, 1]]


def test_encoded_massive_batches_pad_to_batch_longest(tokenizer, sw_dev, tmp_path):
    ids = encode(tokenizer, [e.utt for e in sw_dev], max_length=128, cache_dir=tmp_path)
    lengths = [len(s) for s in ids]
    for batch in length_grouped_batches(lengths, 64, seed=1, epoch=0)[:10]:
        input_ids, mask = pad_batch([ids[i] for i in batch], tokenizer.pad_token_id)
        assert input_ids.shape == (len(batch), max(lengths[i] for i in batch))
        assert mask.sum(1).tolist() == [lengths[i] for i in batch]
        assert (input_ids[mask == 0] == tokenizer.pad_token_id).all()
