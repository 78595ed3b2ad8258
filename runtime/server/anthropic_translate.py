"""Anthropic's Messages API as a dialect of the one chat path: its request body becomes a
ChatCompletionRequest (chat_core's internal request, as llama.cpp's server converts an Anthropic body
to a chat-completions one), and a ChatResult or the core's events become Anthropic's message and its
server-sent events.

What the model cannot honour is refused with a 400 naming it, never dropped: image and document
blocks, extended thinking, Anthropic's server tools. A final assistant message is a prefill: the answer
continues it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import messages
from .chat_core import ChatResult, ChoiceResult
from .errors import ApiError
from .schemas import ChatCompletionRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
MEDIA_BLOCKS = ("image", "document")  # in a user turn an image is read (chat_core: media_parts.py)
TOOL_ERROR_PREFIX = "Error: "


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Block(_Body):
    """Any content block; each type's fields are checked where the block is translated, so that a
    refusal names the block (`messages.0.content.2`) rather than pydantic's union of every shape."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(_Body):
    type: str | None = None  # None or "custom": the client's own tool; anything else is a server tool
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Body):
    type: str
    budget_tokens: int | None = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    effort: str | None = None
    format: OutputFormat | None = None


class CountTokensRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None  # the structured-outputs beta's spelling of output_config.format


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)  # required, as Anthropic's API requires it
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    seed: int | None = None  # llama.cpp's extension, as on its other routes: a reproducible answer


def _refuse(message: str, param: str, **values: Any) -> ApiError:
    return ApiError(400, message.format(param=param, **values), param=param)


# -- requests ------------------------------------------------------------------------------------

def _text_of(block: Block, param: str) -> dict[str, str]:
    if block.type in MEDIA_BLOCKS:
        raise _refuse(messages.ANTHROPIC_MEDIA_BLOCK, param, kind=block.type)
    if block.type != "text" or block.text is None:
        raise _refuse(messages.ANTHROPIC_BLOCK_UNSUPPORTED, param, kind=block.type, allowed="text")
    return {"type": "text", "text": block.text}


def _image_part(block: Block, param: str) -> dict[str, Any]:
    """An image block as the chat core's image_url part (checked there, like OpenAI's): base64 as a data:
    URL; a `url` source passes as it is and is refused there, as every remote URL is."""
    source = (block.model_extra or {}).get("source")
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise _refuse(messages.ANTHROPIC_BLOCK_UNSUPPORTED, f"{param}.source", kind="image source", allowed="base64, url")
    url = source.get("url") if source["type"] == "url" else \
        f"data:{source.get('media_type') or 'image/*'};base64,{source.get('data') or ''}"
    return {"type": "image_url", "image_url": {"url": url if isinstance(url, str) else ""}}


def _texts(content: str | list[Block], param: str) -> str | list[dict[str, str]]:
    if isinstance(content, str):
        return content
    return [_text_of(block, f"{param}.{i}") for i, block in enumerate(content)]


def _tool_result(block: Block, param: str) -> dict[str, Any]:
    content = block.content if block.content is not None else ""
    text = content if isinstance(content, str) else "\n".join(
        part["text"] for part in _texts(content, f"{param}.content"))
    if block.is_error:
        # A chat template has no field for a failed call: the model reads it in the text.
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": block.tool_use_id or "", "content": text}


