"""Tokenization cache and length-grouped, per-batch-padded batches.

Tokenizing all 52 locales takes minutes on a CPU and every teacher, student and seed needs the same ids,
so `encode` tokenizes once per (tokenizer, max_length, texts) and keeps the ids in a cache file.
Batches are padded to their own longest sequence (not to max_length), and training batches are grouped by
length so that padding — wasted compute — stays small.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mkd.core.atomic import atomic_path
from mkd.core.cache import cache_root
from mkd.data import seed_for
from mkd.core.errors import ConfigError

log = logging.getLogger(__name__)

_CACHE_VERSION = "mkd-tokens-1"
TOKENIZE_CHUNK = 4096
# Backend settings that the tokenizer call itself changes (transformers enables truncation on the backend
# during a call and leaves it there); they are passed explicitly below, so they stay out of the key.
_VOLATILE = ("truncation", "padding")


def _strip_volatile(state: str) -> str:
    """The serialized state without its truncation/padding settings.

    Fast path: to_str() is compact JSON with the top-level keys "truncation" and "padding" ahead of
    "added_tokens"; their values are cut out in place (parsing the whole ~8 MB state takes ~1 s).
    Anything else is parsed in full.
    """
    dec = json.JSONDecoder()
    limit = state.find('"added_tokens":')
    if state.startswith("{") and limit > 0:
        try:
            for key in _VOLATILE:
                tag = f'"{key}":'
                i = state.find(tag, 0, limit)
                if i < 0:
                    continue
                _, end = dec.raw_decode(state, i + len(tag))
                state = state[:i] + state[end:]
                limit = state.find('"added_tokens":')
            return state
        except ValueError:
            pass
    obj = json.loads(state)
    for key in _VOLATILE:
        obj.pop(key, None)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's serialized state (fast tokenizers: backend_tokenizer.to_str())."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        blob = _strip_volatile(backend.to_str())
    elif hasattr(tokenizer, "get_vocab"):  # slow tokenizers: vocabulary + class + special tokens
        specials = getattr(tokenizer, "special_tokens_map", {})
        blob = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()), specials],
                          sort_keys=True, ensure_ascii=False, default=str)
    else:
        raise ConfigError(f"cannot fingerprint tokenizer {type(tokenizer).__name__}: it has neither "
                          f"backend_tokenizer.to_str() nor get_vocab(); use a Hugging Face tokenizer")
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_key(tokenizer: Any, texts: Sequence[str], max_length: int) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_VERSION}\n{tokenizer_fingerprint(tokenizer)}\n{max_length}\n{len(texts)}\n".encode())
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _load_cache(path: Path, n: int) -> list[list[int]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            flat, offsets = z["flat"], z["offsets"]
        if offsets.ndim != 1 or len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(flat):
            raise ValueError("offsets do not match")
    except Exception as exc:  # a corrupt cache is a miss, never an error
        log.warning("ignoring unreadable token cache %s (%s); tokenizing again", path, exc)
        return None
    return _as_lists(flat, offsets)


def _as_lists(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    flat_l, off = flat.tolist(), offsets.tolist()
    return [flat_l[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def token_ids_flat(tokenizer: Any, texts: Sequence[str], chunk: int = TOKENIZE_CHUNK, **tokenize) -> tuple[np.ndarray, np.ndarray]:
    """The texts' token ids (special tokens added; `tokenize`: the tokenizer's other arguments, e.g. truncation) as
    (flat int64 ids, offsets: text i is flat[offsets[i]:offsets[i + 1]]), `chunk` texts a tokenizer call: a call
    holds its Rust encodings and Python lists for every text it is given (~2.5 GB for all 860k MASSIVE texts)."""
    flat, lengths = [], []
    for start in range(0, len(texts), chunk):
        ids = tokenizer(list(texts[start:start + chunk]), add_special_tokens=True, padding=False, **tokenize)["input_ids"]
        lengths.extend(len(i) for i in ids)
        flat.append(np.fromiter((t for i in ids for t in i), dtype=np.int64))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return (np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)), offsets


def encode(tokenizer: Any, texts: list[str], max_length: int = 128, cache_dir: Path | None = None) -> list[list[int]]:
    """Token ids (with special tokens, truncated to max_length, not padded), cached per (tokenizer, data)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an int >= 2, not {max_length!r}")
    texts = list(texts)
    if not texts:
        return []
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tokens"
    path = folder / f"{cache_key(tokenizer, texts, max_length)}.npz"
    if path.is_file():
        ids = _load_cache(path, len(texts))
        if ids is not None:
            return ids
    flat, offsets = token_ids_flat(tokenizer, texts, truncation=True, max_length=max_length)
    if flat.size and flat.min() >= 0 and flat.max() < 2**31:
        flat = flat.astype(np.int32)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, flat=flat, offsets=offsets)
    except OSError as exc:  # a cache that cannot be written costs time, not correctness
        log.warning("could not write token cache %s (%s)", path, exc)
    return _as_lists(flat, offsets)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           shuffle: bool = True, group_by_length: bool = True) -> list[list[int]]:
    """Batches of indices into `lengths`, every index exactly once.

    shuffle=True (training): indices shuffled by a generator seeded from seed_for(seed, epoch); with
    group_by_length they are cut into mega-batches of 50*batch_size, each sorted by length (longest first)
    and cut into batches, then the batch order is shuffled. Deterministic per (seed, epoch).
    shuffle=False (evaluation): original order, or sorted by length when group_by_length (for speed).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, not {batch_size!r}")
    n = len(lengths)
    if n == 0:
        return []
    lens = list(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lens[i]) if group_by_length else list(range(n))
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    gen = torch.Generator().manual_seed(seed_for(seed, epoch))
    perm = torch.randperm(n, generator=gen).tolist()
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = 50 * batch_size
    batches: list[list[int]] = []
    for m in range(0, n, mega):
        chunk = sorted(perm[m:m + mega], key=lambda i: -lens[i])  # stable: ties keep the shuffled order
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    batch_order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[b] for b in batch_order]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both long, padded on the right to the batch's longest sequence."""
    width = max((len(s) for s in seqs), default=0)
    input_ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if len(s):
            input_ids[row, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[row, : len(s)] = 1
    return input_ids, mask
