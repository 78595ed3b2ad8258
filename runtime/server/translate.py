"""OpenAI request bodies to the engine's GenerationRequest, and the engine's pieces back to OpenAI's
response shapes (chat and text completions, plain and streamed)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..formats.chat_template import ChatFormatter, tokenize_prompt_text
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
from .fingerprint import system_fingerprint
from .schemas import ChatCompletionRequest, CompletionRequest, SamplingFields


def finish_reason(engine_reason: str) -> str:
    """OpenAI's finish reason for the engine's: a generation cancelled because its client left has no
    one to tell, and OpenAI has no word for it; the rest ("stop", "length") are OpenAI's own."""
    return "stop" if engine_reason == "cancelled" else engine_reason


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- requests ------------------------------------------------------------------------------------

def chat_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages as the chat template wants them: role and plain-text content."""
    messages = []
    for i, message in enumerate(body.messages):
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
        entry: dict[str, Any] = {"role": role, "content": content or ""}
        if message.tool_calls:  # read by the tool-call prompt (runtime/tools/prompt.py)
            entry["tool_calls"] = message.tool_calls
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        messages.append(entry)
    return messages


def chat_prompt_text(formatter: ChatFormatter, body: ChatCompletionRequest,
                     messages: list[dict[str, Any]] | None = None, tools: list[dict[str, Any]] | None = None) -> str:
    """The rendered conversation. With `continue_final_message` (or `add_generation_prompt: false`) and
    an assistant message last, that message is continued, not closed: rendered without a generation
    prompt, then cut where its content ends, so the template's end-of-turn is gone (vLLM's approach)."""
    messages = chat_messages(body) if messages is None else messages
    prefill = body.continue_final_message or not body.add_generation_prompt
    if not prefill:
        return formatter.render(messages, tools=tools)
    if body.continue_final_message and body.add_generation_prompt and "add_generation_prompt" in body.model_fields_set:
        raise ApiError(400, "continue_final_message and add_generation_prompt cannot both be true",
                       param="continue_final_message")
    last = messages[-1]
    if last["role"] != "assistant" or not isinstance(last.get("content"), str) or not last["content"].strip():
        if body.continue_final_message:
            raise ApiError(400, "continue_final_message needs an assistant message with text last in messages",
                           param="continue_final_message")
        return formatter.render(messages, add_generation_prompt=False, tools=tools)
    text = formatter.render(messages, add_generation_prompt=False, tools=tools)
    content = last["content"].strip()  # templates often trim it (Gemma's does)
    end = text.rfind(content)
    if end < 0:
        raise ApiError(400, "the chat template rewrites the last assistant message, so it cannot be continued",
                       param="continue_final_message")
    return text[:end + len(content)]


def chat_prompt_tokens(engine: ServingEngine, formatter: ChatFormatter, body: ChatCompletionRequest) -> list[int]:
    text = chat_prompt_text(formatter, body)
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


def logit_bias_pairs(body: SamplingFields) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias ({"token id": bias}, bias in -100..100) as (token, bias) pairs; the ids
    are checked against the vocabulary by check_logit_bias."""
    pairs = []
    for key, bias in (body.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise ApiError(400, f"logit_bias keys are token ids, got {key!r}", param="logit_bias") from None
        if not -100 <= bias <= 100:
            raise ApiError(400, f"logit_bias values go from -100 to 100, got {bias} for token {token}",
                           param=f"logit_bias.{key}")
        pairs.append((token, float(bias)))
    return tuple(pairs)


def check_logit_bias(engine: ServingEngine, body: SamplingFields) -> None:
    for token, _bias in logit_bias_pairs(body):
        if not 0 <= token < engine.n_vocab:
            raise ApiError(400, f"logit_bias names token id {token}, out of range: this model's vocabulary has "
                           f"{engine.n_vocab} tokens", param=f"logit_bias.{token}")


# Fields OpenAI documents for chat completions that change the output and that this server cannot
# honour: refused by name, never ignored. (Metadata such as user, metadata, store, service_tier,
# prompt_cache_key is ignored; `prediction` only speeds OpenAI up and changes nothing.)
def refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.audio is not None:
        raise ApiError(400, "audio output is not supported: this server generates text only", param="audio")
    if body.modalities is not None and any(m != "text" for m in body.modalities):
        raise ApiError(400, "only the text modality is supported", param="modalities")
    for name in ("functions", "function_call"):
        if getattr(body, name) is not None:
            raise ApiError(400, f"{name} (deprecated by OpenAI) is not supported: send tools and tool_choice",
                           param=name)
    if body.web_search_options is not None:
        raise ApiError(400, "web search is not supported: this server has no internet access",
                       param="web_search_options")
    if body.reasoning_effort is not None:
        raise ApiError(400, "reasoning_effort is not supported by this server", param="reasoning_effort")
    if body.verbosity not in (None, "medium"):
        raise ApiError(400, "verbosity is not supported by this server (only \"medium\", the default)",
                       param="verbosity")


def response_grammar(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        if body.json_schema is not None:  # llama.cpp's top-level field
            if body.grammar is not None:
                raise ApiError(400, "json_schema and grammar cannot be combined: send one", param="json_schema")
            return schema_grammar(body.json_schema, "json_schema")
        return body.grammar
    if fmt.type == "json_object":
        return schema_grammar(fmt.schema_ or None, "response_format.json_schema.schema")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise ApiError(400, "response_format of type json_schema needs json_schema.schema",
                       param="response_format.json_schema")
    return schema_grammar(fmt.json_schema.schema_, "response_format.json_schema.schema")


def schema_grammar(schema: dict[str, Any] | None, param: str) -> str:
    """The grammar of a client's JSON schema (None: any JSON object), checked as every grammar is
    before llama.cpp sees it; a schema we cannot express, or whose grammar is too big, is a 400 on
    `param`. Every dialect's JSON-schema field comes through here."""
    try:
        grammar = json_object_grammar() if schema is None else json_schema_grammar(schema)
        check_grammar(grammar)  # a schema's grammar may still be too big for llama.cpp
    except (SchemaUnsupported, GrammarRefused) as exc:
        raise ApiError(400, f"unsupported JSON schema: {exc}", param=param) from None
    return grammar


def generation_request(settings: Settings, base: SamplingParams, body: SamplingFields, tokens: list[int],
                       max_tokens: int | None, grammar: str | None, extra_stop: Sequence[str],
                       logprobs: int | None) -> GenerationRequest:
    _check_common(body)
    overrides: dict[str, Any] = {}
    for name, field_name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                             ("min_p", "min_p"), ("presence_penalty", "presence_penalty"),
                             ("frequency_penalty", "frequency_penalty"), ("repeat_penalty", "repeat_penalty"),
                             ("seed", "seed"), ("ignore_eos", "ignore_eos")):
        value = getattr(body, field_name)
        if value is not None:
            overrides[name] = value
    if grammar is not None:
        overrides["grammar"] = grammar
    if body.logit_bias:
        # -100 is a ban in practice, yet finite: a grammar whose only way on is a banned token still
        # has one (an all -inf choice would abort llama.cpp's grammar sampler).
        overrides["logit_bias"] = logit_bias_pairs(body)
    sampling = dataclasses.replace(base, **overrides)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return GenerationRequest(tuple(tokens), settings.n_predict if max_tokens is None else max_tokens,
                             sampling, tuple(dict.fromkeys([*stop, *extra_stop])), logprobs)


def chat_generation_request(settings: Settings, base: SamplingParams, formatter: ChatFormatter,
                            body: ChatCompletionRequest, tokens: list[int]) -> GenerationRequest:
    refuse_unsupported(body)
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

def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's usage; with `cached_tokens`, the prompt tokens the KV cache already held (not decoded)."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


def cached_tokens(pieces: Sequence[Piece]) -> int:
    return next((p.timings.cached_tokens for p in reversed(pieces) if p.timings is not None), 0)


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
        "system_fingerprint": system_fingerprint(),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "finish_reason": finish_reason(finish),
                     "logprobs": chat_logprobs(engine, logprobs) if want_logprobs else None}],
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens(pieces)),
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
        "system_fingerprint": system_fingerprint(),
        "choices": [{"index": 0, "text": prompt_text + text, "finish_reason": finish_reason(finish),
                     "logprobs": logprobs}],
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens(pieces)),
    }


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_DONE = sse("[DONE]")
