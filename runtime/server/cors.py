"""Opt-in CORS (`--cors-origins`): which web sites' pages may read this server's answers.

Off by default: a page on any other site must not be able to use the model on the user's machine
(see app.py's JsonOnly: without CORS, a cross-site page cannot even send a JSON body). With
`--cors-origins https://app.example,http://localhost:5173` those origins get Starlette's
CORSMiddleware: preflight OPTIONS answered (no API key needed: browsers never send one there) and
`Access-Control-Allow-*` on the answers; `*` allows every origin, with a warning at start, and
`localhost` (llama-server's keyword) the pages of this machine's loopback names, on any port.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import messages
from ..errors import UsageError

log = logging.getLogger(__name__)

# scheme://host[:port], as a browser sends it in Origin (no path, no trailing slash).
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$", re.IGNORECASE)
METHODS = ["GET", "POST", "DELETE", "OPTIONS"]
# llama-server's keyword `localhost`: pages served from this machine's loopback names, any port.
LOCALHOST = "localhost"
LOCALHOST_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


class CorsOriginInvalid(UsageError):
    pass


def parse_origins(value: str | None) -> list[str]:
    """The origins of --cors-origins; [] when CORS is off. Raises CorsOriginInvalid (exit 2)."""
    if value is None:
        return []
    origins = [o.strip() for o in value.split(",") if o.strip()]
    if not origins:
        raise CorsOriginInvalid(messages.CORS_ORIGIN_INVALID.format(origin=value))
    for origin in origins:
        if origin not in ("*", LOCALHOST) and not _ORIGIN.match(origin):
            raise CorsOriginInvalid(messages.CORS_ORIGIN_INVALID.format(origin=origin))
    return ["*"] if "*" in origins else [o.rstrip("/").lower() for o in origins]


class _CorsHeaderCase:
    """Spells the Access-Control-* headers as llama-server and most servers send them (Starlette writes
    them lower-case; HTTP does not mind, but clients that copy headers into a dict look them up so)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def cased(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(_CASED.get(k.lower(), k), v) for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, cased if scope["type"] == "http" else send)


_CASED = {name.lower().encode(): name.encode() for name in (
    "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
    "Access-Control-Allow-Credentials", "Access-Control-Max-Age", "Access-Control-Expose-Headers")}


def add_cors(app: FastAPI, value: str | None) -> None:
    origins = parse_origins(value)
    if not origins:
        return
    if origins == ["*"]:
        log.warning("%s", messages.CORS_ANY_ORIGIN)
    loopback = LOCALHOST in origins
    # Headers: whatever the page asks for in its preflight (Authorization, x-api-key, the SDKs' own).
    app.add_middleware(CORSMiddleware, allow_origins=[o for o in origins if o != LOCALHOST],
                       allow_origin_regex=LOCALHOST_ORIGINS if loopback else None, allow_methods=METHODS,
                       allow_headers=["*"], allow_credentials=False, max_age=600)
    app.add_middleware(_CorsHeaderCase)
