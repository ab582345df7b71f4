"""mkd.models.sources: base-model sources, parameter counts and vocabulary trimming on real MASSIVE text."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from mkd.core.errors import MkdError
from mkd.models.sources import build_base_model, count_parameters, load_tokenizer
from mkd.models.vocab_trim import trim_vocabulary

LOCALES = ("en-US", "de-DE", "sw-KE")
PER_LOCALE = 1200


def _read_massive(massive_dir: Path, locale: str) -> list[dict]:
    path = massive_dir / f"{locale}.jsonl.gz"
    opener = gzip.open if path.exists() else open
    path = path if path.exists() else massive_dir / f"{locale}.jsonl"
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def corpus(massive_dir):
    """Trimming texts: the first 1,200 train utterances of en-US, de-DE, sw-KE; held-out: their test split."""
    train, test = {}, {}
    for loc in LOCALES:
        rows = _read_massive(massive_dir, loc)
        train[loc] = [r["utt"] for r in rows if r["partition"] == "train"][:PER_LOCALE]
        test[loc] = [r["utt"] for r in rows if r["partition"] == "test"]
    return {"train": train, "test": test, "texts": [t for loc in LOCALES for t in train[loc]]}


@pytest.fixture(scope="module")
def trimmed(e5_small_dir, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trim") / "e5-trimmed"
    t0 = time.perf_counter()
    stats = trim_vocabulary(e5_small_dir, corpus["texts"], out)
    print(f"\ntrim of {len(corpus['texts'])} texts: {stats} in {time.perf_counter() - t0:.1f}s")
    kept = json.loads((out / "trim_kept_ids.json").read_text())
    old_to_new = {old: new for new, old in enumerate(kept)}
    return {"dir": out, "stats": stats, "kept": kept, "old_to_new": old_to_new}


@pytest.fixture(scope="module")
def tokenizers_pair(e5_small_dir, trimmed):
    return load_tokenizer(e5_small_dir), load_tokenizer(trimmed["dir"])


def _covered_heldout(corpus, old_tok, old_to_new, n_per_locale=8):
    """Held-out (test-split) utterances whose every piece is in the trimmed vocabulary."""
    out = []
    for loc in LOCALES:
        picked = 0
        for text in corpus["test"][loc]:
            if text in corpus["texts"]:
                continue
            if all(i in old_to_new for i in old_tok(text)["input_ids"]):
                out.append(text)
                picked += 1
                if picked == n_per_locale:
                    break
        assert picked == n_per_locale, f"too few covered held-out utterances in {loc}"
    return out


# ------------------------------------------------------------------------------------- counts
@pytest.mark.slow
def test_count_parameters_of_e5(e5_small_dir):
    from transformers import AutoModel

    counts = count_parameters(e5_small_dir)
    assert counts["embedding"] == 250002 * 384
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    # non-embedding: positions 512x384 + types 2x384 + LN + 12 layers + pooler
    layer = 4 * (384 * 384 + 384) + 2 * 384 + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 384
    assert counts["non_embedding"] == 512 * 384 + 2 * 384 + 2 * 384 + 12 * layer + 384 * 384 + 384
    assert 117_000_000 < counts["total"] < 118_000_000                   # the README's 117.6M
    assert count_parameters(AutoModel.from_pretrained(e5_small_dir)) == counts


# ----------------------------------------------------------------------------------- trimming
@pytest.mark.slow
def test_trim_stats_are_right(e5_small_dir, trimmed):
    stats = trimmed["stats"]
    assert set(stats) == {"vocab_before", "vocab_after", "params_before", "params_after", "kept_fraction"}
    assert stats["vocab_before"] == 250002
    assert 1000 < stats["vocab_after"] < stats["vocab_before"]
    assert stats["vocab_after"] == len(trimmed["kept"])
    assert stats["kept_fraction"] == pytest.approx(stats["vocab_after"] / stats["vocab_before"])
    base = count_parameters(e5_small_dir)
    assert stats["params_before"] == base["total"]
    assert stats["params_before"] - stats["params_after"] == (stats["vocab_before"] - stats["vocab_after"]) * 384
    after = count_parameters(trimmed["dir"])
    assert after["total"] == stats["params_after"] and after["non_embedding"] == base["non_embedding"]
    assert json.loads((trimmed["dir"] / "trim_stats.json").read_text()) == stats
    assert trimmed["kept"] == sorted(trimmed["kept"]) and trimmed["kept"][:4] == [0, 1, 2, 3]


@pytest.mark.slow
def test_trimmed_tokenizer_is_an_exact_remap(corpus, trimmed, tokenizers_pair):
    old_tok, new_tok = tokenizers_pair
    old_to_new = trimmed["old_to_new"]
    old_ids = old_tok(corpus["texts"])["input_ids"]
    new_ids = new_tok(corpus["texts"])["input_ids"]
    mismatches = [t for t, o, n in zip(corpus["texts"], old_ids, new_ids) if [old_to_new[i] for i in o] != n]
    assert not mismatches, mismatches[:3]
    n = trimmed["stats"]["vocab_after"]
    assert len(new_tok) == n
    assert (new_tok.bos_token_id, new_tok.pad_token_id, new_tok.eos_token_id, new_tok.unk_token_id) == (0, 1, 2, 3)
    assert new_tok.mask_token_id == n - 1 == old_to_new[250001]
    assert new_tok.convert_ids_to_tokens(new_ids[0]) == old_tok.convert_ids_to_tokens(old_ids[0])
    assert new_tok.decode(new_ids[5], skip_special_tokens=True) == old_tok.decode(old_ids[5], skip_special_tokens=True)
    assert not (trimmed["dir"] / "sentencepiece.bpe.model").exists()   # no stale full vocabulary


@pytest.mark.slow
def test_unseen_text_keeps_common_words(corpus, trimmed, tokenizers_pair):
    """Held-out utterances: words seen in the trimming texts encode as before (no <unk>); overall few <unk>."""
    old_tok, new_tok = tokenizers_pair
    old_to_new = trimmed["old_to_new"]
    for loc in LOCALES:
        freq = Counter(w for t in corpus["train"][loc] for w in t.split())
        common = {w for w, c in freq.items() if c >= 3}
        words = sorted({w for t in corpus["test"][loc] for w in t.split() if w in common})
        assert len(words) > 100
        old = old_tok(words, add_special_tokens=False)["input_ids"]
        new = new_tok(words, add_special_tokens=False)["input_ids"]
        assert all(new_tok.unk_token_id not in ids for ids in new)
        assert all([old_to_new[i] for i in o] == n for o, n in zip(old, new))
        test = corpus["test"][loc][:500]
        ids = [i for seq in new_tok(test)["input_ids"] for i in seq]
        unk_rate = ids.count(new_tok.unk_token_id) / len(ids)
        print(f"{loc}: {len(words)} common held-out words exact; held-out <unk> rate {unk_rate:.3%}")
        assert unk_rate < 0.05


def _hidden(model_dir, tok, texts):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state, batch


@pytest.mark.slow
def test_trimmed_model_computes_the_same(e5_small_dir, corpus, trimmed, tokenizers_pair):
    from transformers import AutoModelForSequenceClassification

    old_tok, new_tok = tokenizers_pair
    seen = [corpus["train"][loc][i] for loc in LOCALES for i in (0, 7, 500, 1199)]
    texts = seen + _covered_heldout(corpus, old_tok, trimmed["old_to_new"])
    h_old, b_old = _hidden(e5_small_dir, old_tok, texts)
    h_new, b_new = _hidden(trimmed["dir"], new_tok, texts)
    assert torch.equal(b_old["attention_mask"], b_new["attention_mask"])
    assert not torch.equal(b_old["input_ids"], b_new["input_ids"])          # really remapped ids
    torch.testing.assert_close(h_new, h_old, rtol=0, atol=1e-5)

    torch.manual_seed(0)
    clf_old = AutoModelForSequenceClassification.from_pretrained(e5_small_dir, num_labels=60).eval()
    torch.manual_seed(1)
    clf_new = AutoModelForSequenceClassification.from_pretrained(trimmed["dir"], num_labels=60).eval()
    clf_new.classifier.load_state_dict(clf_old.classifier.state_dict())
    with torch.no_grad():
        lo = clf_old(**b_old).logits
        ln = clf_new(**b_new).logits
    assert lo.shape == (len(texts), 60)
    torch.testing.assert_close(ln, lo, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_trimmed_folder_is_an_ordinary_hf_folder(trimmed, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(trimmed["dir"])
    n = trimmed["stats"]["vocab_after"]
    assert config.vocab_size == n and config.pad_token_id == 1
    model = AutoModel.from_pretrained(trimmed["dir"])
    assert model.get_input_embeddings().weight.shape == (n, 384)
    assert model.get_input_embeddings().padding_idx == 1
    tok = AutoTokenizer.from_pretrained(trimmed["dir"])
    model.save_pretrained(tmp_path / "again")
    tok.save_pretrained(tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again("Weck mich um neun Uhr")["input_ids"] == tok("Weck mich um neun Uhr")["input_ids"]
    assert AutoModel.from_pretrained(tmp_path / "again").config.vocab_size == n


def test_trimming_a_chunk_at_a_time_writes_the_same_folder_byte_for_byte(e5_small_dir, corpus, trimmed, tmp_path):
    """Trimming tokenizes its texts a chunk at a time (features.token_ids_flat): with 7-text chunks (3,600 texts:
    515 tokenizer calls, the last one short) every file equals the one-chunk-size trim's."""
    out = tmp_path / "chunked"
    trim_vocabulary(e5_small_dir, corpus["texts"], out, chunk=7)
    names = sorted(p.name for p in trimmed["dir"].iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (trimmed["dir"] / name).read_bytes(), name


def test_trimming_checks_every_text_and_names_one_the_trimmed_tokenizer_reads_otherwise(e5_small_dir, corpus, trimmed):
    """The check after trimming compares the whole corpus's ids at once; where they differ it names the first text
    that differs (here: an id map with two kept pieces swapped, as a broken renumbering would give)."""
    import numpy as np

    from mkd.models.features import token_ids_flat
    from mkd.models.vocab_trim import _verify_trim

    old_tok = load_tokenizer(e5_small_dir)
    texts = corpus["texts"][:50]
    old_ids = token_ids_flat(old_tok, texts, 7, truncation=False)
    old_to_new = np.full(max(trimmed["kept"]) + 1, -1, dtype=np.int64)
    old_to_new[trimmed["kept"]] = np.arange(len(trimmed["kept"]))
    _verify_trim(trimmed["dir"], old_tok, texts, old_ids, old_to_new, 7)        # the real map: silent
    first, second = (int(i) for i in old_ids[0][1:3])                           # two pieces of the first text
    swapped = old_to_new.copy()
    swapped[[first, second]] = old_to_new[[second, first]]
    with pytest.raises(MkdError, match=f"encodes {re.escape(repr(texts[0]))} differently"):
        _verify_trim(trimmed["dir"], old_tok, texts, old_ids, swapped, 7)


_TOKENIZE_MEMORY = """
import sys
from pathlib import Path
from mkd.models.sources import load_tokenizer
from mkd.models.features import token_ids_flat

def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

tok = load_tokenizer(sys.argv[1])
texts = [f"wake me up at {i} and play song {i * 7} by artist number {i % 977} please" for i in range(int(sys.argv[2]))]
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")   # the peak (VmHWM) restarts from now: loading the tokenizer peaks too
if sys.argv[3] == "chunked":
    token_ids_flat(tok, texts, 4096, truncation=False)
else:
    ids = tok(texts, add_special_tokens=True, truncation=False)["input_ids"]
print(status("VmHWM") - before)
"""


def test_trimming_tokenizes_all_of_massive_in_bounded_memory(e5_small_dir):
    """At the paper's size (all 860k MASSIVE texts) one tokenizer call held ~2.5 GB (measured: the base stage of
    the full-size dry run peaked at 4.1 GB). On 200,000 texts: one call grows the process by hundreds of MB, the
    chunked tokenization (ids kept as an int64 array) by a small fraction of that."""
    import subprocess
    import sys

    grew = {}
    for mode in ("chunked", "one call"):
        r = subprocess.run([sys.executable, "-c", _TOKENIZE_MEMORY, str(e5_small_dir), "200000", mode],
                           capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 0, r.stderr
        grew[mode] = int(r.stdout.split()[-1])
    assert grew["one call"] > 200 * 2**20, grew
    assert grew["chunked"] < grew["one call"] / 4, grew


def test_trim_needs_texts(tmp_path):
    with pytest.raises(MkdError):
        trim_vocabulary(tmp_path, ["x"], tmp_path / "out")                # not a model folder


@pytest.mark.slow
def test_trim_needs_texts_real(e5_small_dir, tmp_path):
    with pytest.raises(MkdError, match="at least one"):
        trim_vocabulary(e5_small_dir, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_trim_generic_xlmr_with_tied_mlm_head(e5_small_dir, corpus, tmp_path):
    """XLM-R layout (positions offset by pad id + 1, one token type) and an MLM head tied to the embedding."""
    import shutil

    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    src = tmp_path / "tiny-xlmr"
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, type_vocab_size=1,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    XLMRobertaForMaskedLM(config).save_pretrained(src)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(e5_small_dir / name, src / name)
    texts = corpus["train"]["de-DE"][:200]
    stats = trim_vocabulary(src, texts, tmp_path / "tiny-trimmed")
    kept = json.loads((tmp_path / "tiny-trimmed" / "trim_kept_ids.json").read_text())
    assert stats["params_before"] - stats["params_after"] == (250002 - len(kept)) * (32 + 1)  # rows + bias

    old = XLMRobertaForMaskedLM.from_pretrained(src).eval()
    new = XLMRobertaForMaskedLM.from_pretrained(tmp_path / "tiny-trimmed").eval()
    assert new.get_output_embeddings().weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()
    assert new.config.pad_token_id == 1 and new.config.vocab_size == len(kept)
    tok_old, tok_new = load_tokenizer(src), load_tokenizer(tmp_path / "tiny-trimmed")
    sample = texts[:6]
    b_old = tok_old(sample, padding=True, return_tensors="pt")
    b_new = tok_new(sample, padding=True, return_tensors="pt")
    with torch.no_grad():
        lo, ln = old(**b_old).logits, new(**b_new).logits
    torch.testing.assert_close(ln, lo[..., kept], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ sources
def test_hub_source_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    """Offline (HF_HUB_OFFLINE=1, as the tests run), a Hub id fails at once, without looking up or connecting to
    any host (an attempted lookup stalls ~24 s here), and the message names the sources that work offline."""
    import socket

    assert os.environ.get("HF_HUB_OFFLINE") == "1", "run the tests offline (scripts/test.sh sets HF_HUB_OFFLINE=1)"
    reached = []
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: reached.append(address) or real_connect(self, address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: reached.append(a[0]) or real_lookup(*a, **k))
    with pytest.raises(MkdError) as info:
        build_base_model("hub:mkd-tests/no-such-checkpoint", out_dir=tmp_path / "hub")
    assert reached == []
    msg = str(info.value)
    assert "Hub" in msg and "e5-small" in msg and "local:" in msg
    assert not (tmp_path / "hub").exists()


def test_unknown_source_lists_the_forms(tmp_path):
    with pytest.raises(MkdError) as info:
        build_base_model("bert-of-theseus")
    msg = str(info.value)
    assert "e5-small" in msg and "hub:" in msg and "local:" in msg
    with pytest.raises(MkdError, match="does not exist"):
        build_base_model(f"local:{tmp_path / 'nope'}")
    with pytest.raises(MkdError, match="model id"):
        build_base_model("hub:")


def test_local_folder_must_be_complete(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(MkdError, match="tokenizer"):
        build_base_model(f"local:{folder}")
    with pytest.raises(MkdError, match="tokenizer"):
        build_base_model(str(folder))


@pytest.mark.slow
def test_local_folder_source(e5_small_dir, tmp_path):
    assert build_base_model(f"local:{e5_small_dir}") == e5_small_dir
    assert build_base_model(str(e5_small_dir)) == e5_small_dir
    out = build_base_model(f"local:{e5_small_dir}", out_dir=tmp_path / "copy")
    assert out == tmp_path / "copy"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).stat().st_size == (e5_small_dir / name).stat().st_size
    assert load_tokenizer(out)("Hallo Welt")["input_ids"] == load_tokenizer(e5_small_dir)("Hallo Welt")["input_ids"]


def test_data_models_and_benchmark_share_one_cache_root(monkeypatch, tmp_path):
    import mkd.data.source as source
    from benchmark.common import bench_cache
    from mkd.core.cache import cache_root

    monkeypatch.delenv("MKD_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "mkd"
    root = tmp_path / "c"
    monkeypatch.setenv("MKD_CACHE", str(root))
    assert cache_root() == root
    # data: the official release is downloaded into the root
    monkeypatch.setattr(source, "_fetch", lambda url, dest: Path(dest).write_bytes(b"release"))
    assert source.download_official(sha256=None) == root / source.OFFICIAL_FILENAME
    from mkd.data import arrow_cache  # and MASSIVE rows already read, as Arrow

    assert arrow_cache.cache_dir() == root / "massive-arrow"
    # models: a complete folder cached under root/models is what a hub: source returns (no Hub needed)
    cached = root / "models" / "hub" / "org--model"
    cached.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (cached / name).write_text("{}")
    assert build_base_model("hub:org/model") == cached
    # benchmark
    assert bench_cache() == root / "bench"


def test_load_tokenizer_missing_folder(tmp_path):
    with pytest.raises(MkdError):
        load_tokenizer(tmp_path / "nothing")
