"""One place that turns errors into OpenAI's error JSON: `{"error": {"message", "type", "param", "code"}}`.

Our typed errors (ApiError, ContextOverflow, the chat template's TemplateError, other UserErrors) and
FastAPI's validation and routing errors each map to one status and type here; nothing a client sends
can produce a 500, which is kept for our own bugs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..formats.chat_template import TemplateError
from ..errors import (
    ContextOverflow,
    EngineFailure,
    EngineUnavailable,
    GrammarInvalid,
    UserError,
)

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class ApiError(Exception):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, type: str, param: str | None = None, code: str | int | None = None,
               **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


def _ollama_shape(body: dict[str, Any]) -> dict[str, Any]:
    return {"error": body["error"]["message"]}


# Anthropic's error types, by our own OpenAI body's code or type (each status here has one of its own).
ANTHROPIC_ERROR_TYPES = {"invalid_api_key": "authentication_error", "host_not_allowed": "permission_error",
                         "not_found": "not_found_error", "request_too_large": "request_too_large",
                         "unavailable_error": "overloaded_error", "server_error": "api_error"}


def anthropic_shape(body: dict[str, Any]) -> dict[str, Any]:
    error = body["error"]
    kind = ANTHROPIC_ERROR_TYPES.get(error.get("code") or "") or ANTHROPIC_ERROR_TYPES.get(error.get("type"))
    return {"type": "error", "error": {"type": kind or INVALID_REQUEST, "message": error["message"]}}


# Dialects whose clients read errors in their own shape, by path prefix: Ollama's `{"error": "..."}` on
# /api/*, Anthropic's `{"type": "error", "error": {"type", "message"}}` on /v1/messages. Everything else
# answers OpenAI's shape.
ERROR_SHAPES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"/api/": _ollama_shape,
                                                                      "/v1/messages": anthropic_shape}


# llama-server's native routes (routes_llamacpp.py): `{"error": {"code": STATUS, "message", "type"}}`, which
# its clients (its web UI, llama.vim, llama.vscode) read; the one shape that needs the status.
LLAMA_PATHS = frozenset({"/completion", "/completions", "/infill", "/apply-template", "/props", "/slots", "/embeddings",
                         "/rerank", "/reranking", "/v1/rerank", "/v1/reranking"})


def llama_shape(body: dict[str, Any], status: int) -> dict[str, Any]:
    error = body["error"]
    shaped = {"code": status, "message": error["message"], "type": error["type"]}
    shaped.update({k: error[k] for k in ("n_prompt_tokens", "n_ctx") if k in error})  # exceed_context_size_error's
    return {"error": shaped}


def shaped_for_path(path: str, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    """An OpenAI error body in the shape of the dialect that `path` belongs to."""
    if path in LLAMA_PATHS:
        return llama_shape(body, status)
    for prefix, shape in ERROR_SHAPES.items():
        if path.startswith(prefix):
            return shape(body)
    return body


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, body) for any exception; used by the handlers and by streams that fail mid-way."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.message, exc.type, exc.param, exc.code)
    if isinstance(exc, ContextOverflow):
        # llama.cpp's server type and fields, OpenAI's code: clients of either recognise it.
        return 400, error_body(str(exc), "exceed_context_size_error", "messages",
                               "context_length_exceeded", n_prompt_tokens=exc.n_prompt_tokens, n_ctx=exc.n_ctx)
    if isinstance(exc, TemplateError):
        return 400, error_body(str(exc), INVALID_REQUEST, "messages", "invalid_messages")
    if isinstance(exc, GrammarInvalid):
        return 400, error_body(str(exc), INVALID_REQUEST, "grammar", "invalid_grammar")
    if isinstance(exc, EngineUnavailable):  # a load balancer retries a 503 elsewhere
        return 503, error_body(str(exc), "unavailable_error")
    if isinstance(exc, EngineFailure):
        return 500, error_body(str(exc), "server_error")
    if isinstance(exc, UserError):
        return 400, error_body(str(exc), INVALID_REQUEST)
    if isinstance(exc, UnicodeEncodeError):
        # JSON may carry a lone surrogate ("\ud800"), which is no character and has no UTF-8 form.
        return 400, error_body(f"the text holds an unpaired surrogate ({exc.object[exc.start:exc.end]!a}), "
                               "which is not valid Unicode", INVALID_REQUEST, None, "invalid_text")
    log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return 500, error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error")


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    param = _location(tuple(first.get("loc", ()))) or None
    if param is None:
        return ("the request needs a JSON body" if first.get("type") == "missing"
                else "the request body must be a JSON object"), None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{param}: {message}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, status: int, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> JSONResponse:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.count_error(status)
        return JSONResponse(shaped_for_path(request.url.path, body, status), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return respond(request, 400, error_body(message, INVALID_REQUEST, param))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message, code = f"unknown route: {request.method} {request.url.path}", "not_found"
        elif exc.status_code == 405:
            message, code = f"method {request.method} is not allowed on {request.url.path}", "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        kind = INVALID_REQUEST if exc.status_code < 500 else "server_error"
        return respond(request, exc.status_code, error_body(message, kind, None, code),
                       getattr(exc, "headers", None))

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        status, body = error_payload(exc)
        return respond(request, status, body, exc.headers)

    @app.exception_handler(UserError)
    @app.exception_handler(UnicodeEncodeError)
    async def on_user_error(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_payload(exc)
        return respond(request, status, body)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_payload(exc)
        return respond(request, status, body)
