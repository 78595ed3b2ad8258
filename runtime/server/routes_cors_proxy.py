"""/cors-proxy: llama-server's MCP proxy (--ui-mcp-proxy, off by default). The web page reaches MCP servers
from the browser, which needs each server to answer this page's origin (CORS); many do not. With the
proxy on, the page sends its MCP requests here instead: GET or POST /cors-proxy?url=TARGET, the headers
meant for the target prefixed with x-llama-server-proxy-header- (as llama-server's page sends them), and
the target's answer comes back as it streams (MCP answers with SSE).

It makes this server fetch URLs a request names, a door into the user's network, so it is opt-in, as in
llama-server, says so at start, needs the API key like every API route, and refuses what a browser marks
as sent by another site (Sec-Fetch-Site): a page elsewhere could otherwise make it GET internal URLs.
Redirects are not followed; userinfo in the URL is refused (llama-server refuses a password)."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import messages
from .errors import ApiError

log = logging.getLogger(__name__)
router = APIRouter()

HEADER_PREFIX = "x-llama-server-proxy-header-"
TIMEOUT_SECONDS = 600  # llama-server's read and write timeouts
CHUNK = 64 * 1024
# Headers that describe one connection, not the message: never passed on, either way.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})


def disabled() -> JSONResponse:
    """llama-server's answer for a feature it was not started with."""
    return JSONResponse({"error": {"message": "this feature is disabled", "type": "feature_disabled"}}, status_code=403)


@router.get("/cors-proxy")
@router.post("/cors-proxy")
async def cors_proxy(request: Request):
    if not request.app.state.settings.ui_mcp_proxy:
        return disabled()
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise ApiError(403, messages.MCP_PROXY_CROSS_SITE, "permission_error")
    scheme, host, port, path = target(request.query_params.get("url"))
    headers = {name[len(HEADER_PREFIX):]: value for name, value in request.headers.items()
               if name.lower().startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)
               and name[len(HEADER_PREFIX):].lower() not in HOP_BY_HOP}
    body = await request.body() if request.method == "POST" else None
    log.info("proxying %s to %s://%s:%d%s", request.method, scheme, host, port, path)
    try:
        connection, answer = await run_in_threadpool(_send, scheme, host, port, request.method, path, headers, body)
    except (OSError, http.client.HTTPException) as exc:
        raise ApiError(502, messages.MCP_PROXY_UNREACHABLE.format(url=f"{scheme}://{host}:{port}", reason=exc),
                       "server_error") from None
    passed = {name: value for name, value in answer.getheaders() if name.lower() not in HOP_BY_HOP}
    return StreamingResponse(_relay(connection, answer), status_code=answer.status, headers=passed)


def target(url: str | None) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with its query) of the URL to proxy to, or a 400 saying what is wrong."""
    if not url:
        raise ApiError(400, messages.MCP_PROXY_NO_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ApiError(400, messages.MCP_PROXY_BAD_URL.format(reason=exc)) from None
    if parts.scheme not in ("http", "https"):
        raise ApiError(400, messages.MCP_PROXY_BAD_URL.format(reason=f"unsupported scheme {parts.scheme!r} (http or https)"))
    if not parts.hostname:
        raise ApiError(400, messages.MCP_PROXY_BAD_URL.format(reason="no host"))
    if parts.username is not None or parts.password is not None:
        raise ApiError(400, messages.MCP_PROXY_BAD_URL.format(reason="credentials in the URL are not passed on"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def _send(scheme: str, host: str, port: int, method: str, path: str, headers: dict[str, str],
          body: bytes | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    connection = kind(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request(method, path, body=body, headers=headers)
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def _relay(connection: http.client.HTTPConnection, answer: http.client.HTTPResponse) -> Iterator[bytes]:
    """The target's body as it arrives (run in a worker thread by StreamingResponse); closed when the
    page goes away, too."""
    try:
        while chunk := answer.read1(CHUNK):
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        log.warning("the proxied answer broke off: %s", exc)
    finally:
        connection.close()
