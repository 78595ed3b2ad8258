"""The chat path through llama.cpp's own chat library (runtime/formats/llama_chat.py), as llama-server
runs it: the prompt rendered with the template's real inputs (tools, earlier calls and reasoning,
thinking on or off, the reasoning effort), the tool-call grammar and its lazy triggers, and the output
parsed as it streams into content, reasoning and tool calls (arguments as they are generated), for
every format llama.cpp knows.

The server's controls are llama-server's: --reasoning-format, -rea, --reasoning-effort,
--chat-template-kwargs; per request reasoning_format, reasoning_effort, chat_template_kwargs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from .. import messages
from ..engine.types import GenerationRequest
from ..flags.settings import Settings
from ..formats.chat_template import tokenize_prompt_text
from ..formats.llama_chat import (TRIGGER_PATTERN, TRIGGER_PATTERN_FULL, TRIGGER_TOKEN, TRIGGER_WORD, Applied,
                                  ChatFormatError, ChatStream, LlamaChat)
from ..tools.spec import ToolRequestError, parse_tools, tool_choice
from . import translate as tr
from .errors import ApiError
from .schemas import ChatCompletionRequest

log = logging.getLogger(__name__)
REASONING_FORMATS = ("auto", "deepseek", "deepseek-legacy", "none")


def server_template_kwargs(settings: Settings) -> dict[str, Any]:
    """llama-server's default template variables: preserve_reasoning, -rea's enable_thinking,
    --reasoning-effort, then --chat-template-kwargs (checked at start: a JSON object)."""
    kwargs: dict[str, Any] = {"preserve_reasoning": True}
    if settings.reasoning in ("on", "off"):
        kwargs["enable_thinking"] = settings.reasoning == "on"
    if settings.reasoning_effort and settings.reasoning_effort != "default":
        kwargs["reasoning_effort"] = settings.reasoning_effort
    if settings.chat_template_kwargs:
        kwargs.update(parse_kwargs(settings.chat_template_kwargs))
    return kwargs


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError("--chat-template-kwargs must be a JSON object")
    return value


def _messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for message in body.messages:
        entry = message.model_dump(exclude_none=True)
        if isinstance(message.content, list):
            entry["content"] = [part.model_dump(exclude_none=True) for part in message.content]
        out.append(entry)
    return out


def chat_request(settings: Settings, chat: LlamaChat, body: ChatCompletionRequest) -> dict[str, Any]:
    """The body llama.cpp's chat library gets: the client's conversation and options, checked by the
    schema (types) and by the library itself (anything it cannot render is a 400)."""
    fmt = body.reasoning_format if body.reasoning_format is not None else settings.reasoning_format
    if fmt not in REASONING_FORMATS:
        raise ApiError(400, f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}", param="reasoning_format")
    effort = body.reasoning_effort
    if effort is not None and not isinstance(effort, str):
        raise ApiError(400, "reasoning_effort must be a string", param="reasoning_effort")
    request: dict[str, Any] = {
        "messages": _messages(body),
        "add_generation_prompt": body.add_generation_prompt,
        "reasoning_format": fmt,
        "enable_thinking": settings.reasoning != "off" and chat.supports_thinking,
        "chat_template_kwargs": {**server_template_kwargs(settings), **(body.chat_template_kwargs or {})},
    }
    # A last assistant message is continued when asked (continue_final_message, or no generation
    # prompt), else closed and answered: OpenAI's reading, not llama-server's prefill by default.
    request["prefill_assistant"] = body.continue_final_message or not body.add_generation_prompt
    if body.continue_final_message:
        if body.messages[-1].role != "assistant":
            raise ApiError(400, "continue_final_message needs an assistant message with text last in messages",
                           param="continue_final_message")
        request["continue_final_message"] = True
        if "add_generation_prompt" not in body.model_fields_set:  # one asked for, the other left out
            request["add_generation_prompt"] = False
    if body.tools:
        request["tools"] = body.tools
        request["tool_choice"] = body.tool_choice if body.tool_choice is not None else "auto"
        if body.parallel_tool_calls is not None:
            request["parallel_tool_calls"] = body.parallel_tool_calls
    if isinstance(request.get("tool_choice"), dict):  # a named function: llama.cpp's "required" with that one tool
        name = (request["tool_choice"].get("function") or {}).get("name")
        request["tools"] = [t for t in body.tools or [] if (t.get("function") or {}).get("name") == name]
        if not request["tools"]:
            raise ApiError(400, f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
        request["tool_choice"] = "required"
    if effort:
        request["reasoning_effort"] = effort
    return request


@dataclass(frozen=True)
class Prepared:
    text: str
    applied: Applied
    grammar: str | None
    triggers: tuple[str, ...]
    stops: tuple[str, ...]


def prepare(settings: Settings, chat: LlamaChat, body: ChatCompletionRequest) -> Prepared:
    """The prompt and what generating and reading its answer needs; ApiError 400 for what the
    template or llama.cpp refuses. Blocking."""
    tr.chat_messages(body)  # refuses content parts other than text, as the other path does
    try:  # the tools, the choice and the tool messages checked as on every path (runtime/tools/spec.py)
        tool_choice(parse_tools(body.tools), body.tool_choice, body.parallel_tool_calls)
    except ToolRequestError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    for i, message in enumerate(body.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise ApiError(400, "a tool message needs tool_call_id", param=f"messages.{i}.tool_call_id")
    if body.tools and body.tool_choice != "none" and (body.json_schema is not None or body.grammar
                                                      or (body.response_format and body.response_format.type != "text")):
        raise ApiError(400, "response_format and grammar cannot be combined with tools: the tool calls "
                       "have their own grammar", param="response_format" if body.response_format else "grammar")
    try:
        applied = chat.apply(chat_request(settings, chat, body))
    except ChatFormatError as exc:  # the template's own refusal, or what llama.cpp's chat library cannot read
        raise ApiError(400, messages.TEMPLATE_REJECTED.format(reason=exc), param="messages") from None
    grammar = applied.grammar or None
    triggers = tuple(_pattern(t) for t in applied.grammar_triggers) if grammar and applied.grammar_lazy else ()
    return Prepared(applied.prompt, applied, grammar, tuple(t for t in triggers if t), tuple(applied.additional_stops))


def _pattern(trigger: dict[str, Any]) -> str:
    """A llama.cpp grammar trigger as the pattern our lazy grammar takes (common/sampling.cpp does the same)."""
    kind, value = trigger.get("type"), str(trigger.get("value", ""))
    if kind in (TRIGGER_WORD, TRIGGER_TOKEN):
        return re.escape(value)
    if kind == TRIGGER_PATTERN_FULL:
        return ("" if value.startswith("^") else "^") + value + ("" if value.endswith("$") else "$")
    return value if kind == TRIGGER_PATTERN else ""


def formats_request(state: Any, engine: Any, holder: Any, body: ChatCompletionRequest, formats: Prepared,
                    log_prompt: Any) -> GenerationRequest:
    """The generation for a prepared chat: its tokens, the client's sampling, the tool-call grammar and
    its lazy triggers, the format's stop strings. Raises what the other path raises."""
    tokens = engine.tokenize(formats.text, *tokenize_prompt_text(formats.text, engine.bos_token))
    engine.check_fits(len(tokens))
    tr.check_logit_bias(engine, body)
    log_prompt(state.settings, engine, tokens)
    plain = body.model_copy(update={"n": None, "reasoning_effort": None})  # the effort went to the template
    generation_request = tr.chat_generation_request(state.settings, state.base_sampling, holder.formatter, plain, tokens)
    sampling = generation_request.sampling
    if formats.grammar is not None and sampling.grammar != state.base_sampling.grammar:
        raise ApiError(400, "response_format and grammar cannot be combined with tools: the tool calls "
                       "have their own grammar", param="response_format" if body.response_format else "grammar")
    if formats.grammar is not None and not state.base_sampling.grammar:
        # (--grammar, given at start, constrains every answer: it stays, tools or not.)
        engine.check_grammar(formats.grammar)
        sampling = dataclasses.replace(sampling, grammar=formats.grammar, grammar_triggers=formats.triggers,
                                       ignore_eos=False,
                                       grammar_prefill="" if formats.triggers else formats.applied.generation_prompt)
    elif sampling.grammar != state.base_sampling.grammar:
        engine.check_grammar(sampling.grammar)
    budget = next((b for b in (body.reasoning_budget_tokens, body.thinking_budget_tokens) if b not in (None, -1)),
                  state.settings.reasoning_budget)
    applied = formats.applied
    if budget >= 0 and applied.thinking_end_tags and applied.thinking_start_tag:
        message = body.reasoning_budget_message if body.reasoning_budget_message is not None \
            else state.settings.reasoning_budget_message or ""
        sampling = dataclasses.replace(sampling, reasoning_budget=json.dumps({
            "start": applied.thinking_start_tag, "ends": applied.thinking_end_tags, "message": message,
            "budget": budget, "prefill": applied.generation_prompt}))
    stops = tuple(dict.fromkeys([*generation_request.stop, *formats.stops]))
    return dataclasses.replace(generation_request, sampling=sampling, stop=stops)


