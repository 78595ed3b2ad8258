"""The other routes: /v1/models, /v1/embeddings, /tokenize, /detokenize, /health, /metrics, and the web
chat page at /."""

from __future__ import annotations

import base64
import re
import struct
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import messages
from . import llamacpp_translate as lt
from . import translate as tr
from .errors import ApiError, error_body
from .routes_openai import ready_engine
from .schemas import DetokenizeRequest, EmbeddingRequest, TokenizeRequest
from .state import scheduler_stats

router = APIRouter()

WEB_PAGE = "server_chat.html"


@router.get("/health")
async def health(request: Request):
    holder = request.app.state.holder
    if holder.engine is not None:
        stats = scheduler_stats(holder.engine)
        if stats is not None and not stats.decoding:
            # Listening but unable to answer: a load balancer must take this replica out.
            reason = stats.failure or messages.DECODING_THREAD_DIED  # e.g. a lost RPC worker
            return JSONResponse(error_body(reason, "unavailable_error", None, 503),
                                status_code=503)
        return {"status": "ok"}
    if holder.error is not None:
        return JSONResponse(error_body(f"the model failed to load: {holder.error}", "unavailable_error"),
                            status_code=503)
    return JSONResponse(error_body("Loading model", "unavailable_error", None, 503), status_code=503,
                        headers={"Retry-After": "1"})


@router.get("/metrics")
async def metrics(request: Request):
    state = request.app.state
    response = PlainTextResponse(state.metrics.render(state.holder.ready, scheduler_stats(state.holder.engine)),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")
    # llama-server's header, spelled as it sends it (Starlette would lower-case it; clients that copy
    # headers into a dict look it up by this spelling).
    response.raw_headers.append((b"Process-Start-Time-Unix", str(int(state.metrics.started)).encode()))
    return response


@router.get("/v1/models")
@router.get("/models")  # as llama-server: clients given a base URL without /v1 work too
async def models(request: Request):
    engine, holder = ready_engine(request)
    return {"object": "list", "data": [{
        "id": holder.model_name, "aliases": list(holder.names.aliases), "tags": list(holder.names.tags),
        "object": "model", "created": int(request.app.state.metrics.started),
        "owned_by": "llmpack", "chat_template": holder.formatter.description, "meta": {"n_ctx": engine.n_ctx, "n_ctx_train": engine.n_ctx_train,
                                        "n_vocab": engine.n_vocab, "n_embd": engine.n_embd},
    }]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request):
    _engine, holder = ready_engine(request)
    if model_id != holder.model_name and model_id not in holder.names.aliases:
        raise ApiError(404, f"no model named {model_id!r}: this server serves {holder.model_name!r}",
                       param="model", code="model_not_found")
    return {"id": model_id, "object": "model", "created": int(request.app.state.metrics.started),
            "owned_by": "llmpack"}


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    state = request.app.state
    engine, _ = ready_engine(request)
    if not engine.config.embeddings:
        raise ApiError(400, "embeddings are off: restart the server with --embedding to use /v1/embeddings",
                       param=None, code="embeddings_disabled")
    if body.dimensions is not None and body.dimensions != engine.n_embd:
        raise ApiError(400, f"this model's embeddings have {engine.n_embd} dimensions; other sizes are not supported",
                       param="dimensions")
    if state.settings.pooling == "none":  # asked for: one vector per token is not OpenAI's shape (llama-server's rule)
        raise ApiError(400, messages.OPENAI_EMBEDDINGS_POOLING_NONE, param="input")
    inputs = lt.embedding_inputs(body.input, "input")

    def embed_all() -> tuple[list[list[float]], int]:
        vectors, total = [], 0
        for i, item in enumerate(inputs):
            tokens = lt.embedding_tokens(engine, item, f"input.{i}" if len(inputs) > 1 else "input")
            engine.check_fits(len(tokens))
            vectors.append(engine.embed(tokens))
            total += len(tokens)
        return vectors, total

    vectors, total = await run_in_threadpool(embed_all)
    state.metrics.add(prompt_tokens=total)
    data = []
    for i, vector in enumerate(vectors):
        encoded = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                   if body.encoding_format == "base64" else vector)
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    return {"object": "list", "data": data, "model": request.app.state.holder.model_name,
            "usage": {"prompt_tokens": total, "total_tokens": total}}


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request):
    engine, _ = ready_engine(request)
    tokens = await run_in_threadpool(engine.tokenize, body.content, body.add_special, body.parse_special)
    if body.with_pieces:
        return {"tokens": [{"id": t, "piece": _piece(engine.token_bytes(t, special=True))} for t in tokens]}
    return {"tokens": tokens}


def _piece(raw: bytes) -> str | list[int]:
    """llama-server's with_pieces: the text of a token, or its bytes when they are not UTF-8 alone (a
    byte-fallback token holding part of a character)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request):
    engine, _ = ready_engine(request)
    tokens = tr.check_token_ids(engine, body.tokens, "tokens")
    return {"content": engine.detokenize(tokens)}


# The policy web/build_page.py wrote into the page, with its scripts' and style's hashes.
_PAGE_CSP = re.compile(rb'<meta http-equiv="Content-Security-Policy" content="([^"]+)">')


@lru_cache(maxsize=1)
def _page() -> tuple[bytes, dict[str, str]]:
    page = files("llmpack.templates").joinpath(WEB_PAGE).read_bytes()
    match = _PAGE_CSP.search(page)
    # A header can say what a <meta> cannot: no other site may frame the page (clickjacking).
    csp = (match.group(1).decode() if match else "default-src 'self'") + "; frame-ancestors 'none'"
    return page, {"Cache-Control": "no-cache", "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer"}


@router.get("/", response_class=HTMLResponse)
async def web_chat(request: Request):
    if request.app.state.settings.no_ui:
        raise ApiError(404, messages.SERVER_NO_UI, code="not_found")
    page, headers = _page()
    return HTMLResponse(page, headers=headers)


@router.get("/favicon.ico")
async def favicon():
    return Response(status_code=204)
