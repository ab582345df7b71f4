"""The classification head's side of the recipe: how a sentence is pooled, and which weights are the head.

Pooling is a property of the model, stored in its config (`config.mkd_pooling`), so a teacher saved with
mean pooling gives students (whose config is the teacher's) the same pooling, and every caller that runs a
model (training, evaluation, teacher logits, the frozen probe) goes through `forward` and cannot disagree.

  cls   the Hugging Face head as it is: BERT feeds tanh(pooler(h_[CLS])) to its classifier, XLM-R reads h_<s>
  mean  the mean of the last hidden states over the attention mask, fed to the same head; e5 was trained
        to pool this way, so its mean-pooled states carry the sentence (see params.yaml for the dev numbers)
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mkd.core.errors import ConfigError

POOLINGS = ("cls", "mean")
CONFIG_KEY = "mkd_pooling"


def check_pooling(pooling: str, what: str = "pooling") -> None:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown {what} {pooling!r}; {what} must be one of {', '.join(POOLINGS)}")


def set_pooling(config, pooling: str) -> None:
    check_pooling(pooling)
    setattr(config, CONFIG_KEY, pooling)


def pooling_of(model) -> str:
    return getattr(model.config, CONFIG_KEY, "cls")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _head_on_pooled(model, pooled: torch.Tensor) -> torch.Tensor:
    """Run the model's own head on one pooled vector per sentence (shaped as a one-token sequence)."""
    as_sequence = pooled.unsqueeze(1)
    kind = model.config.model_type
    if kind == "bert":  # BertForSequenceClassification: pooler (dense + tanh on position 0), dropout, classifier
        return model.classifier(model.dropout(model.base_model.pooler(as_sequence)))
    if kind in ("xlm-roberta", "roberta"):  # RobertaClassificationHead reads position 0 itself
        return model.classifier(as_sequence)
    raise ConfigError(f"mean pooling is implemented for bert and xlm-roberta models, not {kind!r}; use pooling: cls")


def forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False,
            output_attentions: bool = False):
    """Logits (and hidden states, attention maps when asked) under the model's pooling. Returns an object with
    .logits, .hidden_states and .attentions, like a Hugging Face output."""
    asked = {"output_hidden_states": output_hidden_states}
    if output_attentions:  # only when asked: some architectures' forward takes no such argument otherwise
        asked["output_attentions"] = True
    if pooling_of(model) == "cls":
        return model(input_ids=input_ids, attention_mask=attention_mask, **asked)
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **asked)
    logits = _head_on_pooled(model, mean_pool(out.last_hidden_state, attention_mask))
    return SimpleNamespace(logits=logits, hidden_states=out.hidden_states if output_hidden_states else None,
                           attentions=out.attentions if output_attentions else None)


def is_head_parameter(name: str, model) -> bool:
    """The task head: every weight outside the pretrained body, plus BERT's pooler, which the body of an
    encoder checkpoint either lacks (e5: written as identity) or never trained for this task."""
    return not name.startswith(model.base_model_prefix + ".") or ".pooler." in name


def is_word_embedding(name: str) -> bool:
    return name.endswith("embeddings.word_embeddings.weight")
