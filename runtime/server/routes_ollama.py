"""Ollama's API (/api/*), so Ollama's clients use the model as if Ollama served it: chat and generate
(NDJSON streams by default), embeddings, and the model's facts. /api/chat (and /api/generate, its
prompt as the user's turn) runs the shared chat core; /api/generate with `raw` completes the prompt
as it is, as /v1/completions does. Errors are `{"error": "..."}` (errors.py shapes them by path), and
an error after a stream has started is its last line."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import messages
from ..engine.interface import ServingEngine
from . import ollama_translate as ot
from . import translate as tr
from .chat_core import (
    ChoiceEnd,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallStart,
    prepare_chat,
    prepare_completion,
    ready_engine,
)
from .errors import ApiError, error_payload
from .generation import Generation
from .schemas import CompletionRequest

log = logging.getLogger(__name__)
router = APIRouter()

NDJSON = "application/x-ndjson"
# The model stays loaded for the server's life: /api/ps says so with a far-off expiry, as Ollama does
# for keep_alive -1.
NEVER = "2318-01-01T00:00:00Z"


def _served(request: Request, requested: str | None) -> tuple[ServingEngine, Any]:
    engine, holder = ready_engine(request)
    ot.check_model(requested, holder.model_name, holder.names.aliases)
    return engine, holder


@dataclass
class Clock:
    """Ollama's durations, in nanoseconds: load (here: the request's checks and templating, the model
    being loaded already), prompt evaluation (until the first token), and generation."""

    started: int
    prepared: int = 0
    first: int | None = None

    def stats(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first or end
        return {"total_duration": end - self.started, "load_duration": self.prepared - self.started,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": max(1, first - self.prepared),
                "eval_count": completion_tokens, "eval_duration": max(1, end - first)}


# -- the model's facts ---------------------------------------------------------------------------

@router.get("/api/version")
async def version():
    return {"version": ot.OLLAMA_VERSION}


def _model_entry(request: Request, engine: ServingEngine, name: str) -> dict[str, Any]:
    metadata = getattr(engine, "metadata", {})
    started = datetime.fromtimestamp(request.app.state.metrics.started, timezone.utc)
    return {"name": name, "model": name, "modified_at": started.isoformat().replace("+00:00", "Z"),
            "size": 0, "digest": "", "details": ot.details(metadata)}


@router.get("/api/tags")
async def tags(request: Request):
    engine, holder = ready_engine(request)
    return {"models": [_model_entry(request, engine, ot.listed_name(holder.model_name))]}


@router.get("/api/ps")
async def ps(request: Request):
    engine, holder = ready_engine(request)
    entry = _model_entry(request, engine, ot.listed_name(holder.model_name))
    del entry["modified_at"]
    return {"models": [{**entry, "expires_at": NEVER, "size_vram": 0, "context_length": engine.n_ctx}]}


@router.post("/api/show")
async def show(body: ot.ShowBody, request: Request):
    engine, holder = _served(request, body.model or body.name)
    state = request.app.state
    metadata = getattr(engine, "metadata", {})
    sampling = state.base_sampling
    parameters: dict[str, Any] = {"num_ctx": engine.n_ctx, "num_predict": state.settings.n_predict,
                                  "temperature": sampling.temperature, "top_k": sampling.top_k,
                                  "top_p": sampling.top_p, "min_p": sampling.min_p,
                                  "repeat_penalty": sampling.repeat_penalty, "repeat_last_n": sampling.repeat_last_n}
    if sampling.seed >= 0:
        parameters["seed"] = sampling.seed
    if holder.formatter.stop:
        parameters["stop"] = list(holder.formatter.stop)
    name = ot.listed_name(holder.model_name)
    template = engine.chat_template or ""
    capabilities = ["completion", "tools"] + (["embedding"] if engine.config.embeddings else [])
    return {"license": metadata.get("general.license", ""), "modelfile": ot.modelfile(name, template, parameters),
            "parameters": ot.parameters_text(parameters), "template": template, "details": ot.details(metadata),
            "model_info": ot.model_info(metadata, body.verbose), "capabilities": capabilities,
            "modified_at": _model_entry(request, engine, name)["modified_at"]}


@router.post("/api/pull")
@router.post("/api/push")
@router.post("/api/create")
@router.post("/api/copy")
@router.delete("/api/delete")
@router.api_route("/api/blobs/{digest}", methods=["HEAD", "POST"])
async def manage_models(request: Request):
    name = ot.listed_name(request.app.state.holder.model_name) or "its embedded model"
    raise ApiError(403, messages.OLLAMA_ONE_MODEL.format(model=name))


# -- generation ----------------------------------------------------------------------------------

def _loaded(model: str, keep_alive: float | str | None, chat: bool) -> dict[str, Any]:
    """Ollama answers a request without messages (or prompt) by loading the model, or unloading it
    with keep_alive 0: here it is always loaded, so this only says so."""
    reason = "unload" if keep_alive in (0, "0", "0s", "0m") else "load"
    body = {"model": model, "created_at": ot.created_at(), "done": True, "done_reason": reason}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return body


@router.post("/api/chat")
async def chat(body: ot.ChatBody, request: Request):
    clock = Clock(time.perf_counter_ns())
    _engine, holder = _served(request, body.model)
    ot.refuse_thinking(body, holder.model_name)
    model = body.model or ""
    if not body.messages:
        return _loaded(model, body.keep_alive, chat=True)
    run = await prepare_chat(request, ot.chat_request(body, body.stream))
    clock.prepared = time.perf_counter_ns()
    return await _answer(request, run.events(), run.prompt_tokens, model, clock, body.stream,
                         lambda text: {"message": {"role": "assistant", "content": text}})


@router.post("/api/generate")
async def generate(body: ot.GenerateBody, request: Request):
    clock = Clock(time.perf_counter_ns())
    engine, holder = _served(request, body.model)
    ot.refuse_thinking(body, holder.model_name)
    ot.refuse_generate_extras(body)
    model = body.model or ""
    if not body.prompt:
        return _loaded(model, body.keep_alive, chat=False)
    if body.raw:
        events, prompt_tokens = await _raw_generation(request, engine, body)
    else:
        run = await prepare_chat(request, ot.generate_request(body, body.stream))
        events, prompt_tokens = run.events(), run.prompt_tokens
    clock.prepared = time.perf_counter_ns()
    return await _answer(request, events, prompt_tokens, model, clock, body.stream, lambda text: {"response": text})


async def _raw_generation(request: Request, engine: ServingEngine, body: ot.GenerateBody):
    """`raw`: the prompt as it is, no template, as /v1/completions completes it."""
    state = request.app.state
    fields = ot.sampling_fields(body)
    data: dict[str, Any] = {"prompt": body.prompt, **{k: v for k, v in fields.items() if k not in ("logprobs", "top_logprobs")}}
    if body.logprobs:
        data["logprobs"] = body.top_logprobs or 0
    grammar = _format_grammar(body.format)
    if grammar is not None:
        data["grammar"] = grammar
    completion = ot.internal_request(data, CompletionRequest)

    _tokens, generation_request = await run_in_threadpool(prepare_completion, state, engine, completion)
    generation = Generation(engine, generation_request, state.metrics, state.active_generations)

    async def events():
        async for piece in generation.pieces():
            if piece.text or piece.logprobs:
                entries = (tuple(tr.chat_logprobs(engine, piece.logprobs)["content"])
                           if body.logprobs and piece.logprobs else None)
                yield TextDelta(0, piece.text, entries)
            if piece.finish_reason:
                yield ChoiceEnd(0, tr.finish_reason(piece.finish_reason), generation.completion_tokens)

    return events(), len(generation_request.prompt_tokens)


def _format_grammar(fmt: str | dict[str, Any] | None) -> str | None:
    spec = ot.response_format(fmt)
    if spec is None:
        return None
    return tr.schema_grammar(None if spec["type"] == "json_object" else spec["json_schema"]["schema"], "format")


class _Reply:
    """A reply's text, tool calls and end, gathered from the core's events."""

    def __init__(self) -> None:
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.end: ChoiceEnd | None = None
        self.thinking = ""  # a thinking model's thought (message.thinking)

    def take(self, event) -> None:
        if isinstance(event, ToolCallStart):
            self.calls[event.index] = [event.id, event.name, ""]
        elif isinstance(event, ToolCallArgs):
            self.calls[event.index][2] += event.fragment
        elif isinstance(event, ChoiceEnd):
            self.end = event

    def tool_calls(self) -> tuple[list[dict[str, Any]], str]:
        """Ollama's tool calls, and the text of any whose arguments are no JSON object (cut short),
        kept as text rather than lost."""
        calls, leftover = [], ""
        for index, (call_id, name, arguments) in sorted(self.calls.items()):
            call = ot.tool_call(call_id, name, arguments, index)
            if call is None:
                leftover += arguments
            else:
                calls.append(call)
        return calls, leftover

    def final(self, prompt_tokens: int, clock: Clock) -> dict[str, Any]:
        end = self.end or ChoiceEnd(0, "stop", 0)
        return {"done": True, "done_reason": ot.DONE_REASONS.get(end.finish_reason, end.finish_reason),
                **clock.stats(prompt_tokens, end.completion_tokens)}


async def _answer(request: Request, events: AsyncIterator, prompt_tokens: int, model: str, clock: Clock,
                  stream: bool, content: Callable[[str], dict[str, Any]]):
    if stream:
        return StreamingResponse(_lines(events, prompt_tokens, model, clock, content), media_type=NDJSON)
    task = asyncio.ensure_future(_gather(events, clock))
    disconnected = asyncio.Event()

    async def watch() -> None:
        # The body is read: the next ASGI message is the client's disconnect, which stops the generation.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        disconnected.set()
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        texts, logprobs, reply = await task
    except asyncio.CancelledError:
        if disconnected.is_set():
            return Response(status_code=204)  # no one is there to read it
        raise
    finally:
        watcher.cancel()
    calls, leftover = reply.tool_calls()
    answer: dict[str, Any] = {"model": model, "created_at": ot.created_at(), **content("".join(texts) + leftover)}
    if calls:
        answer["message"]["tool_calls"] = calls
    if reply.thinking:
        _think(answer, reply.thinking)
    if logprobs:
        answer["logprobs"] = ot.ollama_logprobs(tuple(logprobs))
    return JSONResponse({**answer, **reply.final(prompt_tokens, clock)})


def _think(line: dict[str, Any], thought: str) -> dict[str, Any]:
    """Ollama's thinking: message.thinking in /api/chat, thinking in /api/generate."""
    (line["message"] if "message" in line else line)["thinking"] = thought
    return line


