"""The MCP proxy (llama-server's --ui-mcp-proxy, /cors-proxy): off by default (llama-server's 403), and
with it on, the web page in a real headless Chromium reaches an MCP server that gives it no CORS answer
(which the page alone cannot), through a real executable started with an API key: tools listed, a call
confirmed and run, its result sent back. Over HTTP: the headers meant for the target travel prefixed,
the target's session header comes back, and what the proxy refuses (no URL, another scheme, credentials
in the URL, a request another site's page made, an unreachable target) is a 4xx/502 with an error body."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.devtools import Page, canned_reply, fulfil
from support.mcp_server import running_mcp_server
from support.server_fixtures import PAGE_SERVER_ARGS, ServerProcess, running_server
from support.web_page import TEXTS, browser, server, tool_call_reply  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

KEY = "proxy-test-key"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(scope="module")
def proxying(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("mcp-proxy") / "server.log"
    with running_server(tiny_bundle, *PAGE_SERVER_ARGS, "--ui-mcp-proxy", "--api-key", KEY, log_path=log_path) as running:
        yield running


@pytest.fixture(scope="module")
def no_cors_mcp() -> Iterator[tuple[str, list[dict]]]:
    with running_mcp_server(cors=False) as running:
        yield running


def _proxy(base: str, url: str | None, key: str | None = KEY, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    params = {"url": url} if url is not None else {}
    return httpx.post(base + "cors-proxy", params=params, json=INIT, headers=headers, timeout=30)


def test_off_by_default_as_in_llama_server(server: ServerProcess, proxying: ServerProcess, no_cors_mcp) -> None:
    url, _calls = no_cors_mcp
    off = httpx.post(server.url + "cors-proxy", params={"url": url}, json=INIT, timeout=30)
    assert off.status_code == 403 and off.json() == {"error": {"message": "this feature is disabled", "type": "feature_disabled"}}
    assert httpx.get(server.url + "props", timeout=30).json()["cors_proxy_enabled"] is False
    on = httpx.get(proxying.url + "props", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert on["cors_proxy_enabled"] is True
    assert "--ui-mcp-proxy: /cors-proxy fetches the URLs" in proxying.log_path.read_text()


def test_the_proxy_passes_prefixed_headers_and_the_answer(proxying: ServerProcess, no_cors_mcp) -> None:
    url, calls = no_cors_mcp
    calls.clear()
    answer = _proxy(proxying.url, url, **{"X-Llama-Server-Proxy-Header-Authorization": "Bearer mcp-token",
                                               "X-Llama-Server-Proxy-Header-Accept": "application/json, text/event-stream"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["serverInfo"] == {"name": "test", "version": "1"}
    assert answer.headers["mcp-session-id"] == "session-1"
    # The target saw the MCP token, not this server's key.
    assert calls == [{"method": "initialize", "params": INIT["params"], "session": None, "protocol": None,
                      "authorization": "Bearer mcp-token"}]
    assert _proxy(proxying.url, url, key=None).status_code == 401  # the API key, as on every API route


def test_what_the_proxy_refuses(proxying: ServerProcess, no_cors_mcp) -> None:
    url, calls = no_cors_mcp
    calls.clear()
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/mcp"
    refused = {
        "no url": _proxy(proxying.url, None),
        "ftp": _proxy(proxying.url, "ftp://127.0.0.1/mcp"),
        "no host": _proxy(proxying.url, "http:///mcp"),
        "credentials": _proxy(proxying.url, url.replace("http://", "http://user:secret@")),
        "bad port": _proxy(proxying.url, "http://127.0.0.1:99999/mcp"),
        "cross-site": _proxy(proxying.url, url, **{"Sec-Fetch-Site": "cross-site"}),
        "unreachable": _proxy(proxying.url, closed),
    }
    statuses = {name: response.status_code for name, response in refused.items()}
    assert statuses == {"no url": 400, "ftp": 400, "no host": 400, "credentials": 400, "bad port": 400,
                        "cross-site": 403, "unreachable": 502}
    assert all(response.json()["error"]["message"].startswith("/cors-proxy ") for response in refused.values())
    assert calls == []  # none of them reached the MCP server
    assert httpx.get(proxying.url + "health", timeout=30).status_code == 200


def test_the_page_reaches_an_mcp_server_without_cors_through_the_proxy(proxying: ServerProcess, browser,  # noqa: F811
                                                                       no_cors_mcp) -> None:
    url, calls = no_cors_mcp
    calls.clear()
    page = Page(browser, proxying.url, intercept=True, ready=False)
    try:
        page.evaluate(f"sessionStorage.setItem('llmpack-api-key', {json.dumps(KEY)})")
        page.reload()
        page.evaluate("document.getElementById('settings-button').click()")
        page.wait("!document.getElementById('mcp-proxy').disabled")
        # Directly, the browser gets no CORS answer: the page says so and points at the proxy.
        page.type(url, "#mcp-new")
        page.evaluate("document.getElementById('mcp-add').click()")
        direct = page.wait("document.getElementById('mcp-list').textContent.includes('error') && "
                           "document.getElementById('mcp-list').textContent")
        page.evaluate("document.querySelector('#mcp-list button').click()")  # Remove
        page.evaluate("document.getElementById('mcp-proxy').click()")
        page.type(url, "#mcp-new")
        page.evaluate("document.getElementById('mcp-add').click()")
        status = page.wait("document.getElementById('mcp-list').textContent.includes('1 tool') && "
                           "document.getElementById('mcp-list').textContent")
        page.key("Escape", 27)
        page.send_message("What is 2 + 3?")
        fulfil(page, tool_call_reply("call_1", "add", '{"a": 2, "b": 3}'))
        run = "[...document.querySelectorAll('.tool-question button')].find(b => b.textContent === 'Run')"
        page.wait(f"!!{run}")
        page.evaluate(f"{run}.click()")
        second = json.loads(fulfil(page, canned_reply("The sum is 5.", 5))["postData"])
        page.wait(f"{TEXTS}.includes('The sum is 5.')")
        page.reload()  # kept: the server still goes through the proxy
        again = page.wait("document.getElementById('settings-button').click() || "
                          "(document.getElementById('mcp-list').textContent.includes('1 tool') && "
                          "document.getElementById('mcp-list').textContent)")
    finally:
        page.close()
    assert "add it again through this server" in direct
    assert "through this server" in status and url in status and "through this server" in again
    called = [c for c in calls if c["method"] == "tools/call"]
    assert len(called) == 1 and called[0]["params"] == {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert called[0]["session"] == "session-1" and called[0]["protocol"] == "2025-06-18"
    assert called[0]["authorization"] is None  # this server's key stays here
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
