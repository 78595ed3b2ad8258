"""llama.cpp's native HTTP API, as llama-server serves it: /completion (and /completions), /infill,
/apply-template, /props, /slots, /embeddings (llama-server's shape; OpenAI's is /v1/embeddings) and
/rerank. What llama.cpp's web UI, llama.vim, llama.vscode and older clients call. Bodies are read in
llamacpp_translate.py, answers shaped in llamacpp_responses.py; generation is the OpenAI routes'
(generation.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__, messages
from ..engine.interface import ServingEngine
from ..engine.types import GenerationRequest
from . import llamacpp_responses as lr
from . import llamacpp_translate as lt
from . import translate as tr
from .chat_core import log_prompt, ready_engine
from .chat_formats import prepare as prepare_formats
from .errors import ApiError
from .generation import Generation, run_to_completion
from .schemas import ChatCompletionRequest

log = logging.getLogger(__name__)
router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def llama_errors(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
    """Errors in llama-server's shape, whatever raised them (the app's handlers answer OpenAI's)."""
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Any:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - every error becomes an answer in this dialect
            status, body = lt.llama_error(exc)
            request.app.state.metrics.count_error(status)
            return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))
    return wrapper


def _sse(data: dict[str, Any]) -> bytes:
    return tr.sse(data)  # llama-server's events: `data: {...}`, and no [DONE] at the end


