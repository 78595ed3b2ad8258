"""What the values of llama.cpp's flags mean, and the checks between flags, done once at parse time.

Pure Python (no llama.cpp): the settings module uses it before any mode starts, so a bad value is one
line and exit 2 before the model loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .. import messages
from ..engine.types import KV_CACHE_TYPES, QUANTIZED_CACHE_TYPES
from ..errors import UsageError, UserError

if TYPE_CHECKING:
    from .settings import Settings

# common/arg.cpp's is_truthy / is_falsey / is_autoy, as `-fa` reads them.
FLASH_ATTN_VALUES = {
    "on": "on", "enabled": "on", "true": "on", "1": "on",
    "off": "off", "disabled": "off", "false": "off", "0": "off",
    "auto": "auto", "-1": "auto",
}
CACHE_TYPE_VALUES = {name: name for name in KV_CACHE_TYPES}

_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"', ord("\\"): b"\\"}
_HEX = b"0123456789abcdefABCDEF"


def process_escapes(text: str) -> str:
    """llama.cpp's string_process_escapes: \\n \\r \\t \\' \\" \\\\ and \\xNN (a byte); any other
    backslash stays as typed."""
    data, out, i = text.encode("utf-8", "surrogateescape"), bytearray(), 0
    while i < len(data):
        if data[i] == ord("\\") and i + 1 < len(data):
            code = data[i + 1]
            if code in _ESCAPES:
                out += _ESCAPES[code]
                i += 2
                continue
            if code == ord("x") and i + 3 < len(data) and all(c in _HEX for c in data[i + 2:i + 4]):
                out.append(int(data[i + 2:i + 4], 16))
                i += 4
                continue
            out += data[i:i + 2]
            i += 2
            continue
        out.append(data[i])
        i += 1
    return out.decode("utf-8", "replace")


def schema_grammar(text: str) -> str:
    """-j's JSON schema as a GBNF grammar, through the converter the server uses for response_format."""
    from ..grammar.json_schema import json_schema_grammar

    label = "-j/--json-schema"
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise UsageError(messages.BAD_VALUE.format(flag=label, reason=f"not valid JSON ({exc})")) from None
    try:
        return json_schema_grammar(schema)
    except RecursionError:
        raise UsageError(messages.BAD_VALUE.format(flag=label, reason="the schema is nested too deeply")) from None
    except ValueError as exc:  # SchemaUnsupported, a ValueError: says which keyword or bound
        raise UsageError(messages.BAD_VALUE.format(flag=label, reason=str(exc))) from None


def rpc_endpoints(text: str) -> tuple[str, ...]:
    """--rpc's HOST:PORT list, as ggml-rpc's parse_endpoint reads each (the host before the first ':',
    so no IPv6 literals), checked here: ggml-rpc aborts the process on an endpoint it cannot parse."""
    endpoints = tuple(part.strip() for part in text.split(","))
    for endpoint in endpoints:
        host, _, port = endpoint.partition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(messages.BAD_VALUE.format(flag="--rpc", reason=f"expected HOST:PORT, got {endpoint!r}"))
    if len(set(endpoints)) != len(endpoints):
        raise UsageError(messages.BAD_VALUE.format(flag="--rpc", reason="an address is given twice"))
    return endpoints


def tensor_split(text: str) -> tuple[float, ...]:
    """-ts's proportions, split on ',' or '/' as llama.cpp's --tensor-split."""
    parts = [part for part in re.split(r"[,/]+", text) if part.strip()]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or not any(values):
        raise UsageError(messages.BAD_VALUE.format(
            flag="-ts/--tensor-split", reason=f"expected proportions such as 3,1, got {text!r}"))
    return values


def device_names(text: str) -> tuple[str, ...]:
    """-dev's names, split on ',' (and '/', as rpc-server's -d); () for none."""
    names = tuple(name.strip() for name in re.split(r"[,/]+", text) if name.strip())
    if not names:
        raise UsageError(messages.BAD_VALUE.format(flag="-dev/--device", reason="no device named"))
    return () if names == ("none",) else names


def resolve(settings: Settings) -> Settings:
    """The settings as the modes use them: escapes processed, -j turned into a grammar, and the
    combinations llama.cpp would refuse (or crash on) refused in one line."""
    changes: dict[str, object] = {}
    if settings.escape:
        if settings.prompt is not None:
            changes["prompt"] = process_escapes(settings.prompt)
        if settings.reverse_prompt:
            changes["reverse_prompt"] = tuple(process_escapes(r) for r in settings.reverse_prompt)
    if settings.chat_template_file is not None:
        if settings.chat_template is not None:
            raise UsageError(messages.CHAT_TEMPLATE_TWICE)
        changes["chat_template"] = read_template_file(settings.chat_template_file)
    if settings.json_schema is not None:
        if settings.grammar is not None or settings.grammar_file is not None:
            raise UsageError(messages.GRAMMAR_AND_SCHEMA)
        changes["grammar"] = schema_grammar(settings.json_schema)
    if settings.ignore_eos and (settings.grammar is not None or settings.grammar_file is not None
                                or settings.json_schema is not None):
        # A grammar whose document is complete admits only the end of generation; with that ruled
        # out nothing is left, and llama.cpp's grammar aborts the process on the next token.
        raise UsageError(messages.IGNORE_EOS_WITH_GRAMMAR)
    if settings.cache_type_v in QUANTIZED_CACHE_TYPES and settings.flash_attn == "off":
        raise UsageError(messages.QUANTIZED_V_NEEDS_FLASH_ATTN.format(type=settings.cache_type_v))
    if settings.keep != -1:
        raise UsageError(messages.KEEP_UNSUPPORTED.format(value=settings.keep))
    if settings.rpc is not None:
        if settings.rpc_server:
            raise UsageError(messages.RPC_WORKER_WITH_RPC)
        rpc_endpoints(settings.rpc)
    if settings.tensor_split is not None:
        tensor_split(settings.tensor_split)
    if settings.device is not None:
        device_names(settings.device)
    if settings.rpc_server and settings.port == 0:
        raise UsageError(messages.RPC_WORKER_PORT_ZERO)
    return dataclasses.replace(settings, **changes) if changes else settings


def read_template_file(path: str) -> str:
    """--chat-template-file's text: the template a user wrote, so every way of failing to read it is one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(messages.CHAT_TEMPLATE_FILE_UNREADABLE.format(path=path, reason=exc.strerror)) from None
    except UnicodeDecodeError:
        raise UserError(messages.CHAT_TEMPLATE_FILE_UNREADABLE.format(path=path, reason="not UTF-8 text")) from None
    if not text.strip():
        raise UserError(messages.CHAT_TEMPLATE_FILE_UNREADABLE.format(path=path, reason="the file is empty"))
    return text


def verbose_prompt_line(text: str, n_tokens: int) -> str:
    """--verbose-prompt's log line: the prompt as a JSON string (exact: newlines and special tokens
    visible, on one line) and its token count."""
    return messages.VERBOSE_PROMPT.format(n_tokens=n_tokens, text=json.dumps(text, ensure_ascii=False))
