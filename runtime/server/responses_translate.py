"""OpenAI's Responses API to and from the one chat path: a Responses body becomes a ChatCompletionRequest
(as llama.cpp's server does in `server_chat_convert_responses_to_chatcmpl`), and the chat's result
becomes a Responses object with its output items.

Fields this server cannot honour (built-in tools, background runs, conversations, stored prompts...)
are refused with a 400 naming them, never dropped: a client that asked for a web search must not
receive an answer that silently did none.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import messages
from .chat_core import ChatResult
from .errors import ApiError
from .schemas import ChatCompletionRequest


class ResponsesRequest(BaseModel):
    # Unknown fields are ignored, as for the other routes; the ones we know and cannot honour are below
    # and refused in `refuse_unsupported`.
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    # llama.cpp's extensions, as on /v1/chat/completions.
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None


def refuse_unsupported(body: ResponsesRequest) -> None:
    refused = {"background": messages.RESPONSES_BACKGROUND, "conversation": messages.RESPONSES_CONVERSATION,
               "prompt": messages.RESPONSES_PROMPT, "include": messages.RESPONSES_INCLUDE,
               "max_tool_calls": messages.RESPONSES_MAX_TOOL_CALLS, "top_logprobs": messages.RESPONSES_TOP_LOGPROBS}
    for name, message in refused.items():
        if getattr(body, name) not in (None, False, [], 0):
            raise ApiError(400, message, param=name, code="unsupported_parameter")
    if body.truncation == "auto":
        raise ApiError(400, messages.RESPONSES_TRUNCATION, param="truncation", code="unsupported_value")
    if body.reasoning and any(v is not None for k, v in body.reasoning.items() if k not in ("effort", "summary")):
        raise ApiError(400, messages.RESPONSES_REASONING, param="reasoning", code="unsupported_parameter")


# -- request -------------------------------------------------------------------------------------

def _text_of_parts(parts: list[Any], param: str, allowed: tuple[str, ...]) -> str:
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed or not isinstance(part.get("text"), str):
            raise ApiError(400, messages.RESPONSES_PART_TYPE.format(kind=kind, allowed=", ".join(allowed)),
                           param=f"{param}.{j}.type", code="unsupported_value")
        texts.append(part["text"])
    return "\n".join(texts)


MEDIA_PARTS = ("input_image", "input_audio")


def _media_parts(parts: list[Any], param: str) -> list[dict[str, Any]]:
    """A user message with images (or sounds) as chat-completions parts; chat_core reads the files."""
    out: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image":
            url = part.get("image_url")
            out.append({"type": "image_url", "image_url": {"url": url if isinstance(url, str) else ""}})
        elif kind == "input_audio":
            out.append({"type": "input_audio", "input_audio": part.get("input_audio")})
        else:
            out.append({"type": "text", "text": _text_of_parts([part], param, ("input_text",))})
    return out


def _content(value: Any, param: str, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _text_of_parts(value, param, allowed)
    raise ApiError(400, messages.RESPONSES_CONTENT, param=param)


def _required_str(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ApiError(400, messages.RESPONSES_NOT_A_STRING.format(param=f"{param}.{key}"), param=f"{param}.{key}")
    return value


def input_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses input items as chat-completions messages: function calls join the assistant turn
    before them, their outputs become tool messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    converted: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input.{i}"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ApiError(400, messages.RESPONSES_ROLE.format(role=role), param=f"{param}.role")
            allowed = ("output_text", "input_text") if role == "assistant" else ("input_text",)
            content = item.get("content")
            if role == "user" and isinstance(content, list) and any(
                    isinstance(p, dict) and p.get("type") in MEDIA_PARTS for p in content):
                converted.append({"role": role, "content": _media_parts(content, f"{param}.content")})
                continue
            converted.append({"role": role, "content": _content(content, f"{param}.content", allowed)})
        elif kind == "function_call":
            call = {"id": _required_str(item, "call_id", param), "type": "function",
                    "function": {"name": _required_str(item, "name", param),
                                 "arguments": _required_str(item, "arguments", param)}}
            last = converted[-1] if converted else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                converted.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            converted.append({"role": "tool", "tool_call_id": _required_str(item, "call_id", param),
                             "content": _content(item.get("output"), f"{param}.output", ("input_text",))})
        else:
            raise ApiError(400, messages.RESPONSES_ITEM_TYPE.format(kind=kind), param=f"{param}.type",
                           code="unsupported_value")
    return converted


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses' flat function tools to chat-completions' nested ones; any other tool is refused."""
    converted = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            raise ApiError(400, messages.RESPONSES_TOOL_TYPE.format(kind=kind), param=f"tools.{i}.type",
                           code="unsupported_value")
        function = {"name": _required_str(tool, "name", f"tools.{i}")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise ApiError(400, messages.RESPONSES_TOOL_CHOICE.format(choice=choice), param="tool_choice",
                           code="unsupported_value")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(400, messages.RESPONSES_TOOL_CHOICE.format(choice=choice.get("type")), param="tool_choice",
                   code="unsupported_value")


def text_format(text: dict[str, Any] | None) -> dict[str, Any]:
    """The request's `text.format`, checked, in the shape a Response echoes it."""
    fmt = (text or {}).get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ApiError(400, messages.RESPONSES_SCHEMA, param="text.format.schema")
        echoed = {"type": "json_schema", "name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                echoed[key] = fmt[key]
        return echoed
    raise ApiError(400, messages.RESPONSES_FORMAT_TYPE.format(kind=kind), param="text.format.type",
                   code="unsupported_value")


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    spec = {k: v for k, v in fmt.items() if k != "type"}
    return {"type": "json_schema", "json_schema": spec}


def chat_request(body: ResponsesRequest, history: list[dict[str, Any]],
                 new_messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    messages = ([{"role": "system", "content": body.instructions}] if body.instructions else []) + history \
        + new_messages
    fields: dict[str, Any] = {"messages": messages, "stream": body.stream,
                              "response_format": _response_format(text_format(body.text))}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("top_k", "top_k"), ("seed", "seed"),
                         ("parallel_tool_calls", "parallel_tool_calls")):
        if getattr(body, ours) is not None:
            fields[theirs] = getattr(body, ours)
    if body.tools:
        fields["tools"] = chat_tools(body.tools)
    if body.reasoning and body.reasoning.get("effort") is not None:  # the template's reasoning effort
        fields["reasoning_effort"] = body.reasoning["effort"]
    if body.tool_choice is not None:
        fields["tool_choice"] = chat_tool_choice(body.tool_choice)
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApiError(400, f"{where}: {first.get('msg', 'invalid value')}", param=where or None) from None


def responses_param(param: str | None) -> str | None:
    """A chat-completions field named in a refusal, as the Responses body calls it (`messages.3` has no
    counterpart index in `input`, whose instructions and stored turns come first)."""
    if param is None:
        return None
    if param.startswith("tools.") and ".function" in param:
        return param.replace(".function", "", 1)
    if param.split(".", 1)[0] == "messages":
        return "input"
    return {"response_format": "text.format", "max_tokens": "max_output_tokens"}.get(param, param)


# -- response ------------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [output_text_part(text)] if status != "in_progress" else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def status_of(finish_reason: str) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def response_object(response_id: str, created_at: int, model: str, body: ResponsesRequest, status: str,
                    output: list[dict[str, Any]], usage_: dict[str, Any] | None,
                    incomplete: dict[str, str] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    tools = [{"type": "function", "name": t["name"], "description": t.get("description"),
              "parameters": t.get("parameters"), "strict": t.get("strict")} for t in body.tools or []]
    tool_choice = body.tool_choice if body.tool_choice is not None else "auto"
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "model": model, "output": output, "error": error, "incomplete_details": incomplete,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {}, "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id, "temperature": body.temperature,
            "top_p": body.top_p, "tool_choice": tool_choice, "tools": tools,
            "text": {"format": text_format(body.text)}, "truncation": "disabled", "reasoning": None,
            "store": body.store is not False, "background": False, "user": body.user, "usage": usage_}


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """OpenAI's reasoning output item, its text as llama-server gives it (reasoning_text content)."""
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}],
            "status": status}


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    choice = result.choices[0]
    status, _ = status_of(choice.finish_reason)
    items = []
    if getattr(choice, "reasoning", ""):  # a thinking model's thought: a reasoning item first
        items.append(reasoning_item(new_id("rs"), choice.reasoning, status))
    if choice.text or not choice.tool_calls:
        items.append(message_item(new_id("msg"), choice.text or "", status))
    for call in choice.tool_calls:
        items.append(function_call_item(new_id("fc"), call.id, call.name, call.arguments, "completed"))
    return items


def history_of(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the assistant's turn, for the next request's conversation."""
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    thought = "".join(part["text"] for item in output if item["type"] == "reasoning" for part in item["content"])
    if thought:  # given back to the template, which keeps or drops it as the model expects
        message["reasoning_content"] = thought
    return [message]
