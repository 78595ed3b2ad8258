"""OpenAI request bodies to the engine's GenerationRequest, and the engine's pieces back to OpenAI's
response shapes (chat and text completions, plain and streamed)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..chat_template import ChatFormatter, tokenize_prompt_text
from ..engine.interface import ServingEngine
from ..engine.types import GenerationRequest, Piece, SamplingParams, TokenLogprob
from ..flags.settings import Settings
from ..grammar.check import GrammarRefused, check_grammar
from ..grammar.json_schema import (
    SchemaUnsupported,
    json_object_grammar,
    json_schema_grammar,
)
from .errors import ApiError
from .schemas import ChatCompletionRequest, CompletionRequest, SamplingFields

FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- requests ------------------------------------------------------------------------------------

def chat_messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    """Messages as the chat template wants them: role and plain-text content."""
    messages = []
    for i, message in enumerate(body.messages):
        if message.role == "tool":
            raise ApiError(400, "tool messages are not supported (this server does no tool calling)",
                           param=f"messages.{i}.role")
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise ApiError(400, f"content parts of type {part.type!r} are not supported: only text",
                                   param=f"messages.{i}.content.{j}.type")
                texts.append(part.text)
            content = "\n".join(texts)
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": content or ""})
    return messages


def chat_prompt_tokens(engine: ServingEngine, formatter: ChatFormatter, body: ChatCompletionRequest) -> list[int]:
    text = formatter.render(chat_messages(body))
    add_special, parse_special = tokenize_prompt_text(text, engine.bos_token)
    return engine.tokenize(text, add_special, parse_special)


def completion_prompt_tokens(engine: ServingEngine, body: CompletionRequest) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise ApiError(400, "only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise ApiError(400, "the prompt is empty", param="prompt")
        return engine.tokenize(prompt, add_special=True, parse_special=True)
    if not prompt:
        raise ApiError(400, "the prompt is empty", param="prompt")
    return check_token_ids(engine, prompt, "prompt")


def check_token_ids(engine: ServingEngine, tokens: Sequence[int], param: str) -> list[int]:
    n_vocab = engine.n_vocab
    for i, token in enumerate(tokens):
        if not 0 <= token < n_vocab:
            raise ApiError(400, f"token id {token} is out of range: this model's vocabulary has {n_vocab} tokens",
                           param=f"{param}.{i}")
    return list(tokens)


def _check_common(body: SamplingFields) -> None:
    if body.n not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n")


def response_grammar(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return body.grammar
    try:
        if fmt.type == "json_object":
            grammar = json_schema_grammar(fmt.schema_) if fmt.schema_ else json_object_grammar()
        elif fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise ApiError(400, "response_format of type json_schema needs json_schema.schema",
                           param="response_format.json_schema")
        else:
            grammar = json_schema_grammar(fmt.json_schema.schema_)
        check_grammar(grammar)  # a schema's grammar may still be too big for llama.cpp
    except (SchemaUnsupported, GrammarRefused) as exc:
        raise ApiError(400, f"unsupported JSON schema: {exc}", param="response_format.json_schema.schema") from None
    return grammar


def generation_request(settings: Settings, base: SamplingParams, body: SamplingFields, tokens: list[int],
                       max_tokens: int | None, grammar: str | None, extra_stop: Sequence[str],
                       logprobs: int | None) -> GenerationRequest:
    _check_common(body)
    overrides: dict[str, Any] = {}
    for name, field_name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                             ("min_p", "min_p"), ("presence_penalty", "presence_penalty"),
                             ("frequency_penalty", "frequency_penalty"), ("repeat_penalty", "repeat_penalty"),
                             ("seed", "seed")):
        value = getattr(body, field_name)
        if value is not None:
            overrides[name] = value
    if grammar is not None:
        overrides["grammar"] = grammar
    sampling = dataclasses.replace(base, **overrides)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return GenerationRequest(tuple(tokens), settings.n_predict if max_tokens is None else max_tokens,
                             sampling, tuple(dict.fromkeys([*stop, *extra_stop])), logprobs)


def chat_generation_request(settings: Settings, base: SamplingParams, formatter: ChatFormatter,
                            body: ChatCompletionRequest, tokens: list[int]) -> GenerationRequest:
    if body.tools and body.tool_choice != "none":
        raise ApiError(400, "tools are not supported (this server does no tool calling)", param="tools")
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return generation_request(settings, base, body, tokens, max_tokens, response_grammar(body),
                              formatter.stop, logprobs)


def completion_generation_request(settings: Settings, base: SamplingParams, body: CompletionRequest,
                                  tokens: list[int]) -> GenerationRequest:
    if body.suffix:
        raise ApiError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
    if body.best_of not in (None, 1):
        raise ApiError(400, "only best_of=1 is supported", param="best_of")
    return generation_request(settings, base, body, tokens, body.max_tokens, body.grammar, (), body.logprobs)


# -- responses -----------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _token_entry(engine: ServingEngine, token: int, logprob: float) -> dict[str, Any]:
    raw = engine.token_bytes(token)
    return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}


def chat_logprobs(engine: ServingEngine, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    content = []
    for lp in logprobs:
        entry = _token_entry(engine, lp.token_id, lp.logprob)
        entry["top_logprobs"] = [_token_entry(engine, t, v) for t, v in lp.top]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(engine: ServingEngine, logprobs: Sequence[TokenLogprob], start_offset: int,
                        texts: Sequence[str]) -> dict[str, Any]:
    tokens, values, tops, offsets = [], [], [], []
    offset = start_offset
    for lp, text in zip(logprobs, texts):
        tokens.append(engine.token_bytes(lp.token_id).decode("utf-8", "replace"))
        values.append(lp.logprob)
        tops.append({engine.token_bytes(t).decode("utf-8", "replace"): v for t, v in lp.top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat_completion(engine: ServingEngine, model: str, text: str, finish: str, pieces: Sequence[Piece],
                    prompt_tokens: int, completion_tokens: int, want_logprobs: bool) -> dict[str, Any]:
    logprobs = [lp for p in pieces for lp in p.logprobs]
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "finish_reason": FINISH_REASONS[finish],
                     "logprobs": chat_logprobs(engine, logprobs) if want_logprobs else None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def text_completion(engine: ServingEngine, model: str, prompt_text: str, text: str, finish: str,
                    pieces: Sequence[Piece], prompt_tokens: int, completion_tokens: int,
                    want_logprobs: bool) -> dict[str, Any]:
    logprobs = None
    if want_logprobs:
        with_lp = [p for p in pieces if p.logprobs]
        logprobs = completion_logprobs(engine, [lp for p in with_lp for lp in p.logprobs], len(prompt_text),
                                       [p.text for p in with_lp])
    return {
        "id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": prompt_text + text, "finish_reason": FINISH_REASONS[finish],
                     "logprobs": logprobs}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_DONE = sse("[DONE]")
