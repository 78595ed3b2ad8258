"""Tool calls read back from a model's output, in each family's syntax:

- hermes (Hermes 2 Pro, Qwen 2.5+): text, then `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, repeated;
- llama3 (Llama 3.1+): the whole answer is `{"name": ..., "parameters": {...}}`, maybe after `<|python_tag|>`;
- mistral (Mistral v0.3, Nemo): text, then `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`;
- generic (templates without tools): the whole answer is `{"tool_calls": [...]}`, `{"tool_call": {...}}` or
  `{"response": ...}`.

Output that does not parse as calls is text: a parser returns None and the answer is the model's words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_decoder = json.JSONDecoder()
WHITESPACE = " \t\n\r"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text


@dataclass
class Parsed:
    content: str
    calls: list[ParsedCall] = field(default_factory=list)


def _json_at(text: str, pos: int) -> tuple[Any, int]:
    while pos < len(text) and text[pos] in WHITESPACE:
        pos += 1
    return _decoder.raw_decode(text, pos)


def _call(obj: Any, *arguments_keys: str) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    for key in arguments_keys:
        if key in obj:
            arguments = obj[key]
            if isinstance(arguments, str):  # some models write the arguments as a JSON string
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    return None
            if not isinstance(arguments, dict):
                return None
            return ParsedCall(obj["name"], json.dumps(arguments, ensure_ascii=False))
    return None


def parse_hermes(text: str) -> Parsed | None:
    start = text.find("<tool_call>")
    if start < 0:
        return None
    calls, pos = [], start
    try:
        while True:
            obj, pos = _json_at(text, pos + len("<tool_call>"))
            call = _call(obj, "arguments", "parameters")
            rest = text[pos:].lstrip(WHITESPACE)
            if call is None or not rest.startswith("</tool_call>"):
                return None
            calls.append(call)
            rest = rest[len("</tool_call>"):].lstrip(WHITESPACE)
            if not rest:
                return Parsed(text[:start], calls)
            if not rest.startswith("<tool_call>"):
                return None
            pos = len(text) - len(rest)
    except ValueError:
        return None


def parse_mistral(text: str) -> Parsed | None:
    start = text.find("[TOOL_CALLS]")
    if start < 0:
        return None
    try:
        items, pos = _json_at(text, start + len("[TOOL_CALLS]"))
    except ValueError:
        return None
    items = items if isinstance(items, list) else [items]
    calls = [_call(item, "arguments", "parameters") for item in items]
    if not calls or None in calls or text[pos:].strip(WHITESPACE):
        return None
    return Parsed(text[:start], calls)  # type: ignore[arg-type]


def parse_llama3(text: str) -> Parsed | None:
    body = text.lstrip(WHITESPACE).removeprefix("<|python_tag|>")
    calls = []
    pos = 0
    try:
        while True:
            obj, pos = _json_at(body, pos)
            call = _call(obj, "parameters", "arguments")
            if call is None:
                return None
            calls.append(call)
            rest = body[pos:].lstrip(WHITESPACE + ";")
            if not rest:
                return Parsed("", calls)
            pos = len(body) - len(rest)
    except ValueError:
        return None


def parse_generic(text: str) -> Parsed | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "tool_calls" in obj or "tool_call" in obj:
        items = obj.get("tool_calls", [obj.get("tool_call")])
        calls = [_call(item, "arguments", "parameters") for item in (items if isinstance(items, list) else [])]
        return Parsed("", calls) if calls and None not in calls else None  # type: ignore[arg-type]
    if "response" in obj:
        response = obj["response"]
        return Parsed(response if isinstance(response, str) else json.dumps(response, ensure_ascii=False))
    return None


def held_back(text: str, marker: str) -> int:
    """How much of `text` may be shown now: all of it up to `marker`, or up to a possible start of it."""
    found = text.find(marker)
    if found >= 0:
        return found
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return len(text) - size
    return len(text)
