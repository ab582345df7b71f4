"""MASSIVE 1.1's fixed facts (locales, splits and their sizes, the 60 intents), the Example row, language sets."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

from mkd.core.errors import DataError

# ----------------------------------------------------------------------------------------- constants

ALL_LOCALES: tuple[str, ...] = tuple(sorted((
    "af-ZA", "am-ET", "ar-SA", "az-AZ", "bn-BD", "ca-ES", "cy-GB", "da-DK", "de-DE", "el-GR", "en-US",
    "es-ES", "fa-IR", "fi-FI", "fr-FR", "he-IL", "hi-IN", "hu-HU", "hy-AM", "id-ID", "is-IS", "it-IT",
    "ja-JP", "jv-ID", "ka-GE", "km-KH", "kn-IN", "ko-KR", "lv-LV", "ml-IN", "mn-MN", "ms-MY", "my-MM",
    "nb-NO", "nl-NL", "pl-PL", "pt-PT", "ro-RO", "ru-RU", "sl-SL", "sq-AL", "sv-SE", "sw-KE", "ta-IN",
    "te-IN", "th-TH", "tl-PH", "tr-TR", "ur-PK", "vi-VN", "zh-CN", "zh-TW",
)))
assert len(ALL_LOCALES) == 52

LANGUAGE_SETS: dict[str, tuple[str, ...]] = {
    "all": ALL_LOCALES,
    "en": ("en-US",),
    # typologically diverse, incl. low-resource languages (Swahili, Amharic, Welsh, Khmer)
    "cpu8": ("en-US", "de-DE", "ja-JP", "ar-SA", "sw-KE", "am-ET", "cy-GB", "km-KH"),
    "smoke": ("en-US", "de-DE", "sw-KE"),
}

SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Rows per split, identical in every locale of MASSIVE 1.1 (the release's own statistics): a copy with fewer rows
# is partial (a file cut at a line boundary still parses), which prepare refuses unless asked for a subset.
MASSIVE_SPLIT_SIZES: dict[str, int] = {"train": 11514, "dev": 2033, "test": 2974}

# The 60 MASSIVE intents (identical in every locale of 1.1).
MASSIVE_INTENTS: tuple[str, ...] = (
    "alarm_query", "alarm_remove", "alarm_set", "audio_volume_down", "audio_volume_mute",
    "audio_volume_other", "audio_volume_up", "calendar_query", "calendar_remove", "calendar_set",
    "cooking_query", "cooking_recipe", "datetime_convert", "datetime_query", "email_addcontact",
    "email_query", "email_querycontact", "email_sendemail", "general_greet", "general_joke",
    "general_quirky", "iot_cleaning", "iot_coffee", "iot_hue_lightchange", "iot_hue_lightdim",
    "iot_hue_lightoff", "iot_hue_lighton", "iot_hue_lightup", "iot_wemo_off", "iot_wemo_on",
    "lists_createoradd", "lists_query", "lists_remove", "music_dislikeness", "music_likeness",
    "music_query", "music_settings", "news_query", "play_audiobook", "play_game", "play_music",
    "play_podcasts", "play_radio", "qa_currency", "qa_definition", "qa_factoid", "qa_maths", "qa_stock",
    "recommendation_events", "recommendation_locations", "recommendation_movies", "social_post",
    "social_query", "takeaway_order", "takeaway_query", "transport_query", "transport_taxi",
    "transport_ticket", "transport_traffic", "weather_query",
)
assert len(MASSIVE_INTENTS) == 60 and list(MASSIVE_INTENTS) == sorted(MASSIVE_INTENTS)


# ------------------------------------------------------------------------------------- language sets

def unknown_name(kind: str, name: str, valid: Sequence[str]) -> DataError:
    """The error for a name not in `valid`, suggesting the closest valid ones."""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return DataError(f"unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}")


def resolve_language_set(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A language-set name ("all", "cpu8", ...) or an explicit list of locales -> tuple of locales."""
    if isinstance(spec, str):
        if spec in LANGUAGE_SETS:
            return LANGUAGE_SETS[spec]
        if spec in ALL_LOCALES:  # a single locale given as a string
            return (spec,)
        close = difflib.get_close_matches(spec, list(LANGUAGE_SETS) + list(ALL_LOCALES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(
            f"unknown language set {spec!r}.{hint} Valid set names: {', '.join(LANGUAGE_SETS)}; "
            f"or give a list of locales from: {', '.join(ALL_LOCALES)}"
        )
    if not isinstance(spec, (list, tuple)) or not spec:
        raise DataError(f"a language set must be a set name ({', '.join(LANGUAGE_SETS)}) or a non-empty list of locales, not {spec!r}")
    out: list[str] = []
    for loc in spec:
        if not isinstance(loc, str) or loc not in ALL_LOCALES:
            raise unknown_name("locale", str(loc), ALL_LOCALES)
        if loc in out:
            raise DataError(f"locale {loc!r} is listed twice in the language set {list(spec)}")
        out.append(loc)
    return tuple(out)


# ------------------------------------------------------------------------------------------ examples

@dataclass(frozen=True, slots=True)
class Example:
    id: str
    locale: str
    split: str
    intent: str
    utt: str
