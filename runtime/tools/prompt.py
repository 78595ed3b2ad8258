"""The conversation and tools as a family's template wants them.

Templates with tool support get `tools` and the messages as transformers' apply_chat_template passes
them (assistant `tool_calls` with arguments as objects, `tool` messages with their `tool_call_id`).
Templates without (the generic family) get what llama.cpp's polyfills give them: the tools and the
answer format in the system prompt, earlier calls as the assistant's JSON, and tool results as user
turns."""

from __future__ import annotations

import json
from typing import Any

from .families import Family
from .spec import Tool, ToolChoice, ToolRequestError

GENERIC_INSTRUCTION = (
    "You can call the following tools to satisfy the user's request:\n{tools}\n\n"
    "Respond in JSON format: either {calls} to call tools, or "
    '{{"response": "..."}} to reply to the user directly.'
)
GENERIC_FORCED = "You can call the following tools:\n{tools}\n\nRespond in JSON format: {calls}."
CALLS_EXAMPLE = {True: '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}',
                 False: '{"tool_call": {"name": "<tool name>", "arguments": {<arguments>}}}'}


def _arguments_object(arguments: Any, param: str) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            raise ToolRequestError("a tool call's arguments must be JSON text", param) from None
    return arguments


def normalise_calls(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ToolRequestError("a tool call needs function.name", f"messages.{i}.tool_calls.{j}.function")
        calls.append({"id": str(call.get("id") or f"call_{i}_{j}"), "type": "function",
                      "function": {"name": function["name"],
                                   "arguments": _arguments_object(function.get("arguments", "{}"),
                                                                  f"messages.{i}.tool_calls.{j}.function.arguments")}})
    return calls


def template_messages(messages: list[dict[str, Any]], family: Family, choice: ToolChoice,
                      tools: tuple[Tool, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools for the template) from messages with role, content and, where present,
    tool_calls (OpenAI's shape), tool_call_id."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = normalise_calls(message, i)
            names.update((c["id"], c["function"]["name"]) for c in message["tool_calls"])
        else:
            message.pop("tool_calls", None)
        if message["role"] == "tool":
            if not message.get("tool_call_id"):
                raise ToolRequestError("a tool message needs tool_call_id", f"messages.{i}.tool_call_id")
            message.setdefault("name", names.get(message["tool_call_id"], ""))
        out.append(message)
    if family.native:
        return out, [t.openai() for t in tools] if choice.mode != "none" and tools else None
    return _polyfilled(out, choice), None


def _polyfilled(messages: list[dict[str, Any]], choice: ToolChoice) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"], "id": c["id"]}
                     for c in message["tool_calls"]]
            content = json.dumps({"tool_calls": calls} if len(calls) > 1 or choice.parallel
                                 else {"tool_call": calls[0]}, ensure_ascii=False)
            out.append({"role": "assistant", "content": content})
        elif message["role"] == "tool":
            result = json.dumps({"tool_response": {"tool": message.get("name", ""),
                                                   "tool_call_id": message["tool_call_id"],
                                                   "content": message.get("content", "")}}, ensure_ascii=False)
            if out and out[-1].get("tool_results"):  # one user turn for a batch of results: roles alternate
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        else:
            out.append({"role": message["role"], "content": message.get("content") or ""})
    for message in out:
        message.pop("tool_results", None)
    if choice.mode == "none" or not choice.tools:
        return out
    tools = json.dumps([t.openai()["function"] for t in choice.tools], indent=2, ensure_ascii=False)
    instruction = (GENERIC_FORCED if choice.forced else GENERIC_INSTRUCTION).format(
        tools=tools, calls=CALLS_EXAMPLE[choice.parallel])
    if out and out[0]["role"] == "system":
        return [{"role": "system", "content": f"{out[0]['content']}\n\n{instruction}"}, *out[1:]]
    return [{"role": "system", "content": instruction}, *out]