async def _gather(events: AsyncIterator, clock: Clock) -> tuple[list[str], list[Any], _Reply]:
    texts: list[str] = []
    logprobs: list[Any] = []
    reply = _Reply()
    async for event in events:
        if clock.first is None and not isinstance(event, ChoiceEnd):
            clock.first = time.perf_counter_ns()
        if isinstance(event, TextDelta):
            texts.append(event.text)
            logprobs.extend(event.logprobs or ())
        elif isinstance(event, ReasoningDelta):
            reply.thinking += event.text
        else:
            reply.take(event)
    return texts, logprobs, reply


async def _lines(events: AsyncIterator, prompt_tokens: int, model: str, clock: Clock,
                 content: Callable[[str], dict[str, Any]]) -> AsyncIterator[bytes]:
    reply = _Reply()
    try:
        async for event in events:
            if clock.first is None and not isinstance(event, ChoiceEnd):
                clock.first = time.perf_counter_ns()
            if isinstance(event, TextDelta):
                line = {"model": model, "created_at": ot.created_at(), **content(event.text), "done": False}
                if event.logprobs:
                    line["logprobs"] = ot.ollama_logprobs(event.logprobs)
                yield ot.ndjson(line)
                continue
            if isinstance(event, ReasoningDelta):
                yield ot.ndjson(_think({"model": model, "created_at": ot.created_at(), **content(""), "done": False},
                                       event.text))
                continue
            reply.take(event)
            if isinstance(event, ChoiceEnd):
                calls, leftover = reply.tool_calls()
                if calls or leftover:
                    line = {"model": model, "created_at": ot.created_at(), **content(leftover), "done": False}
                    if calls:
                        line["message"]["tool_calls"] = calls
                    yield ot.ndjson(line)
                yield ot.ndjson({"model": model, "created_at": ot.created_at(), **content(""),
                                 **reply.final(prompt_tokens, clock)})
    except Exception as exc:  # noqa: BLE001 - the status line has gone out: the stream's last line says it
        _status, payload = error_payload(exc)
        yield ot.ndjson({"error": payload["error"]["message"]})


