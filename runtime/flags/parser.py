"""Reads a command line the way llama.cpp does: every flag is a whole word, looked up exactly.

argparse guesses: `-fa` became `-f a` (prompt file "a"), `-sys hi` a bad `-s` value, and a long flag
could be shortened to any unique prefix. llama.cpp's spellings include many multi-letter short flags
(`-fa`, `-ctk`, `-tb`, `-ub`, `-cnv`, `-sys`), so here nothing is guessed: a word is a flag only if it
is spelled exactly as one, a flag's value is always the next word (even one starting with '-', such
as `-n -1`), and long flags also take `--flag=value`. Later flags win; repeatable flags (`-r`)
accumulate. The flags, their kinds and bounds come from the `Settings` fields' metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from .. import messages
from ..errors import UsageError

HELP_FLAGS = ("-h", "--help")
VERSION_FLAGS = ("--version",)


def field_kind(f: dataclasses.Field) -> type:
    """bool (a switch), int, float, tuple (a repeatable text flag) or str, from the field's type."""
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("tuple", tuple)):
        if text.startswith(name):
            return kind
    return str


def label(f: dataclasses.Field) -> str:
    return "/".join(f.metadata["flags"])


def _convert(f: dataclasses.Field, kind: type, text: str) -> Any:
    choices: dict[str, str] | None = f.metadata.get("choices")
    if choices is not None:
        if text not in choices:
            allowed = ", ".join(dict.fromkeys(choices.values()))
            raise UsageError(messages.BAD_VALUE.format(flag=label(f), reason=f"expected one of {allowed}, got {text!r}"))
        return choices[text]
    if kind in (str, tuple):
        return text
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(messages.BAD_VALUE.format(
            flag=label(f), reason=f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")) from None
    lo, hi = f.metadata.get("minimum"), f.metadata.get("maximum")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise UsageError(messages.BAD_VALUE.format(flag=label(f), reason=f"must be {bounds}, got {text}"))
    return value


def _takes_bare(f: dataclasses.Field, following: str | None) -> bool:
    """A flag with an optional value (`-fa [on|off|auto]`) stands alone when what follows is nothing,
    or another flag rather than one of its values."""
    if f.metadata.get("bare") is None:
        return False
    return following is None or (following.startswith("-") and following not in f.metadata["choices"])


@dataclasses.dataclass(frozen=True)
class ParsedLine:
    values: dict[str, Any]  # field name -> value, for the flags given
    show_help: bool
    show_version: bool


def parse_line(argv: Sequence[str], fields: Sequence[dataclasses.Field]) -> ParsedLine:
    """The values of the flags in `argv`. Raises UsageError (one line, exit 2) for an unknown flag, a
    missing value or a bad one."""
    by_flag: dict[str, tuple[dataclasses.Field, bool]] = {}
    for f in fields:
        for flag in f.metadata["flags"]:
            by_flag[flag] = (f, True)
        for flag in f.metadata.get("negations", ()):
            by_flag[flag] = (f, False)
    values: dict[str, Any] = {}
    show_help = show_version = False
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        name, attached = word, None
        if word.startswith("--") and "=" in word:
            name, attached = word.split("=", 1)
        if attached is None and name in HELP_FLAGS:
            show_help = True
            continue
        if attached is None and name in VERSION_FLAGS:
            show_version = True
            continue
        if name not in by_flag:
            raise UsageError(messages.UNKNOWN_FLAG.format(arg=word))
        f, positive = by_flag[name]
        kind = field_kind(f)
        if kind is bool:
            if attached is not None:
                raise UsageError(messages.BAD_VALUE.format(flag=name, reason=f"takes no value, got {attached!r}"))
            values[f.name] = positive
            continue
        if attached is None:
            following = words[i] if i < len(words) else None
            if _takes_bare(f, following):
                values[f.name] = f.metadata["bare"]
                continue
            if following is None:
                raise UsageError(messages.MISSING_VALUE.format(flag=label(f)))
            attached = following
            i += 1
        value = _convert(f, kind, attached)
        values[f.name] = values.get(f.name, ()) + (value,) if kind is tuple else value
    return ParsedLine(values, show_help, show_version)