async def _complete(request: Request, engine: ServingEngine, body: lt.CompletionBody,
                    make: Callable[[], tuple[list[int], GenerationRequest]], index: int = 0,
                    prompt: Any = None) -> Any:
    """A whole answer (a dict, `index` set) or the stream of one. `prompt`: the prompt's own text when it
    is one of several (else the body's)."""
    state = request.app.state

    def prepare() -> tuple[list[int], GenerationRequest]:
        tokens, generation_request = make()
        engine.check_fits(len(tokens))
        log_prompt(state.settings, engine, tokens)
        if generation_request.sampling.grammar != state.base_sampling.grammar:
            engine.check_grammar(generation_request.sampling.grammar)  # the client's: checked before it runs
        return tokens, generation_request

    tokens, generation_request = await run_in_threadpool(prepare)
    # The prompt as the model read it: a built prompt (token ids, /infill's) shows its special tokens.
    prompt = body.prompt if prompt is None else prompt
    prompt_text = prompt if isinstance(prompt, str) and not isinstance(body, lt.InfillBody) else (
        engine.detokenize(tokens, special=True))
    generation = Generation(engine, generation_request, state.metrics, state.active_generations)
    model = state.holder.model_name
    if not body.stream:
        outcome = await run_to_completion(request.receive, generation)
        result = lr.final_result(engine, model, generation_request, prompt_text, outcome.pieces, outcome.text, False,
                                 body.return_tokens)
        result["index"] = index
        return lr.select_fields(result, body.response_fields) if body.response_fields else result
    return StreamingResponse(_stream(engine, model, generation, prompt_text, body.return_tokens),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _stream(engine: ServingEngine, model: str, generation: Generation, prompt_text: str,
                  return_tokens: bool) -> AsyncIterator[bytes]:
    request = generation.request
    pieces, text, n_predicted = [], [], 0
    try:
        async for piece in generation.pieces():
            pieces.append(piece)
            text.append(piece.text)
            n_predicted += len(piece.token_ids)
            if piece.text or piece.token_ids or piece.logprobs:  # an event per token, as llama-server's
                yield _sse(lr.partial_result(engine, request, piece, n_predicted))
            if piece.finish_reason:
                yield _sse(lr.final_result(engine, model, request, prompt_text, pieces, "".join(text), True,
                                           return_tokens))
    except Exception as exc:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        _status, payload = lt.llama_error(exc)
        yield _sse(payload)


@router.post("/completion")
@router.post("/completions")
@llama_errors
async def completion(request: Request):
    body = lt.parse(lt.CompletionBody, await request.body())
    engine, _holder = ready_engine(request)
    state = request.app.state

    # llama-server's shapes: one prompt (text, token ids, both mixed, {"prompt_string"}), or a list of
    # prompts, answered as a list in their order (generated together, up to -np at once).
    prompts = lt.embedding_inputs(body.prompt, "prompt")

    def make_for(prompt: Any, param: str) -> Callable[[], tuple[list[int], GenerationRequest]]:
        def make() -> tuple[list[int], GenerationRequest]:
            tokens = lt.embedding_tokens(engine, prompt, param, parse_special=True)
            return tokens, lt.generation_request(state.settings, state.base_sampling, body, tokens, engine)
        return make

    if len(prompts) == 1:
        answer = await _complete(request, engine, body, make_for(prompts[0], "prompt"), prompt=prompts[0])
        return JSONResponse(answer) if isinstance(answer, dict) else answer
    if body.stream:
        raise ApiError(400, "several prompts are answered whole: send them with stream false, or one at a time",
                       param="stream")
    answers = await asyncio.gather(*(_complete(request, engine, body, make_for(p, f"prompt.{i}"), i, p)
                                     for i, p in enumerate(prompts)))
    return JSONResponse(list(answers))


@router.post("/infill")
@llama_errors
async def infill(request: Request):
    body = lt.parse(lt.InfillBody, await request.body())
    engine, _holder = ready_engine(request)
    if not engine.fim_tokens.complete:
        raise ApiError(400, messages.LLAMA_NO_FIM)
    state = request.app.state

    def make() -> tuple[list[int], GenerationRequest]:
        request_ = lt.generation_request(state.settings, state.base_sampling, body, [], engine)
        tokens = lt.infill_tokens(engine, body, request_.max_tokens)
        return tokens, lt.generation_request(state.settings, state.base_sampling, body, tokens, engine)

    answer = await _complete(request, engine, body, make)
    return JSONResponse(answer) if isinstance(answer, dict) else answer


@router.post("/apply-template")
@llama_errors
async def apply_template(request: Request):
    body = lt.parse(ChatCompletionRequest, await request.body())
    engine, holder = ready_engine(request)
    chat = await run_in_threadpool(holder.formatter.llama_chat, engine)
    if chat is not None:  # llama.cpp's chat library: the prompt llama-server renders (tools, thinking...)
        prepared = await run_in_threadpool(prepare_formats, request.app.state.settings, chat, body)
        return {"prompt": prepared.text}
    prompt = await run_in_threadpool(holder.formatter.render, tr.chat_messages(body))
    return {"prompt": prompt}


def _params(engine: ServingEngine, request: Request) -> dict[str, Any]:
    return lr.generation_settings(GenerationRequest((), request.app.state.settings.n_predict,
                                                    request.app.state.base_sampling),
                                  engine.n_ctx, request.app.state.holder.model_name)


def _pool(engine: ServingEngine) -> dict[str, Any]:
    """How the sequences share the KV cache: one pool any of them may fill (-kvu), or fixed shares."""
    config = engine.config
    return {"kv_unified": getattr(engine, "context_size", None) is not None and engine.context_size.unified,
            "n_ctx_pool": getattr(engine, "pool_cells", engine.n_ctx * config.n_seq_max)}


def _slot(engine: ServingEngine, request: Request, index: int, busy: frozenset[int]) -> dict[str, Any]:
    slot = {"id": index, "id_task": -1, "n_ctx": engine.n_ctx, **_pool(engine),
            "speculative": bool(getattr(engine.config, "speculative", None) or getattr(engine.config, "draft", None)), "is_processing": index in busy}
    if index in busy:  # llama-server reports a slot's params only once it has a task
        slot["params"] = _params(engine, request)
    return slot


def _model_path(settings) -> str:
    if settings.model:
        return os.path.abspath(settings.model)
    # The weights are inside the executable the launcher started.
    return os.path.abspath(os.environ.get("LLMPACK_BUNDLE") or sys.argv[0])


@router.get("/props")
@llama_errors
async def props(request: Request):
    engine, holder = ready_engine(request)
    settings = request.app.state.settings
    return {"default_generation_settings": {**_slot(engine, request, 0, frozenset()), "params": _params(engine, request)},
            "total_slots": engine.config.n_seq_max, "model_alias": holder.model_name,
            "general_name": holder.gguf_name,  # the GGUF's own name; model_alias is the one clients send
            "model_path": _model_path(settings), "chat_template": holder.formatter.template,
            "modalities": _modalities(engine), "n_ctx": engine.n_ctx, **_pool(engine),
            "cors_proxy_enabled": settings.ui_mcp_proxy,  # llama-server's: the page may use /cors-proxy
            "build_info": f"llmpack {__version__}", "bos_token": engine.bos_token, "eos_token": engine.eos_token}


def _modalities(engine) -> dict[str, bool]:
    """What the projector reads, as llama-server says it (the web page offers images and sounds by it)."""
    projector = getattr(engine, "projector", None)
    return {"vision": bool(projector and projector.vision), "audio": bool(projector and projector.audio)}


@router.get("/slots")
@llama_errors
async def slots(request: Request):
    if not request.app.state.settings.slots:
        raise ApiError(501, messages.LLAMA_SLOTS_OFF, "not_supported_error")  # llama-server's status and type
    engine, _holder = ready_engine(request)
    busy = engine.sequences_in_use
    states = [_slot(engine, request, i, busy) for i in range(engine.config.n_seq_max)]
    if request.query_params.get("fail_on_no_slot") not in (None, "", "0") and all(s["is_processing"] for s in states):
        raise ApiError(503, "no slot available", "unavailable_error")
    return states


def _inputs(body: lt.EmbeddingsBody) -> list[Any]:
    return lt.embedding_inputs(body.input if body.input is not None else body.content, "content")


@router.post("/embeddings")
@llama_errors
async def embeddings(request: Request):
    body = lt.parse(lt.EmbeddingsBody, await request.body())
    engine, _holder = ready_engine(request)
    if not engine.config.embeddings:
        raise ApiError(400, messages.LLAMA_EMBEDDINGS_OFF)
    inputs = _inputs(body)

    def embed_all() -> tuple[list[dict[str, Any]], int]:
        results, total = [], 0
        for i, item in enumerate(inputs):
            tokens = lt.embedding_tokens(engine, item, f"content.{i}")
            rows = engine.embed_each(tokens)
            # llama-server: per-token rows unnormalized with --pooling none, a pooled row normalized.
            results.append({"index": i, "embedding": rows if engine.pooling == "none" else
                            [lr.normalized(rows[0])]})
            total += len(tokens)
        return results, total

    results, total = await run_in_threadpool(embed_all)
    request.app.state.metrics.add(prompt_tokens=total)
    return results


def _rerank_tokens(engine: ServingEngine, query: list[int], document: list[int]) -> list[int]:
    """llama-server's format_rerank: [BOS]query[EOS][SEP]document[EOS], leaving out what the vocabulary lacks."""
    special = engine.special_tokens()
    eos = special["eos"] if special["eos"] is not None else special["sep"]
    parts = [[special["bos"]], query, [eos], [special["sep"]], document, [eos]]
    return [t for part in parts for t in part if t is not None]


@router.post("/rerank")
@router.post("/reranking")
@router.post("/v1/rerank")
@router.post("/v1/reranking")
@llama_errors
async def rerank(request: Request):
    body = lt.parse(lt.RerankBody, await request.body())
    engine, holder = ready_engine(request)
    if engine.pooling != "rank":
        # llama-server answers 501 here; a server started without --reranking is the client's to fix.
        raise ApiError(400, messages.LLAMA_NO_RERANKING)
    tei = body.texts is not None
    documents = body.texts if tei else body.documents
    if documents is None or (tei and body.documents is not None):
        raise ApiError(400, "send the documents to rank as \"documents\" (or TEI's \"texts\"), one of them",
                       param="documents")

    def score_all() -> tuple[list[float], int]:
        query = engine.tokenize(body.query, False, False)
        scores, total = [], 0
        for document in documents:
            tokens = _rerank_tokens(engine, query, engine.tokenize(document, False, False))
            scores.append(engine.embed_each(tokens)[0][0])
            total += len(tokens)
        return scores, total

    scores, total = await run_in_threadpool(score_all)
    request.app.state.metrics.add(prompt_tokens=total)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    top = order if body.top_n is None else order[:body.top_n]
    if tei:
        return [{"index": i, "score": scores[i], **({"text": documents[i]} if body.return_text else {})} for i in top]
    results = []
    for i in top:
        results.append({"index": i, "relevance_score": scores[i]})
    return {"model": holder.model_name, "object": "list", "usage": {"prompt_tokens": total, "total_tokens": total},
            "results": results}