def _user_messages(content: str | list[Block], param: str) -> list[dict[str, Any]]:
    """A user turn's blocks in order: tool_result blocks become tool messages, each run of text
    blocks one user message (Anthropic puts the results first, where templates want them)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    texts: list[dict[str, str]] = []
    for i, block in enumerate(content):
        where = f"{param}.{i}"
        if block.type == "tool_result":
            if texts:
                out.append({"role": "user", "content": texts})
                texts = []
            out.append(_tool_result(block, where))
        elif block.type == "tool_use":
            raise _refuse(messages.ANTHROPIC_BLOCK_MISPLACED, where, kind="tool_use", role="assistant")
        elif block.type == "image":
            texts.append(_image_part(block, where))
        else:
            texts.append(_text_of(block, where))
    if texts or not out:
        out.append({"role": "user", "content": texts})
    return out


def _assistant_message(content: str | list[Block], param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[dict[str, str]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{param}.{i}"
        if block.type == "tool_use":
            calls.append({"id": block.id or "", "type": "function",
                          "function": {"name": block.name or "",
                                       "arguments": json.dumps(block.input or {}, ensure_ascii=False)}})
        elif block.type == "tool_result":
            raise _refuse(messages.ANTHROPIC_BLOCK_MISPLACED, where, kind="tool_result", role="user")
        else:
            texts.append(_text_of(block, where))
    message: dict[str, Any] = {"role": "assistant", "content": texts or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: CountTokensRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    choice = body.tool_choice
    if body.tools:
        tools = []
        for i, tool in enumerate(body.tools):
            if tool.type not in (None, "custom"):
                raise _refuse(messages.ANTHROPIC_SERVER_TOOL, f"tools.{i}", kind=tool.type)
            if tool.input_schema is None:
                raise _refuse(messages.ANTHROPIC_TOOL_SCHEMA, f"tools.{i}")
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
            if tool.description is not None:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
        fields["tools"] = tools
    if choice is None:
        return fields
    if choice.type in ("any", "tool") and not body.tools:
        raise _refuse(messages.ANTHROPIC_TOOL_CHOICE_NO_TOOLS, "tool_choice", kind=choice.type)
    if choice.type == "tool":
        if choice.name not in {tool.name for tool in body.tools or ()}:
            raise _refuse(messages.ANTHROPIC_TOOL_CHOICE_NAME, "tool_choice.name", name=choice.name)
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif body.tools:
        fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use is not None and body.tools:
        fields["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return fields


def chat_fields(body: CountTokensRequest) -> dict[str, Any]:
    """The chat-completions body (as a dict) that says what `body` says."""
    if body.thinking is not None and body.thinking.type not in ("enabled", "disabled", "adaptive"):
        raise _refuse(messages.ANTHROPIC_THINKING, "thinking")
    chat: list[dict[str, Any]] = []
    if body.system is not None:
        chat.append({"role": "system", "content": _texts(body.system, "system")})
    for i, message in enumerate(body.messages):
        if message.role == "user":
            chat.extend(_user_messages(message.content, f"messages.{i}.content"))
        else:
            chat.append(_assistant_message(message.content, f"messages.{i}.content"))
    fields: dict[str, Any] = {"messages": chat, **_tools(body)}
    if body.thinking is not None:  # llama.cpp's chat template variable, as llama-server maps it
        fields["chat_template_kwargs"] = {"enable_thinking": body.thinking.type != "disabled"}
        if body.thinking.type == "enabled" and body.thinking.budget_tokens is not None:
            fields["thinking_budget_tokens"] = body.thinking.budget_tokens
    config = body.output_config or OutputConfig()
    if config.effort is not None:
        raise _refuse(messages.ANTHROPIC_EFFORT, "output_config.effort")
    output_format = body.output_format or config.format
    if output_format is not None:
        # Structured outputs: the same JSON-schema grammar as OpenAI's response_format.
        fields["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "output", "schema": output_format.schema_}}
    if body.messages[-1].role == "assistant":
        # Anthropic's prefill: the answer continues the assistant's text, its turn left open.
        fields["continue_final_message"] = True
    if isinstance(body, MessagesRequest):
        fields["max_tokens"] = body.max_tokens
        fields["stream"] = body.stream
        for name in ("temperature", "top_p", "top_k", "seed"):
            if getattr(body, name) is not None:
                fields[name] = getattr(body, name)
        if body.stop_sequences:
            fields["stop"] = body.stop_sequences
    else:
        fields["max_tokens"] = 1  # counting only: nothing is generated
    return fields


def chat_request(body: CountTokensRequest) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(chat_fields(body))


# -- responses -----------------------------------------------------------------------------------

def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def usage(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic counts the prompt in parts: input_tokens + cache_read_input_tokens is the whole of
    it (what count_tokens says); tokens read back from the server's prompt cache are the second."""
    return {"input_tokens": prompt_tokens - cached_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": cached_tokens, "cache_creation_input_tokens": 0}


def stop_fields(finish_reason: str, matched: str | None, stop_sequences: list[str] | None) -> dict[str, str | None]:
    """`matched`: the stop string that ended the answer, if the core says; only the client's own are a
    stop_sequence (the template's end-of-turn marker is the end of a turn)."""
    if finish_reason == "stop" and matched is not None and matched in (stop_sequences or ()):
        return {"stop_reason": "stop_sequence", "stop_sequence": matched}
    return {"stop_reason": STOP_REASONS.get(finish_reason, "end_turn"), "stop_sequence": None}


def tool_input(arguments: str) -> dict[str, Any]:
    """The core's argument text, always a JSON object (its grammars make it so), as Anthropic's input."""
    value = json.loads(arguments or "{}")
    if not isinstance(value, dict):
        raise TypeError(f"tool call arguments are not a JSON object: {arguments!r}")
    return value


def content_blocks(choice: ChoiceResult) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if getattr(choice, "reasoning", ""):  # a thinking model's thought, first, as Anthropic's thinking block
        blocks.append({"type": "thinking", "thinking": choice.reasoning, "signature": ""})
    if choice.text or not choice.tool_calls:
        # An empty answer is still one (empty) text block: clients read content[0].text.
        blocks.append({"type": "text", "text": choice.text or ""})
    for call in choice.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)})
    return blocks


def message(result: ChatResult, model: str, stop_sequences: list[str] | None) -> dict[str, Any]:
    choice = result.choices[0]
    return {"id": new_message_id(), "type": "message", "role": "assistant", "model": model,
            "content": content_blocks(choice),
            # getattr: the core's results name the matched stop string once it reports one.
            **stop_fields(choice.finish_reason, getattr(choice, "stop_sequence", None), stop_sequences),
            "usage": usage(result.prompt_tokens, result.cached_tokens, choice.completion_tokens)}


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """Anthropic names every event in an `event:` line, and repeats the name as the data's type."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
