"""Student initialization by weight copy: the paper's key operation.

A student is the teacher's architecture with fewer encoder layers. Which teacher layers it receives is a
layer map, explicit data as in DistilBERT's extract.py (`[0, 2, 4, 7, 9, 11]`): student layer i starts as
teacher layer map[i]. The initializations form a registry (`INITIALIZERS`, one decorated function each, in
the order the report lists them); grid.inits, the claims and every table read it, so a new strategy is one
`@register_init("name")` function here:

  random      the architecture's own initialization, seeded
  pretrained  embeddings + mapped layers copied from the pretrained base model; new classifier head
  teacher     embeddings + mapped layers + classifier head copied from the fine-tuned teacher

Copying works on state-dict keys. The encoder's layer list is found in the model's own module structure (the
one ModuleList holding config.num_hidden_layers layers: `bert.encoder.layer`, `roberta.encoder.layer`,
`distilbert.transformer.layer`, ...), never assumed from a name: every key under `<layers>.<i>.` is taken from
`<layers>.<map[i]>.`; every other key of the body (embeddings, pooler) is taken as is; head keys are taken only
when the head is copied. A model without exactly one such list is an error, never a silent layer i -> layer i copy.

A student may also be narrower than the teacher (student.hidden_size, intermediate_size, num_attention_heads):
copying then becomes weight selection (Xu et al., ICLR 2024): one subset of the source's neurons, chosen once
(`neuron_selection`: whole attention heads evenly spaced, all of a kept head's positions; intermediate neurons
evenly spaced), is sliced out of every matrix along every axis of that width, through the embeddings, each
mapped layer and the head. At the teacher's width the selection is every neuron, and the copy is the plain one.

torch and transformers are imported where a model is built, so config validation (layer maps, init names)
stays cheap.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from mkd.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

def _spread(teacher_layers: int, k: int) -> list[int]:
    """Evenly over depth, the first and the last layer included (DistilBERT's extract.py: [0, 2, 4, 7, 9, 11]);
    round(i (L-1)/(k-1)) is strictly increasing when k <= L."""
    return [teacher_layers - 1] if k == 1 else [round(i * (teacher_layers - 1) / (k - 1)) for i in range(k)]


def _bottom(teacher_layers: int, k: int) -> list[int]:
    """The first k layers (BiStil's "bottom")."""
    return list(range(k))


def _top(teacher_layers: int, k: int) -> list[int]:
    """The last k layers."""
    return list(range(teacher_layers - k, teacher_layers))


def _alternate_top(teacher_layers: int, k: int) -> list[int]:
    """Every (L // k)-th layer counted down from the last: 6 of 12 -> [1, 3, 5, 7, 9, 11], BiStil's "regular"
    strategy (Ansell et al. 2023, the layers k mod 2 = 1); 4 of 12 -> [2, 5, 8, 11]."""
    stride = teacher_layers // k
    return sorted(teacher_layers - 1 - stride * i for i in range(k))


def _symmetric(teacher_layers: int, k: int) -> list[int]:
    """The bottom and top layers, the middle dropped (Sajjad et al. 2023, lower layers first on an odd k):
    6 of 12 -> [0, 1, 2, 9, 10, 11]."""
    return list(range(k - k // 2)) + list(range(teacher_layers - k // 2, teacher_layers))


# The named layer maps (student.layer_map), teacher depth L and student depth k -> teacher layer per student layer.
LAYER_MAPS = {"spread": _spread, "bottom": _bottom, "top": _top, "alternate_top": _alternate_top,
              "symmetric": _symmetric}
LAYER_MAP_STRATEGIES = tuple(LAYER_MAPS)


def layer_map(strategy: str | Sequence[int], teacher_layers: int, student_layers: int | None = None) -> list[int]:
    """Teacher layer index for each student layer.

    strategy: a name of LAYER_MAPS (spread, bottom, top, alternate_top, symmetric) or an explicit list of teacher
    layer indices.
    """
    if isinstance(strategy, str):
        if strategy not in LAYER_MAP_STRATEGIES:
            raise ConfigError(
                f"unknown layer map strategy {strategy!r}; use one of {', '.join(LAYER_MAP_STRATEGIES)} "
                "or an explicit list of teacher layer indices such as [0, 2, 4, 7, 9, 11]"
            )
        k = student_layers
        if k is None or k < 1:
            raise ConfigError(f"a {strategy!r} layer map needs student.layers >= 1, got {k}")
        if k > teacher_layers:
            raise ConfigError(
                f"student.layers={k} is deeper than the teacher ({teacher_layers} layers); "
                f"a student must have at most {teacher_layers} layers"
            )
        mapping = LAYER_MAPS[strategy](teacher_layers, k)
    else:
        mapping = [int(i) for i in strategy]
        if student_layers is not None and len(mapping) != student_layers:
            raise ConfigError(
                f"the layer map {mapping} has {len(mapping)} entries but student.layers={student_layers}; "
                "give one teacher layer per student layer"
            )
    validate_layer_map(mapping, teacher_layers)
    return mapping


def validate_layer_map(mapping: Sequence[int], teacher_layers: int) -> None:
    if not mapping:
        raise ConfigError("the layer map is empty; a student needs at least one layer")
    if len(mapping) > teacher_layers:
        raise ConfigError(
            f"the layer map {list(mapping)} has {len(mapping)} layers, more than the teacher's {teacher_layers}"
        )
    bad = [i for i in mapping if not 0 <= i < teacher_layers]
    if bad:
        raise ConfigError(
            f"layer map {list(mapping)} has indices {bad} outside the teacher's layers 0..{teacher_layers - 1}"
        )
    if len(set(mapping)) != len(mapping):
        raise ConfigError(f"layer map {list(mapping)} repeats a teacher layer; each student layer needs its own")


def _num_layers(config) -> int:
    return int(config.num_hidden_layers)


def layer_list_name(model: torch.nn.Module) -> str:
    """Qualified name of the model's list of encoder layers, from its module structure."""
    import torch

    n = _num_layers(model.config)
    found = [name for name, module in model.named_modules() if name and isinstance(module, torch.nn.ModuleList)
             and len(module) == n]
    if len(found) != 1:
        what = f"several ({', '.join(found)})" if found else "none"
        raise ConfigError(f"{type(model).__name__}: cannot tell which module list holds its {n} encoder layers "
                          f"({what} found); copying through a layer map needs exactly one, as BERT, XLM-R and "
                          "DistilBERT have")
    return found[0]


def _is_head_key(key: str, model: PreTrainedModel) -> bool:
    """True for the task head (classifier), which is not part of the pretrained body."""
    return not key.startswith(model.base_model_prefix + ".")


# Config entries that hold one value per encoder layer (ModernBERT's `layer_types`: full or sliding-window
# attention, with its own rotary base): a student's follow its layer map, so each copied layer keeps the
# attention it was trained with.
PER_LAYER_CONFIG = ("layer_types",)


def mapped_per_layer_config(config, mapping: Sequence[int]) -> dict[str, list]:
    """The source config's PER_LAYER_CONFIG entries as a student through `mapping` must hold them."""
    out = {}
    for key in PER_LAYER_CONFIG:
        per_layer = getattr(config, key, None)
        if isinstance(per_layer, (list, tuple)) and len(per_layer) == _num_layers(config):
            out[key] = [per_layer[j] for j in mapping]
    return out


# --- width: a student narrower than its source, initialized by weight selection ---------------------------------
#
# Xu et al. (ICLR 2024, "Initializing Models with Larger Ones") initialize a smaller model by selecting a consistent
# subset of the larger one's neurons in every matrix. Here a student's widths are three numbers (hidden, intermediate,
# attention heads) below the source's, and each narrowed dimension of every tensor keeps one index set, whatever
# tensor it is in:
#   hidden        the selected heads' neurons (whole heads, evenly spaced; within a narrower head, evenly spaced
#                 positions): one set for the residual stream, the embeddings, every layer, the pooler and the head,
#                 so the attention's inner dimension (heads x head size = hidden in these encoders) keeps whole heads
#   intermediate  evenly spaced feed-forward neurons
# Fused tensors (ModernBERT's Wqkv: 3 x hidden; its gated Wi: 2 x intermediate) take the set in every block. A
# dimension the sets cannot explain is refused, never cut arbitrarily.

# Config entries that hold the hidden width (an embedding size equal to it narrows with it; a smaller one, as
# ELECTRA's or RemBERT's, stays) and the feed-forward width, by architecture's name for them.
HIDDEN_WIDTH_KEYS = ("hidden_size", "embedding_size", "pooler_hidden_size")
INTERMEDIATE_KEYS = ("intermediate_size", "hidden_dim")  # DistilBERT calls its feed-forward width hidden_dim
FUSED_BLOCKS = (2, 3)


@dataclass(frozen=True)
class Width:
    """A model's widths: hidden, feed-forward, attention heads (`source_width` reads them from a config,
    `student_width` fills a student's from its source's)."""

    hidden: int
    intermediate: int
    heads: int

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


def _intermediate_key(config) -> str:
    for key in INTERMEDIATE_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise ConfigError(f"{type(config).__name__} has no feed-forward width ({' or '.join(INTERMEDIATE_KEYS)}); "
                      "a narrower student cannot be built from it")


def source_width(config) -> Width:
    return Width(int(config.hidden_size), int(getattr(config, _intermediate_key(config))), int(config.num_attention_heads))


def student_width(config, hidden: int | None = None, intermediate: int | None = None, heads: int | None = None) -> Width:
    """The student's widths under student.hidden_size / intermediate_size / num_attention_heads (null: from the
    source): heads keep the source's head size unless given; the feed-forward width shrinks with the hidden width
    (the source's ratio, rounded). Every fault names the key and the fix."""
    src = source_width(config)
    hidden = src.hidden if hidden is None else int(hidden)
    if not 1 <= hidden <= src.hidden:
        raise ConfigError(f"student.hidden_size {hidden} must be between 1 and the teacher's {src.hidden}")
    if heads is None:
        if hidden % src.head_size:
            raise ConfigError(f"student.hidden_size {hidden} is not a multiple of the teacher's head size {src.head_size}; "
                              f"give student.num_attention_heads (a divisor of {hidden}) or a multiple of {src.head_size}")
        heads = hidden // src.head_size
    heads = int(heads)
    if not 1 <= heads <= src.heads or hidden % heads or hidden // heads > src.head_size:
        raise ConfigError(f"student.num_attention_heads {heads} must divide student.hidden_size {hidden}, be at most the "
                          f"teacher's {src.heads} heads, and leave heads no wider than the teacher's {src.head_size}")
    if intermediate is None:
        intermediate = max(1, round(src.intermediate * hidden / src.hidden))
    intermediate = int(intermediate)
    if not 1 <= intermediate <= src.intermediate:
        raise ConfigError(f"student.intermediate_size {intermediate} must be between 1 and the teacher's {src.intermediate}")
    return Width(hidden, intermediate, heads)


def evenly_spaced(n: int, k: int) -> list[int]:
    """k of range(n), evenly spaced from 0 (Xu et al.'s uniform selection): all of them when k == n."""
    return [i * n // k for i in range(k)]


def neuron_selection(source: Width, student: Width) -> dict[tuple[int, int], list[int]]:
    """{(source size, student size): the source indices kept} for every narrowed dimension, fused blocks included.
    Two sets for one pair of sizes (a feed-forward width equal to the hidden width, both narrowed otherwise) are
    refused: a tensor's dimension would not say which it is."""
    within = evenly_spaced(source.head_size, student.head_size)
    hidden = [h * source.head_size + j for h in evenly_spaced(source.heads, student.heads) for j in within]
    sets = {}
    for (n, k), kept in (((source.hidden, student.hidden), hidden),
                         ((source.intermediate, student.intermediate), evenly_spaced(source.intermediate, student.intermediate))):
        if n == k:
            continue
        for b in (1,) + FUSED_BLOCKS:
            key, value = (b * n, b * k), [i * n + x for i in range(b) for x in kept]
            if sets.setdefault(key, value) != value:
                raise ConfigError(f"a width of {n} narrowed to {k} could be the hidden or the feed-forward width; "
                                  "give student.intermediate_size another value")
    return sets


def select_neurons(tensor: torch.Tensor, shape: Sequence[int], selection: dict, key: str) -> torch.Tensor:
    """The source tensor cut to the student's `shape` along each narrowed dimension by its index set."""
    import torch

    if tensor.dim() != len(shape):
        raise ConfigError(f"{key}: student shape {tuple(shape)} and source shape {tuple(tensor.shape)} differ in rank")
    for d, (n, k) in enumerate(zip(tensor.shape, shape)):
        if n == k:
            continue
        if (n, k) not in selection:
            raise ConfigError(f"shape mismatch for {key!r}: student {tuple(shape)} vs source {tuple(tensor.shape)}; "
                              f"dimension {d} ({n} -> {k}) is neither the hidden nor the feed-forward width")
        tensor = tensor.index_select(d, torch.tensor(selection[(n, k)], dtype=torch.long))
    return tensor


def student_config(source_dir: str | Path, mapping: Sequence[int], num_labels: int, width: Width | None = None):
    """The student's config: the source's, with the mapped depth (and per-layer entries), the task's labels, and
    `width`'s widths (None: the source's)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source_dir)
    for key, values in mapped_per_layer_config(config, mapping).items():
        setattr(config, key, values)
    config.num_hidden_layers = len(mapping)
    config.num_labels = num_labels
    if width is not None:
        src = source_width(config)
        for key in HIDDEN_WIDTH_KEYS:
            if getattr(config, key, None) == src.hidden:
                setattr(config, key, width.hidden)
        setattr(config, _intermediate_key(config), width.intermediate)
        config.num_attention_heads = width.heads
        if getattr(config, "head_dim", None) == src.head_size:  # ModernBERT-style explicit head size
            config.head_dim = width.head_size
    return config


def _check_layers_match(student_state: dict, source_state: dict, layers: str, mapping: Sequence[int], arch: str) -> None:
    """Refuse a map under which a student layer and its source layer hold different tensors: the copy would drop
    weights or leave some random (ModernBERT's first layer has no attention norm, its others have one)."""
    def suffixes(state, i):
        prefix = f"{layers}.{i}."
        return {k[len(prefix):] for k in state if k.startswith(prefix)}

    for i, j in enumerate(mapping):
        student, source = suffixes(student_state, i), suffixes(source_state, j)
        if student != source:
            raise ConfigError(
                f"{arch}: student layer {i} and source layer {j} hold different tensors (only the student's: "
                f"{sorted(student - source) or 'none'}; only the source's: {sorted(source - student) or 'none'}), so "
                f"copying layer {j} into position {i} would not be faithful. Choose a layer map that keeps such layers "
                f"in place (for ModernBERT: the source's layer 0 as the student's layer 0, as the spread and bottom maps do)")


def copy_weights(student: PreTrainedModel, source: PreTrainedModel, mapping: Sequence[int], copy_head: bool) -> list[str]:
    """Copy body weights (and the head when copy_head) from source into student through the layer map.

    Returns the student keys that were copied. A student narrower than the source gets each tensor's selected
    neurons (`neuron_selection`); any other shape difference is an error, never a silent skip.
    """
    validate_layer_map(mapping, _num_layers(source.config))
    if len(mapping) != _num_layers(student.config):
        raise ConfigError(f"layer map {list(mapping)} does not match the student's {_num_layers(student.config)} layers")
    layers = layer_list_name(student)
    if layer_list_name(source) != layers:
        raise ConfigError(f"student layers {layers!r} and source layers {layer_list_name(source)!r} differ; "
                          "teacher and student must share one architecture")
    for key, expected in mapped_per_layer_config(source.config, mapping).items():
        ours = list(getattr(student.config, key, None) or [])
        if ours != expected:
            raise ConfigError(f"{type(student).__name__}: the student's {key} {ours} do not follow the layer map "
                              f"{list(mapping)} over the source's {list(getattr(source.config, key))}; build the student "
                              "with mkd.models.students.student_config, which maps them")
    narrower, wider = source_width(student.config), source_width(source.config)
    grown = [f"{name} {getattr(narrower, name)} > {getattr(wider, name)}" for name in ("hidden", "intermediate", "heads")
             if getattr(narrower, name) > getattr(wider, name)]
    if grown:  # selection keeps a subset of the source's neurons; a wider student would repeat some
        raise ConfigError(f"{type(student).__name__}: the student is wider than its source ({', '.join(grown)}); "
                          "weight copying only narrows, so give student widths at most the teacher's")
    selection = neuron_selection(wider, narrower)
    src, dst = source.state_dict(), student.state_dict()
    _check_layers_match(dst, src, layers, mapping, type(student).__name__)
    new_state = {}
    for key, tensor in dst.items():
        if _is_head_key(key, student) and not copy_head:
            continue
        src_key = key
        if key.startswith(layers + "."):
            index, rest = key[len(layers) + 1:].split(".", 1)
            src_key = f"{layers}.{mapping[int(index)]}.{rest}"
        if src_key not in src:
            raise ConfigError(
                f"cannot initialize student weight {key!r}: the source model has no {src_key!r}; "
                "teacher and student must share one architecture"
            )
        new_state[key] = select_neurons(src[src_key], tensor.shape, selection, key).detach().clone()
    # A source tensor outside the layers and the head that the student has no place for (ELECTRA's embedding
    # projection, gone when a narrower student's width equals its embedding size) would be dropped: refuse.
    unused = sorted(k for k in src if not k.startswith(layers + ".") and not _is_head_key(k, source) and k not in dst)
    if unused:
        raise ConfigError(f"{type(student).__name__}: the student has no place for the source's {', '.join(unused)}, so "
                          "copying would drop them (a narrower width equal to the embedding size removes ELECTRA's "
                          "embedding projection); choose another student.hidden_size")
    student.load_state_dict(new_state, strict=False)
    return sorted(new_state)


@dataclass(frozen=True)
class Sources:
    """What an initializer may copy from: the pretrained base model and the fine-tuned teacher (folders, loaded
    on request), and the layer map."""

    base_dir: str | Path
    teacher_dir: str | Path | None
    mapping: Sequence[int]
    num_labels: int

    def load(self, which: str) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        folder = {"base": self.base_dir, "teacher": self.teacher_dir}[which]
        if folder is None:
            raise ConfigError(f"this initialization copies from the {which}, and no {which} folder was given")
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=self.num_labels)


Initializer = Callable[["PreTrainedModel", Sources], None]
INITIALIZERS: dict[str, Initializer] = {}


def register_init(name: str) -> Callable[[Initializer], Initializer]:
    """Register `fn(student, sources)` as the initialization `name`: it receives a seeded, randomly initialized
    student and overwrites what the strategy copies."""
    def register(fn: Initializer) -> Initializer:
        if name in INITIALIZERS:
            raise ConfigError(f"initialization {name!r} is registered twice")
        INITIALIZERS[name] = fn
        return fn

    return register


@register_init("random")
def random_init(student, sources: Sources) -> None:
    """Nothing copied: the architecture's own initialization, drawn from the student's seed."""


@register_init("pretrained")
def pretrained_init(student, sources: Sources) -> None:
    copy_weights(student, sources.load("base"), sources.mapping, copy_head=False)


@register_init("teacher")
def teacher_init(student, sources: Sources) -> None:
    copy_weights(student, sources.load("teacher"), sources.mapping, copy_head=True)


def check_init(init: str, what: str = "initialization") -> None:
    if init not in INITIALIZERS:
        close = difflib.get_close_matches(str(init), list(INITIALIZERS), n=1)
        raise ConfigError(f"{what}: unknown initialization {init!r}" + (f"; did you mean {close[0]!r}?" if close else
                          f"; registered: {', '.join(INITIALIZERS)} (add one with @register_init in mkd/models/students.py)"))


def make_student(
    init: str,
    *,
    base_dir: str | Path,
    teacher_dir: str | Path | None,
    mapping: Sequence[int],
    num_labels: int,
    seed: int,
    width: Width | None = None,
) -> PreTrainedModel:
    """Build a student with len(mapping) layers (and `width`'s widths; None: the source's), initialized as the
    registered `init` says; a narrower student copies the selected neurons (`neuron_selection`).

    The random part of every student (all of it for `random`, the head for `pretrained`) is drawn from a
    generator seeded by `seed`, so the same seed gives the same student and different seeds differ.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    check_init(init)
    # The student's shape (vocabulary included) always follows the model its weights come from.
    shape_dir = teacher_dir if teacher_dir is not None else base_dir
    config = student_config(shape_dir, mapping, num_labels, width)
    torch.manual_seed(seed)
    student = AutoModelForSequenceClassification.from_config(config)
    INITIALIZERS[init](student, Sources(base_dir, teacher_dir, mapping, num_labels))
    return student
