"""OpenAI's generation routes: /v1/chat/completions and /v1/completions, plain and streamed (SSE).

Everything that can be refused (bad fields, a template that rejects the conversation, a prompt longer
than the context) is checked before the response starts, so a streamed request fails with a plain
HTTP error too, never with a 200 followed by an error event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..engine.interface import ServingEngine
from ..engine.types import Piece
from . import translate as tr
from .chat_core import (
    ChatResult,
    ChatRun,
    ChoiceEnd,
    ReasoningDelta,
    TextDelta,
    count_chat_tokens,
    ToolCallArgs,
    ToolCallStart,
    prepare_chat,
    prepare_completion,
    ready_engine,
)
from .errors import error_payload
from .fingerprint import system_fingerprint
from .generation import Generation, run_to_completion
from .llamacpp_responses import timings as llama_timings
from .schemas import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)
router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/chat/completions")
@router.post("/chat/completions")  # as llama-server: clients given a base URL without /v1 work too
async def chat_completions(body: ChatCompletionRequest, request: Request):
    run = await prepare_chat(request, body)
    if not body.stream:
        answer = chat_completion(run.model, await run.complete(), run.want_logprobs)
        if body.verbose or request.app.state.settings.verbose:
            answer["__verbose"] = {"prompt": run.prompt_text}  # llama-server's: what the model was given
        return JSONResponse(answer)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_chat_stream(run, include_usage), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/v1/chat/completions/input_tokens")
@router.post("/chat/completions/input_tokens")
async def chat_input_tokens(body: ChatCompletionRequest, request: Request):
    """llama-server's: the prompt tokens the request would take, without generating."""
    return {"input_tokens": await count_chat_tokens(request, body)}


def chat_completion(model: str, result: ChatResult, want_logprobs: bool) -> dict[str, Any]:
    choices = []
    for i, choice in enumerate(result.choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.reasoning:  # llama-server's field for a thinking model's thought
            message["reasoning_content"] = choice.reasoning
        if choice.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function",
                                      "function": {"name": call.name, "arguments": call.arguments}}
                                     for call in choice.tool_calls]
        choices.append({"index": i, "message": message, "finish_reason": choice.finish_reason,
                        "logprobs": {"content": list(choice.logprobs or ()), "refusal": None}
                        if want_logprobs else None})
    return {"id": tr.new_id("chatcmpl"), "object": "chat.completion", "created": tr.now(), "model": model,
            "system_fingerprint": system_fingerprint(), "choices": choices,
            "usage": tr.usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens)}


async def _chat_stream(run: ChatRun, include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": tr.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": tr.now(), "model": run.model,
            "system_fingerprint": system_fingerprint()}
    if include_usage:
        base["usage"] = None

    def chunk(choice: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return tr.sse({**base, "choices": [{"index": choice, "delta": delta, "finish_reason": finish,
                                            "logprobs": logprobs}]})

    for choice in range(run.n):
        yield chunk(choice, {"role": "assistant", "content": None})  # as llama-server: no text yet
    completion_tokens = 0
    try:
        async for event in run.events():
            if isinstance(event, TextDelta):
                logprobs = {"content": list(event.logprobs), "refusal": None} if event.logprobs else None
                yield chunk(event.choice, {"content": event.text}, None, logprobs)
            elif isinstance(event, ReasoningDelta):
                yield chunk(event.choice, {"reasoning_content": event.text})
            elif isinstance(event, ToolCallStart):
                yield chunk(event.choice, {"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                                           "function": {"name": event.name, "arguments": ""}}]})
            elif isinstance(event, ToolCallArgs):
                yield chunk(event.choice, {"tool_calls": [{"index": event.index,
                                                           "function": {"arguments": event.fragment}}]})
            elif isinstance(event, ChoiceEnd):
                completion_tokens += event.completion_tokens
                yield chunk(event.choice, {}, event.finish_reason)
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream: the status line has gone out
        _status, payload = error_payload(exc)
        yield tr.sse(payload)
    else:
        if include_usage:
            # llama-server's `timings` beside the usage (prompt_n, predicted_per_second, ...).
            yield tr.sse({**base, "choices": [], "usage": tr.usage(run.prompt_tokens, completion_tokens,
                                                                   run.cached_tokens),
                          "timings": llama_timings(run.timings)})
    yield tr.SSE_DONE


async def _stream(generation: Generation, piece_chunk: Callable[[Piece], bytes | None],
                  final_chunk: Callable[[str], bytes]) -> AsyncIterator[bytes]:
    """The chunks of a generation; an error after the first chunk becomes an error event, as the
    status line has already gone out."""
    try:
        async for piece in generation.pieces():
            data = piece_chunk(piece)
            if data:
                yield data
            if piece.finish_reason:
                yield final_chunk(tr.finish_reason(piece.finish_reason))
        generation.finished_ok = True
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream
        _status, payload = error_payload(exc)
        yield tr.sse(payload)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = request.app.state
    engine, _holder = ready_engine(request)

    tokens, generation_request = await run_in_threadpool(prepare_completion, state, engine, body)
    prompt_text = (body.prompt if isinstance(body.prompt, str) else engine.detokenize(tokens)) if body.echo else ""
    generation = Generation(engine, generation_request, state.metrics, state.active_generations)
    model = state.holder.model_name
    want_logprobs = generation_request.logprobs is not None
    if not body.stream:
        outcome = await run_to_completion(request.receive, generation)
        return JSONResponse(tr.text_completion(engine, model, prompt_text, outcome.text, outcome.finish_reason,
                                               outcome.pieces, outcome.prompt_tokens, outcome.completion_tokens,
                                               want_logprobs))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_completion_stream(engine, model, prompt_text, generation, include_usage, want_logprobs),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _completion_stream(engine: ServingEngine, model: str, prompt_text: str, generation: Generation,
                             include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": tr.new_id("cmpl"), "object": "text_completion", "created": tr.now(), "model": model,
            "system_fingerprint": system_fingerprint()}
    if include_usage:
        base["usage"] = None
    offset = len(prompt_text)

    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return tr.sse({**base, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}]})

    if prompt_text:
        yield chunk(prompt_text)

    cached = 0

    def piece_chunk(piece: Piece) -> bytes | None:
        nonlocal offset, cached
        if piece.timings is not None:
            cached = piece.timings.cached_tokens
        if not (piece.text or piece.logprobs):
            return None
        logprobs = None
        if want_logprobs and piece.logprobs:
            logprobs = tr.completion_logprobs(engine, piece.logprobs, offset, [piece.text])
        offset += len(piece.text)
        return chunk(piece.text, None, logprobs)

    async for data in _stream(generation, piece_chunk, lambda finish: chunk("", finish)):
        yield data
    if include_usage and generation.finished_ok:
        yield tr.sse({**base, "choices": [],
                      "usage": tr.usage(len(generation.request.prompt_tokens), generation.completion_tokens,
                                        cached)})
    yield tr.SSE_DONE
