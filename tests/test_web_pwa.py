"""The page as an installable app (issue 24): its manifest and icons are served, Chromium finds it
installable, and once visited it opens from the service worker's copy while the server is stopped,
saying that the server is not running, with the chats kept in the browser."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import pytest
from support.devtools import Page
from support.server_fixtures import start_server
from support.web_page import TEXTS, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_the_page_installs_as_an_app_and_opens_offline(tiny_bundle: Path, browser, tmp_path: Path) -> None:
    own = start_server(tiny_bundle, "-n", "4", "-c", "256", "--api-key", "sesame", log_path=tmp_path / "server.log")
    page = None
    try:
        # Open without the key, as a browser fetches them.
        manifest = httpx.get(own.url + "manifest.webmanifest", timeout=10)
        icons = {icon["src"]: httpx.get(own.url + icon["src"], timeout=10) for icon in manifest.json()["icons"]}
        worker = httpx.get(own.url + "sw.js", timeout=10)
        # What llama.cpp's own suite asks of a server with a key (test_access_static_assets_without_api_key).
        static = [httpx.get(own.url + path, timeout=10).status_code
                  for path in ("", "sw.js", "manifest.webmanifest", "_app/version.json")]
        page = Page(browser, own.url, ready=False)
        page.wait("!!document.querySelector('#banner input')")
        page.type("sesame", "#banner input")
        page.key("Enter", 13)
        page.wait("typeof modelName === 'string' && document.getElementById('model').textContent === modelName")
        # Once its worker is active, the next visit goes through it (the first may end before it is).
        assert page.evaluate("navigator.serviceWorker.ready.then(r => !!r.active)")
        page.reload()
        page.wait("navigator.serviceWorker.controller !== null")
        installable = page.send("Page.getInstallabilityErrors")["installabilityErrors"]
        page.evaluate("localStorage.setItem('llmpack-chats', JSON.stringify([{id: 'a', title: 'Kept', created: 1, "
                      "updated: 1, messages: [{role: 'user', content: 'Kept question'}]}]))")
        assert own.interrupt() == 0
        page.reload(ready=False)
        banner = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        offline = [page.evaluate("document.getElementById('model').textContent"), page.evaluate(TEXTS)]
    finally:
        if page is not None:
            page.close()
        if own.process.poll() is None:
            own.interrupt()
    assert manifest.status_code == 200 and manifest.headers["content-type"] == "application/manifest+json"
    body = manifest.json()
    assert body["name"] == "tiny · llmpack" and body["display"] == "standalone" and body["start_url"] == "."
    for src, response in icons.items():
        assert response.status_code == 200, src
        if src.endswith(".png"):
            assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", response.content[16:24])
            assert f"{width}x{height}" == next(i["sizes"] for i in body["icons"] if i["src"] == src)
    assert worker.status_code == 200 and worker.headers["content-type"].startswith("text/javascript")
    assert installable == [] and static == [200, 200, 200, 200]
    assert banner.startswith("The server is not running")
    assert offline == ["server not running", ["Kept question"]]
