"""Vocabulary trimming: keep only the pieces the tokenizer produces on a corpus (plus the special tokens).

`trim_vocabulary` copies the matching embedding rows in the old id order and rewrites tokenizer.json and
config.json consistently. On those texts the trimmed model computes exactly what the untrimmed one does
(checked before the folder is published).
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from mkd.core.atomic import atomic_dir, write_json
from mkd.models.e5 import publish_permissions
from mkd.core.errors import MkdError
from mkd.models.features import TOKENIZE_CHUNK, token_ids_flat
from mkd.models.sources import WEIGHT_FILES, count_parameters, load_tokenizer, model_class, validate_folder

# Slow-tokenizer vocabularies: they hold the OLD vocabulary and must not travel into a trimmed folder.
SLOW_VOCAB_FILES = ("sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt",
                    "added_tokens.json")
SPECIAL_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                   "mask_token_id", "unk_token_id", "decoder_start_token_id")
SUPPORTED_KINDS = ("Unigram", "WordPiece")


def trim_vocabulary(model_dir: Path, texts: list[str], out_dir: Path, chunk: int = TOKENIZE_CHUNK) -> dict:
    """Write to `out_dir` a copy of `model_dir` whose vocabulary holds only the pieces that the tokenizer
    produces on `texts`, plus every special / added token. New ids keep the old order.

    Returns (and writes to out_dir/trim_stats.json) {"vocab_before", "vocab_after", "params_before",
    "params_after", "kept_fraction"}; out_dir/trim_kept_ids.json lists the kept old ids (new id = index).
    """
    from transformers import AutoConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    validate_folder(model_dir, "trim_vocabulary")
    texts = list(texts)
    if not texts:
        raise MkdError("trim_vocabulary needs at least one text")
    if not all(isinstance(t, str) for t in texts):
        raise MkdError("trim_vocabulary: texts must be strings")

    tok = load_tokenizer(model_dir)
    tj = _read_tokenizer_json(model_dir, tok)
    kind = tj.get("model", {}).get("type")
    if kind not in SUPPORTED_KINDS:
        raise MkdError(f"trim_vocabulary supports SentencePiece Unigram (XLM-R, e5) and WordPiece (BERT) "
                       f"tokenizers; {model_dir} has {kind!r}")
    vocab_before = len(tok)

    # a chunk of texts at a time, the ids as one array: on all of MASSIVE one call held ~2.5 GB, twice
    old_ids = token_ids_flat(tok, texts, chunk, truncation=False)
    keep = _ids_to_keep(tok, tj, old_ids[0])
    config = AutoConfig.from_pretrained(str(model_dir))
    n_rows = int(config.vocab_size)
    if max(keep) >= n_rows:
        raise MkdError(f"tokenizer id {max(keep)} is outside the model's {n_rows}-row embedding table")
    kept = sorted(keep)
    old_to_new = _old_to_new(kept, max(n_rows, _model_vocab_size(tj), vocab_before))
    remap = partial(_new_id, old_to_new)

    model = _load_model(model_dir, config)
    params_before = count_parameters(model)["total"]
    _slice_vocabulary(model, config, kept, old_to_new, remap)
    params_after = count_parameters(model)["total"]
    new_tj = _trimmed_tokenizer_json(tj, kept, old_to_new, remap)
    tok_config = _trimmed_tokenizer_config(model_dir, remap)

    stats = {"vocab_before": int(vocab_before), "vocab_after": len(kept),
             "params_before": int(params_before), "params_after": int(params_after),
             "kept_fraction": len(kept) / vocab_before}
    skip = {"config.json", "tokenizer.json", "tokenizer_config.json", "trim_stats.json",
            "trim_kept_ids.json", "generation_config.json", *WEIGHT_FILES, *SLOW_VOCAB_FILES}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        (tmp / "tokenizer.json").write_text(json.dumps(new_tj, ensure_ascii=False), encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if kind == "WordPiece":                      # BertTokenizer may rebuild itself from vocab.txt
            inv = sorted(new_tj["model"]["vocab"].items(), key=lambda kv: kv[1])
            (tmp / "vocab.txt").write_text("".join(p + "\n" for p, _ in inv), encoding="utf-8")
        for src in model_dir.iterdir():              # provenance and other small side files
            if src.is_file() and src.name not in skip and not src.name.startswith("."):
                shutil.copy2(src, tmp / src.name)
        _annotate_source(tmp / "mkd_source.json", model_dir, stats)
        write_json(tmp / "trim_stats.json", stats)
        (tmp / "trim_kept_ids.json").write_text(json.dumps(kept) + "\n", encoding="utf-8")
        _verify_trim(tmp, tok, texts, old_ids, old_to_new, chunk)
        publish_permissions(tmp)
    return stats


def _read_tokenizer_json(model_dir: Path, tok) -> dict:
    path = model_dir / "tokenizer.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return json.loads(tok.backend_tokenizer.to_str())


def _ids_to_keep(tok, tj: dict, used_ids) -> set[int]:
    """The ids the texts use (`used_ids`, an array of them), every special and added token, and the ids
    segmentation itself depends on."""
    import numpy as np

    keep = {int(i) for i in np.unique(used_ids)}
    keep.update(tok.all_special_ids)
    keep.update(a["id"] for a in tj.get("added_tokens", []))
    vocab = tj["model"]["vocab"]
    if tj["model"]["type"] == "Unigram":
        if tj["model"].get("unk_id") is not None:
            keep.add(int(tj["model"]["unk_id"]))
        # The unknown-piece penalty is (lowest score - 10); keeping the lowest-scored piece keeps that
        # penalty, so the Viterbi segmentation of every text stays exactly the same.
        keep.add(int(np.argmin([s for _, s in vocab])))
    else:
        unk = tj["model"].get("unk_token")
        if unk in vocab:
            keep.add(vocab[unk])
    return keep


def _model_vocab_size(tj: dict) -> int:
    """How many ids the tokenizer model itself defines (Unigram: a list of pieces; WordPiece: piece -> id)."""
    vocab = tj["model"]["vocab"]
    return len(vocab) if tj["model"]["type"] == "Unigram" else max(vocab.values()) + 1


def _old_to_new(kept: list[int], size: int):
    """An array mapping each old id to its new id, -1 for a dropped id."""
    import numpy as np

    old_to_new = np.full(size, -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    return old_to_new


def _new_id(old_to_new, i: int) -> int:
    """The new id of a kept old id (the special and added tokens are always kept)."""
    new = int(old_to_new[int(i)])
    if new < 0:
        raise MkdError(f"trim_vocabulary: special id {i} was not kept (internal error)")
    return new


def _load_model(model_dir: Path, config):
    try:
        model = model_class(config).from_pretrained(str(model_dir))
    except Exception as exc:
        raise MkdError(f"cannot load the model in {model_dir}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def _slice_vocabulary(model, config, kept: list[int], old_to_new, remap) -> None:
    """Keep only the `kept` rows of every vocabulary-sized parameter of `model`, and renumber its config's ids."""
    import torch

    n_rows = int(config.vocab_size)
    emb = model.get_input_embeddings()
    old_weight = emb.weight
    index = torch.as_tensor(kept, dtype=torch.long)
    old_pad = getattr(config, "pad_token_id", None)
    new_pad = remap(old_pad) if isinstance(old_pad, int) and 0 <= old_pad < n_rows else None
    emb_module = getattr(getattr(model, model.base_model_prefix, model), "embeddings", None)
    if new_pad is not None and new_pad != old_pad and hasattr(emb_module, "padding_idx"):
        # RoBERTa-style embeddings derive position ids from the pad id: it must not move.
        raise MkdError(f"trimming would move the pad id {old_pad} -> {new_pad}, which shifts this model's "
                       "position ids; unsupported")
    new_emb = torch.nn.Embedding(len(kept), old_weight.shape[1], padding_idx=new_pad,
                                 dtype=old_weight.dtype)
    with torch.no_grad():
        new_emb.weight.copy_(old_weight.detach()[index])
    model.set_input_embeddings(new_emb)
    # Every other vocabulary-sized parameter (an MLM decoder, its bias) is sliced the same way; tied
    # parameters stay tied (one new tensor per old tensor).
    replaced = {id(old_weight): new_emb.weight}
    for module in model.modules():
        for pname, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0 or param.shape[0] != n_rows or module is new_emb:
                continue
            if id(param) not in replaced:
                replaced[id(param)] = torch.nn.Parameter(param.detach()[index].clone(),
                                                         requires_grad=param.requires_grad)
            setattr(module, pname, replaced[id(param)])
        for attr in ("out_features", "num_embeddings"):
            if getattr(module, attr, None) == n_rows:
                setattr(module, attr, len(kept))
    model.config.vocab_size = len(kept)
    for key in SPECIAL_ID_KEYS:
        val = getattr(model.config, key, None)
        if isinstance(val, int) and 0 <= val < len(old_to_new) and old_to_new[val] >= 0:
            setattr(model.config, key, int(old_to_new[val]))


