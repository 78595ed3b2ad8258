"""GBNF for tool calls: each family's envelope around one JSON object per call, whose name is one of
the tools' and whose arguments match that tool's JSON Schema (through runtime/grammar/json_schema.py).

Every repetition is bounded, and a grammar always ends: once it is complete only end-of-generation is
possible, so a forced call ends the generation (the caller makes sure end-of-generation is not banned).
"""

from __future__ import annotations

import copy
from typing import Any

from ..grammar.json_schema import SchemaUnsupported, json_schema_grammar
from .spec import Tool, ToolRequestError

MAX_PARALLEL = 8  # calls in one answer
SP = "[ \\t\\n]{0,4}"


def call_schema(tools: tuple[Tool, ...], arguments_key: str = "arguments") -> dict[str, Any]:
    """One schema for `{"name": ..., "<arguments_key>": ...}` over all tools. Each tool's local `$defs`
    move to the root, as its `#/$defs/...` references now resolve against the whole schema."""
    defs: dict[str, Any] = {}
    variants = []
    for tool in tools:
        parameters = copy.deepcopy(tool.parameters)
        for key in ("$defs", "definitions"):
            if isinstance(parameters.get(key), dict):
                defs.setdefault(key, {}).update(parameters.pop(key))
        variants.append({"type": "object", "properties": {"name": {"const": tool.name}, arguments_key: parameters},
                         "required": ["name", arguments_key]})
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {**schema, **defs}


def _grammar(schema: dict[str, Any]) -> tuple[str, str]:
    """(the expression of the schema's root, the rest of its rules)."""
    try:
        text = json_schema_grammar(schema)
    except SchemaUnsupported as exc:
        raise ToolRequestError(f"unsupported JSON schema in tools: {exc}", "tools") from None
    first, rest = text.split("\n", 1)
    return first.removeprefix("root ::= "), rest


def _repeat(item: str, separator: str, parallel: bool) -> str:
    return f"{item} ({separator} {item}){{0,{MAX_PARALLEL - 1}}}" if parallel else item


def hermes_grammar(tools: tuple[Tool, ...], parallel: bool) -> str:
    call, rules = _grammar(call_schema(tools))
    return (f"root ::= {_repeat('tool-call', SP, parallel)}\n"
            f"tool-call ::= \"<tool_call>\" {SP} {call} {SP} \"</tool_call>\"\n" + rules)


def mistral_grammar(tools: tuple[Tool, ...], parallel: bool) -> str:
    call, rules = _grammar(call_schema(tools))
    calls = _repeat(call, f'{SP} "," {SP}', parallel)
    return f'root ::= "[TOOL_CALLS]" {SP} "[" {SP} {calls} {SP} "]"\n' + rules


def llama3_grammar(tools: tuple[Tool, ...]) -> str:
    # Llama 3.1's template renders one call per assistant turn: no parallel calls.
    call, rules = _grammar(call_schema(tools, "parameters"))
    return f"root ::= {SP} (\"<|python_tag|>\" {SP})? {call}\n" + rules


def generic_schema(tools: tuple[Tool, ...], parallel: bool, forced: bool,
                   response: dict[str, Any] | None = None) -> dict[str, Any]:
    call = call_schema(tools)
    defs = {k: call.pop(k) for k in ("$defs", "definitions") if k in call}
    if parallel:
        calls = {"type": "object", "required": ["tool_calls"],
                 "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                               "maxItems": MAX_PARALLEL}}}
    else:
        calls = {"type": "object", "required": ["tool_call"], "properties": {"tool_call": call}}
    if forced:
        return {**calls, **defs}
    answer = {"type": "object", "required": ["response"], "properties": {"response": response or {"type": "string"}}}
    return {"anyOf": [calls, answer], **defs}


def generic_grammar(tools: tuple[Tool, ...], parallel: bool, forced: bool) -> str:
    expression, rules = _grammar(generic_schema(tools, parallel, forced))
    return f"root ::= {expression}\n" + rules