# -- embeddings ----------------------------------------------------------------------------------

def _embedding_engine(request: Request, model: str | None) -> ServingEngine:
    engine, _holder = _served(request, model)
    if not engine.config.embeddings:
        raise ApiError(400, messages.OLLAMA_EMBEDDINGS_OFF, code="embeddings_disabled")
    return engine


def _embed(engine: ServingEngine, text: str, truncate: bool, normalize: bool) -> tuple[list[float], int]:
    tokens = engine.tokenize(text, add_special=True, parse_special=False)
    if truncate:
        tokens = tokens[:engine.n_ctx]  # Ollama's default: the input's end is cut to fit
    engine.check_fits(len(tokens))
    return engine.embed(tokens, normalize=normalize), len(tokens)


@router.post("/api/embed")
async def embed(body: ot.EmbedBody, request: Request):
    clock = Clock(time.perf_counter_ns())
    engine = _embedding_engine(request, body.model)
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if body.dimensions is not None and not 1 <= body.dimensions <= engine.n_embd:
        raise ApiError(400, f"dimensions must be between 1 and {engine.n_embd}, this model's size",
                       param="dimensions")

    def embed_all() -> tuple[list[list[float]], int]:
        vectors, total = [], 0
        for text in inputs:
            vector, n = _embed(engine, text, body.truncate, normalize=True)
            if body.dimensions is not None and body.dimensions < len(vector):
                # Shortened as Ollama does (Matryoshka embeddings): the first values, normalized again.
                vector = vector[:body.dimensions]
                norm = math.sqrt(sum(x * x for x in vector)) or 1.0
                vector = [x / norm for x in vector]
            vectors.append(vector)
            total += n
        return vectors, total

    vectors, total = await run_in_threadpool(embed_all)
    request.app.state.metrics.add(prompt_tokens=total)
    clock.prepared = clock.started
    stats = clock.stats(total, 0)
    return {"model": body.model, "embeddings": vectors, "total_duration": stats["total_duration"],
            "load_duration": 0, "prompt_eval_count": total}


@router.post("/api/embeddings")
async def embeddings(body: ot.EmbeddingsBody, request: Request):
    """The older route: one prompt, its vector as the model gives it (not normalized), as Ollama's is."""
    engine = _embedding_engine(request, body.model)
    if not body.prompt:
        return {"embedding": []}
    vector, total = await run_in_threadpool(_embed, engine, body.prompt, True, False)
    request.app.state.metrics.add(prompt_tokens=total)
    return {"embedding": vector}
