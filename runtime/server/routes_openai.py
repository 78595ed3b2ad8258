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
from ..flags.values import verbose_prompt_line
from . import translate as tr
from .errors import ApiError, error_payload
from .generation import Generation, run_to_completion
from .schemas import ChatCompletionRequest, CompletionRequest
from .state import EngineHolder

log = logging.getLogger(__name__)
router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def ready_engine(request: Request) -> tuple[ServingEngine, EngineHolder]:
    holder: EngineHolder = request.app.state.holder
    if holder.engine is None:
        raise ApiError(503, "the model is still loading; retry in a moment", "unavailable_error",
                       code="model_loading", headers={"Retry-After": "1"})
    return holder.engine, holder


def log_prompt(settings, engine: ServingEngine, tokens: list[int]) -> None:
    """--verbose-prompt: what the model receives, special tokens included, and its token count."""
    if settings.verbose_prompt:
        log.info("%s", verbose_prompt_line(engine.detokenize(tokens, special=True), len(tokens)))


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = request.app.state
    engine, holder = ready_engine(request)

    def prepare():
        tokens = tr.chat_prompt_tokens(engine, holder.formatter, body)
        engine.check_fits(len(tokens))
        log_prompt(state.settings, engine, tokens)
        request = tr.chat_generation_request(state.settings, state.base_sampling, holder.formatter, body, tokens)
        if request.sampling.grammar != state.base_sampling.grammar:
            # The client's GBNF or its response_format's (--grammar's was checked at start): refused
            # before the stream starts.
            engine.check_grammar(request.sampling.grammar)
        return request

    generation_request = await run_in_threadpool(prepare)
    generation = Generation(engine, generation_request, state.metrics, state.active_generations)
    model = state.holder.model_name
    want_logprobs = generation_request.logprobs is not None
    if not body.stream:
        outcome = await run_to_completion(request.receive, generation)
        return JSONResponse(tr.chat_completion(engine, model, outcome.text, outcome.finish_reason, outcome.pieces,
                                               outcome.prompt_tokens, outcome.completion_tokens, want_logprobs))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_chat_stream(engine, model, generation, include_usage, want_logprobs),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _chat_stream(engine: ServingEngine, model: str, generation: Generation, include_usage: bool,
                       want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": tr.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": tr.now(), "model": model,
            "system_fingerprint": None}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return tr.sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                            "logprobs": logprobs}]})

    yield chunk({"role": "assistant", "content": ""})

    def piece_chunk(piece: Piece) -> bytes | None:
        if not (piece.text or piece.logprobs):
            return None
        logprobs = tr.chat_logprobs(engine, piece.logprobs) if want_logprobs and piece.logprobs else None
        return chunk({"content": piece.text}, None, logprobs)

    async for data in _stream(generation, piece_chunk, lambda finish: chunk({}, finish)):
        yield data
    if include_usage and generation.finished_ok:
        yield tr.sse({**base, "choices": [],
                      "usage": tr.usage(len(generation.request.prompt_tokens), generation.completion_tokens)})
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
                yield final_chunk(tr.FINISH_REASONS[piece.finish_reason])
        generation.finished_ok = True
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream
        _status, payload = error_payload(exc)
        yield tr.sse(payload)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = request.app.state
    engine, _holder = ready_engine(request)

    def prepare():
        tokens = tr.completion_prompt_tokens(engine, body)
        engine.check_fits(len(tokens))
        log_prompt(state.settings, engine, tokens)
        if body.grammar is not None:
            engine.check_grammar(body.grammar)
        return tokens, tr.completion_generation_request(state.settings, state.base_sampling, body, tokens)

    tokens, generation_request = await run_in_threadpool(prepare)
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
            "system_fingerprint": None}
    if include_usage:
        base["usage"] = None
    offset = len(prompt_text)

    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return tr.sse({**base, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}]})

    if prompt_text:
        yield chunk(prompt_text)

    def piece_chunk(piece: Piece) -> bytes | None:
        nonlocal offset
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
                      "usage": tr.usage(len(generation.request.prompt_tokens), generation.completion_tokens)})
    yield tr.SSE_DONE
