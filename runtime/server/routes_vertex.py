"""Vertex AI's prediction protocol, as llama-server serves it when `AIP_MODE=PREDICTION`: Google Cloud's
custom-container contract (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements).

The container listens on `AIP_HTTP_PORT` (mode.py), answers health checks on `AIP_HEALTH_ROUTE` as on
/health, and takes `POST AIP_PREDICT_ROUTE` (default /predict) with `{"instances": [...]}`: each instance
names one of our POST routes in `@requestFormat` (llama-server's camelCase alias of its path,
`chatCompletions` for /v1/chat/completions, or the path itself) and is answered by that route, run
through the whole app (host check, API key, body checks) with the caller's headers; streaming is off.
The answer is `{"predictions": [...]}`, one per instance in order, an instance's error as its `{"error"}`.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message

from .errors import ApiError

MAX_INSTANCES = 128  # llama-server's


def enabled() -> bool:
    return os.environ.get("AIP_MODE", "") == "PREDICTION"


def health_paths() -> tuple[str, ...]:
    """AIP_HEALTH_ROUTE, which answers as /health (and is as open), in prediction mode."""
    path = os.environ.get("AIP_HEALTH_ROUTE", "") if enabled() else ""
    return (path,) if path.startswith("/") else ()


def port(default: int) -> int:
    """AIP_HTTP_PORT overrides --port in prediction mode (Vertex AI sends traffic there)."""
    value = os.environ.get("AIP_HTTP_PORT", "") if enabled() else ""
    return int(value) if value.isdigit() and int(value) <= 65535 else default


def request_format(path: str) -> str:
    """llama-server's path_to_gcp_format: /v1/chat/completions -> chatCompletions, /apply-template -> applyTemplate."""
    text = path[3:] if path.startswith("/v1") and len(path) > 3 else path
    text = text.lstrip("/")
    out, capital = [], False
    for c in text:
        if c in "{:":
            break
        if c in "/-_":
            capital = True
        else:
            out.append(c.upper() if capital else c)
            capital = False
    return "".join(out)


def install(app: FastAPI, routers: list[APIRouter]) -> None:
    """Adds the predict route (and the health route's second name) when AIP_MODE=PREDICTION; `routers`:
    the app's own, whose POST routes an instance may name (in the order the app includes them)."""
    if not enabled():
        return
    predict_path = os.environ.get("AIP_PREDICT_ROUTE") or "/predict"
    paths: dict[str, str] = {}
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    for route in routes:
        if "POST" in route.methods and "{" not in route.path:
            paths.setdefault(request_format(route.path), route.path)  # the first registered wins, as upstream
            paths.setdefault(route.path, route.path)
    for health_path in health_paths():
        health = next(r for r in routes if r.path == "/health")
        app.add_api_route(health_path, health.endpoint, methods=["GET"])

    async def predict(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
            raise ApiError(400, "the body must be a JSON object with an array named instances", param="instances")
        instances = body["instances"]
        if len(instances) > MAX_INSTANCES:
            raise ApiError(400, f"at most {MAX_INSTANCES} instances per request", param="instances")
        return {"predictions": await asyncio.gather(*(_one(request, paths, i) for i in instances))}

    app.add_api_route(predict_path, predict, methods=["POST"])


def _error(message: str) -> dict[str, Any]:
    return {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}


async def _one(request: Request, paths: dict[str, str], instance: Any) -> Any:
    if not isinstance(instance, dict):
        return _error("each instance must be a JSON object")
    form = instance.get("@requestFormat")
    if not isinstance(form, str):
        return _error("each instance must include a string @requestFormat")
    path = paths.get(form)
    if path is None:
        return _error(f"no handler for @requestFormat: {form}")
    payload = {k: v for k, v in instance.items() if k != "@requestFormat"}
    if "stream" in payload:
        payload["stream"] = False  # the predict route answers whole
    body = await _post(request, path, json.dumps(payload).encode())
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


async def _post(request: Request, path: str, body: bytes) -> bytes:
    """POSTs `body` to `path` through the whole app (its middleware included), in process, with the
    caller's headers (Host, the API key), and returns the answer's body."""
    outer = request.scope
    headers = [(k, v) for k, v in outer["headers"] if k.lower() not in (b"content-length", b"content-type")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": outer.get("asgi", {"version": "3.0"}), "http_version": "1.1", "method": "POST",
             "scheme": outer.get("scheme", "http"), "server": outer.get("server"), "client": outer.get("client"),
             "root_path": "", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers}
    answered = asyncio.Event()
    chunks: list[bytes] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()  # then the "client" goes: a generation never waits on it
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                answered.set()

    app: ASGIApp = request.app
    await app(scope, receive, send)
    return b"".join(chunks)
