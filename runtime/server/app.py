"""`create_app(settings, holder)`: the FastAPI application. No globals: everything a route needs is on
`app.state` (the engine holder, the metrics, the server's default sampling)."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import messages
from ..engine.types import SamplingParams
from ..flags.settings import Settings
from . import (
    routes_anthropic,
    routes_cors_proxy,
    routes_llamacpp,
    routes_misc,
    routes_ollama,
    routes_openai,
    routes_responses,
    routes_vertex,
    routes_web,
)
from .cors import add_cors
from .errors import error_body, install_error_handlers, shaped_for_path
from .host_check import HostPolicy, split_host
from .response_store import ResponseStore
from .state import EngineHolder, Metrics

# Large enough for a full 128k-token context as text with JSON's overhead; small enough that a runaway
# client cannot make the server buffer gigabytes.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Routes that need the API key when one is set. The page itself and /health stay open: the page asks
# for the key, and load balancers probe /health without credentials.
OPEN_PATHS = ("/", "/health", "/favicon.ico", *routes_web.WEB_APP_PATHS)
# Load balancers and orchestrators probe /health under their own names for the host; it reveals nothing
# but readiness, so it answers whatever the Host header says. Everything else is checked.
ANY_HOST_PATHS = ("/health",)


def create_app(settings: Settings, holder: EngineHolder, base_sampling: SamplingParams,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """`base_sampling`: a request's defaults, resolved from the flags before the server starts (plan.py)."""
    app = FastAPI(title="llmpack", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = Metrics()
    app.state.base_sampling = base_sampling
    # Generations whose threads run now: cancelled at shutdown, and waited for.
    app.state.active_generations = set()
    app.state.response_store = ResponseStore()  # for previous_response_id (Responses API)
    install_error_handlers(app)
    routers = [module.router for module in (routes_openai, routes_responses, routes_misc, routes_ollama,
                                            routes_anthropic, routes_llamacpp, routes_web, routes_cors_proxy)]
    for router in routers:
        app.include_router(router)
    if settings.ui_mcp_proxy:
        logging.getLogger(__name__).warning("%s", messages.MCP_PROXY_ON)
    routes_vertex.install(app, routers)  # AIP_MODE=PREDICTION: Vertex AI's /predict over the routes above
    app.add_middleware(JsonOnly)  # inside BodyLimit: the body is already read when it answers 415
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    health = routes_vertex.health_paths()  # /health, and Vertex AI's name for it: open as /health is
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key, open_paths=OPEN_PATHS + health)
    # Inside the host check (a rebinding page gets no CORS answer), outside the key: a preflight carries
    # no key, and a 401 must reach the page's script readable.
    add_cors(app, settings.cors_origins)
    app.add_middleware(HostCheck, policy=HostPolicy.from_settings(settings), any_host_paths=ANY_HOST_PATHS + health)  # before the key is looked at
    app.add_middleware(CountRequests)  # outermost: refused requests count too
    return app


def cancel_generations(app: FastAPI) -> None:
    """Asks every running generation to stop because the server is shutting down: their streams end
    with an error event saying so, never with a finish_reason that passes for a complete answer. Safe
    on the event loop."""
    for generation in list(app.state.active_generations):
        generation.stop_for_shutdown()


def cancel_all(app: FastAPI, wait_s: float = 10.0) -> bool:
    """Stops every generation and waits (wait_s in all) for their threads; False if some still run,
    in which case the engine must not be freed under them."""
    generations = list(app.state.active_generations)
    for generation in generations:
        generation.stop_for_shutdown()
    deadline = time.monotonic() + wait_s
    for generation in generations:
        generation.done.wait(max(0.0, deadline - time.monotonic()))
    return all(g.done.is_set() for g in generations)


