"""What makes the web chat page an installable app (a PWA): its manifest, its icons and its service worker,
which keeps a copy of the page so that, with the server stopped, the installed app still opens and says
that the server is not running (the page itself says it: web/connect.js). Open without the API key, as
the page is: a browser fetches a manifest and icons without credentials. Off with --no-ui, as the page."""

from __future__ import annotations

import math
import struct
import zlib
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__, messages
from .errors import ApiError

router = APIRouter()

SERVICE_WORKER = "server_sw.js"
# /_app/version.json: where llama-server's page (a SvelteKit app) says its version; clients and llama.cpp's
# own tests look for it, with the rest, without the key.
WEB_APP_PATHS = ("/manifest.webmanifest", "/sw.js", "/icon.svg", "/icon-192.png", "/icon-512.png", "/_app/version.json")
ACCENT = (0x2F, 0x6F, 0xDE)  # the page's --accent

# The icon: a white speech bubble on the page's blue, as SVG and drawn again as PNG below (Chrome wants
# 192 and 512 pixel PNGs to install an app).
ICON_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512">
<rect width="512" height="512" rx="96" fill="#2f6fde"/>
<rect x="104" y="132" width="304" height="208" rx="48" fill="#fff"/>
<path d="M168 330 L248 330 L144 404 Z" fill="#fff"/>
</svg>
"""


def _rounded_span(y: float, left: float, top: float, right: float, bottom: float, r: float) -> tuple[float, float]:
    """Where the row at height `y` crosses a rounded rectangle (an empty span when it does not)."""
    if not top <= y < bottom:
        return (0.0, 0.0)
    dy = max(top + r - y, y - (bottom - r), 0.0)
    inset = r - math.sqrt(max(r * r - dy * dy, 0.0))
    return (left + inset, right - inset)


def _tail_span(y: float) -> tuple[float, float]:
    """Where the row crosses the bubble's tail, the triangle (168,330) (248,330) (144,404)."""
    if not 330 <= y <= 404:
        return (0.0, 0.0)
    t = (y - 330) / 74
    return (168 + (144 - 168) * t, 248 + (144 - 248) * t)


@lru_cache(maxsize=2)
def icon_png(size: int) -> bytes:
    """ICON_SVG drawn at `size` pixels (no anti-aliasing: a flat shape), as an RGBA PNG, a row at a time."""
    scale = 512 / size
    blue, white = bytes(ACCENT) + b"\xff", b"\xff\xff\xff\xff"
    rows = []
    for j in range(size):
        y = (j + 0.5) * scale
        row = bytearray(4 * size)
        for (a, b), colour in ((_rounded_span(y, 0, 0, 512, 512, 96), blue),
                               (_rounded_span(y, 104, 132, 408, 340, 48), white), (_tail_span(y), white)):
            first, last = max(math.ceil(a / scale - 0.5), 0), min(math.floor(b / scale - 0.5), size - 1)
            if last >= first:
                row[4 * first:4 * (last + 1)] = colour * (last - first + 1)
        rows.append(b"\0" + bytes(row))  # filter: none

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + chunk(b"IEND", b""))


def _check_ui(request: Request) -> None:
    if request.app.state.settings.no_ui:
        raise ApiError(404, messages.SERVER_NO_UI, code="not_found")


@router.get("/manifest.webmanifest")
async def manifest(request: Request):
    _check_ui(request)
    holder = request.app.state.holder
    name = f"{holder.model_name} · llmpack" if holder.ready else "llmpack chat"
    body = {"name": name, "short_name": "llmpack", "description": "Chat with the model this llmpack file serves",
            "start_url": ".", "scope": ".", "display": "standalone", "background_color": "#ffffff",
            "theme_color": "#2f6fde",
            "icons": [{"src": "icon-192.png", "sizes": "192x192", "type": "image/png"},
                      {"src": "icon-512.png", "sizes": "512x512", "type": "image/png"},
                      {"src": "icon.svg", "sizes": "any", "type": "image/svg+xml"}]}
    return JSONResponse(body, media_type="application/manifest+json", headers={"Cache-Control": "no-cache"})


@router.get("/icon.svg")
async def icon_svg(request: Request):
    _check_ui(request)
    return Response(ICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get("/icon-{size}.png")
async def icon(size: int, request: Request):
    _check_ui(request)
    if size not in (192, 512):
        raise ApiError(404, f"no icon of {size} pixels: 192 and 512", code="not_found")
    return Response(icon_png(size), media_type="image/png", headers={"Cache-Control": "max-age=86400"})


@router.get("/sw.js")
async def service_worker(request: Request):
    _check_ui(request)
    script = files("llmpack.templates").joinpath(SERVICE_WORKER).read_bytes()
    # no-cache: the browser checks for a new worker at each visit (a new llmpack, a new page).
    return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/_app/version.json")
async def version(request: Request):
    _check_ui(request)
    return JSONResponse({"version": __version__}, headers={"Cache-Control": "no-cache"})