class ChoiceParser:
    """One choice's output read as it streams: ("reasoning", text), ("content", text),
    ("call", index, id, name), ("args", index, fragment), as llama-server streams them."""

    def __init__(self, applied: Applied, streaming: bool) -> None:
        self._stream: ChatStream = applied.stream(streaming=streaming)
        self._streaming = streaming
        self._held: list[str] = []
        self.calls = 0

    def _events(self, diffs: list[dict[str, Any]]) -> list[tuple]:
        out: list[tuple] = []
        for d in diffs:
            if d.get("reasoning_content"):
                out.append(("reasoning", d["reasoning_content"]))
            if d.get("content"):
                out.append(("content", d["content"]))
            if "index" in d:
                if d.get("name"):
                    out.append(("call", d["index"], d.get("id") or f"call_{d['index']}", d["name"]))
                    self.calls = max(self.calls, d["index"] + 1)
                if d.get("arguments"):
                    out.append(("args", d["index"], d["arguments"]))
        return out

    def feed(self, text: str) -> list[tuple]:
        if not self._streaming:  # a whole answer is parsed once, at its end, as llama-server does
            self._held.append(text)
            return []
        return self._events(self._stream.feed(text)) if text else []

    def finish(self) -> list[tuple]:
        try:
            events = self._events(self._stream.finish("".join(self._held)))
        except ChatFormatError as exc:
            # Output the format cannot read (llama-server answers an error): a whole answer keeps its
            # words as text; a stream has already sent what could be read.
            log.warning("%s", exc)
            self._stream.close()
            return [("content", "".join(self._held))] if not self._streaming and any(self._held) else []
        self._stream.close()
        return events