def _too_large_detail(limit: int) -> str:
    return f"the request body is larger than the server's limit of {limit} bytes"


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` for the app behind a middleware that has read the body already: it hands the body over
    once, then waits on the real `receive` (for the client's disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimit:
    """413 for a body over the limit. The body is read here (the app would read it whole anyway) and
    replayed to the app; an oversized one is read to its end without being kept, up to DRAIN_LIMIT, so
    the client, still sending, gets the 413 instead of a reset connection."""

    DRAIN_LIMIT = 64 * 1024 * 1024

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.limit
        chunks: list[bytes] = []
        received = 0
        drained = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            received += len(body)
            too_large = too_large or received > self.limit
            if not too_large:
                chunks.append(body)
            if not message.get("more_body"):
                break
            if received > self.DRAIN_LIMIT:
                drained = False
                break
        if too_large:
            await _respond(scope, receive, send, 413,
                           error_body(_too_large_detail(self.limit), "invalid_request_error", None,
                                      "request_too_large"), close=not drained)
            return
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


ROUTE_LABELS = {"/v1/chat/completions": "chat", "/chat/completions": "chat", "/models": "models",
                "/v1/completions": "completions", "/v1/embeddings": "embeddings",
                "/embeddings": "embeddings", "/v1/models": "models", "/tokenize": "tokenize",
                "/completion": "llama_completion", "/completions": "llama_completion", "/infill": "llama_infill",
                "/apply-template": "llama_apply_template", "/props": "llama_props", "/slots": "llama_slots",
                "/rerank": "rerank", "/reranking": "rerank", "/v1/rerank": "rerank", "/v1/reranking": "rerank",
                "/api/chat": "ollama_chat", "/api/generate": "ollama_generate", "/api/embed": "ollama_embed",
                "/api/embeddings": "ollama_embed", "/api/tags": "ollama_models", "/api/show": "ollama_models",
                "/api/ps": "ollama_models", "/api/version": "ollama_version",
                "/detokenize": "detokenize", "/health": "health", "/metrics": "metrics", "/": "page",
                "/v1/responses": "responses",
                "/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}


class CountRequests:
    """Counts every request by route for /metrics, the refused ones included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"].state.metrics.count_request(ROUTE_LABELS.get(scope["path"], "other"))
        await self.app(scope, receive, send)


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/*+json, whatever the parameters (charset=utf-8, ...)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonOnly:
    """415 for a body that is not declared as JSON. Any web page may POST text/plain, form-encoded or
    multipart bodies to 127.0.0.1 without a CORS preflight (and a body with no Content-Type, from a
    Blob); read as JSON, they would make the server generate for a site the user never trusted. So,
    unlike llama.cpp's server, only `Content-Type: application/json` is read, which a cross-site page
    cannot send without a preflight that this server never grants. A POST without a body passes: the
    route then says what body it needs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
        if is_json_media_type(content_type):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body:
            got = f"{content_type!r}" if content_type else "no Content-Type"
            await _respond(scope, receive, send, 415,
                           error_body(messages.SERVER_NOT_JSON.format(got=got),
                                      "invalid_request_error", None, "unsupported_media_type"))
            return
        await self.app(scope, replay_body(b"", receive), send)


class HostCheck:
    """403 for a Host header that names none of this server's names: see host_check.py (DNS rebinding)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy, any_host_paths: tuple[str, ...] = ANY_HOST_PATHS) -> None:
        self.app = app
        self.policy = policy
        self.any_host_paths = any_host_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.any_host_paths:
            header = dict(scope.get("headers") or []).get(b"host")
            host = header.decode("latin-1") if header is not None else None
            if not self.policy.allows(host):
                name = split_host(host or "")
                await _respond(scope, receive, send, 403,
                               error_body(messages.SERVER_HOST_REFUSED.format(host=name),
                                          "invalid_request_error", None, "host_not_allowed"))
                return
        await self.app(scope, receive, send)


class ApiKey:
    """401 unless `Authorization: Bearer KEY` or `x-api-key: KEY` (Anthropic's clients send that one)
    carries the key (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str, open_paths: tuple[str, ...] = OPEN_PATHS) -> None:
        self.app = app
        self.open_paths = open_paths
        self.expected = f"Bearer {key}".encode()
        self.expected_x = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths and scope.get("method") != "OPTIONS":
            headers = dict(scope.get("headers") or [])
            given, given_x = headers.get(b"authorization", b""), headers.get(b"x-api-key", b"")
            # Both compared, whichever is sent, so the time taken says nothing about which matched.
            if not (hmac.compare_digest(given, self.expected) | hmac.compare_digest(given_x, self.expected_x)):
                if given or given_x:
                    message = "invalid API key"
                elif scope["path"].startswith("/v1/messages"):
                    message = messages.ANTHROPIC_MISSING_KEY
                else:
                    message = "missing API key: send 'Authorization: Bearer KEY'"
                await _respond(scope, receive, send, 401,
                               error_body(message, "invalid_request_error", None, "invalid_api_key"),
                               headers={"WWW-Authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


async def _respond(scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None, close: bool = False) -> None:
    app = scope.get("app")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.count_error(status)
    headers = dict(headers or {})
    if close:
        # Part of the body is still unread: it must not be taken for the next request.
        headers["Connection"] = "close"
    response = JSONResponse(shaped_for_path(scope.get("path", ""), body, status), status_code=status, headers=headers)
    await response(scope, receive, send)
