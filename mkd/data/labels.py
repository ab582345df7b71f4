"""The label vocabulary: sorted intent names <-> label ids."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Iterable

from mkd.core.atomic import write_json
from mkd.core.errors import DataError

from .schema import Example


class LabelVocab:
    """Sorted intent names <-> label ids."""

    def __init__(self, intents: Iterable[str]):
        self.intents: tuple[str, ...] = tuple(sorted(set(intents)))
        self._ids = {name: i for i, name in enumerate(self.intents)}

    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> "LabelVocab":
        return cls(ex.intent for ex in examples)

    def id(self, intent: str) -> int:
        try:
            return self._ids[intent]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(intent), list(self.intents), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"intent {intent!r} is not in the label vocabulary of {len(self)} intents{hint}. The data does "
                f"not match the prepared labels: re-run `mkd prepare` on the same MASSIVE 1.1 source"
            ) from None

    def intent(self, label: int) -> str:
        return self.intents[label]

    def __len__(self) -> int:
        return len(self.intents)

    def __iter__(self):
        return iter(self.intents)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.intents == other.intents

    def __hash__(self) -> int:
        return hash(self.intents)

    def __repr__(self) -> str:
        return f"LabelVocab({len(self)} intents)"

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"intents": list(self.intents)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelVocab":
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            intents = obj["intents"]
            if not isinstance(intents, list) or not intents or not all(isinstance(i, str) for i in intents):
                raise ValueError("'intents' must be a non-empty list of strings")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the label vocabulary {path}: {exc}; re-run `mkd prepare`") from None
        vocab = cls(intents)
        if list(vocab.intents) != intents:
            raise DataError(f"{path}: intents are not sorted and unique; re-run `mkd prepare`")
        return vocab