def _trimmed_tokenizer_json(tj: dict, kept: list[int], old_to_new, remap) -> dict:
    """A copy of tokenizer.json holding only the kept pieces, every id in it renumbered."""
    new_tj = json.loads(json.dumps(tj))
    vocab = tj["model"]["vocab"]
    if tj["model"]["type"] == "Unigram":
        new_tj["model"]["vocab"] = [vocab[i] for i in kept if i < len(vocab)]
        if new_tj["model"].get("unk_id") is not None:
            new_tj["model"]["unk_id"] = remap(new_tj["model"]["unk_id"])
    else:
        new_tj["model"]["vocab"] = {piece: int(old_to_new[i]) for piece, i in vocab.items()
                                    if old_to_new[i] >= 0}
    for added in new_tj.get("added_tokens", []):
        added["id"] = remap(added["id"])
    if new_tj.get("post_processor"):
        new_tj["post_processor"] = _remap_post_processor(new_tj["post_processor"], remap)
    if isinstance(new_tj.get("padding"), dict) and "pad_id" in new_tj["padding"]:
        new_tj["padding"]["pad_id"] = remap(new_tj["padding"]["pad_id"])
    return new_tj


def _remap_post_processor(node: Any, remap) -> Any:
    """Rewrite the special-token ids inside a tokenizers post_processor (Template/Roberta/Bert/Sequence)."""
    if isinstance(node, list):
        return [_remap_post_processor(x, remap) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, val in node.items():
        if key == "special_tokens" and isinstance(val, dict):          # TemplateProcessing
            out[key] = {name: {**spec, "ids": [remap(i) for i in spec.get("ids", [])]}
                        for name, spec in val.items()}
        elif key in ("sep", "cls") and isinstance(val, list) and len(val) == 2 and isinstance(val[1], int):
            out[key] = [val[0], remap(val[1])]                         # Roberta/BertProcessing
        else:
            out[key] = _remap_post_processor(val, remap)
    return out


def _trimmed_tokenizer_config(model_dir: Path, remap) -> dict:
    """tokenizer_config.json (empty when absent) with its added-token ids renumbered."""
    tok_config = {}
    if (model_dir / "tokenizer_config.json").is_file():
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if isinstance(tok_config.get("added_tokens_decoder"), dict):
        tok_config["added_tokens_decoder"] = {str(remap(int(k))): v
                                              for k, v in tok_config["added_tokens_decoder"].items()}
    return tok_config


def _annotate_source(path: Path, model_dir: Path, stats: dict) -> None:
    info = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            info = {}
    info["trimmed_from"] = str(model_dir)
    info["trim_stats"] = stats
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _verify_trim(folder: Path, old_tok, texts: list[str], old_ids, old_to_new, chunk: int = TOKENIZE_CHUNK) -> None:
    """The trimmed tokenizer must encode every trimming text as old_to_new[old ids], specials included
    (`old_ids`: token_ids_flat's (flat, offsets))."""
    import numpy as np

    new_tok = load_tokenizer(folder)
    remapped, offsets = old_to_new[old_ids[0]], old_ids[1]
    new_flat, new_offsets = token_ids_flat(new_tok, texts, chunk, truncation=False)
    if not np.array_equal(new_offsets, offsets) or not np.array_equal(new_flat, remapped):
        lengths_differ = np.diff(new_offsets) != np.diff(offsets)
        for i, text in enumerate(texts):
            old = remapped[offsets[i]:offsets[i + 1]]
            new = new_flat[new_offsets[i]:new_offsets[i + 1]]
            if lengths_differ[i] or not np.array_equal(old, new):
                raise MkdError(f"trimmed tokenizer encodes {text!r} differently from the original "
                               f"({new.tolist()[:12]} vs remapped {old.tolist()[:12]})")
    for attr in ("pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
        a, b = getattr(old_tok, attr, None), getattr(new_tok, attr, None)
        if a is not None and (b is None or int(old_to_new[a]) != b):
            raise MkdError(f"trimmed tokenizer's {attr} is {b}, expected {int(old_to_new[a])}")
