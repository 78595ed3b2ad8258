"""What web pages cannot make the local server do behind the user's back: answer under a rebound name
(DNS rebinding: the Host header is checked), or generate for a cross-site POST that needs no CORS
preflight (text/plain, form-encoded or untyped bodies are a 415). In-process with a fake engine for the
rules, then end to end on the real executable with curl, httpx and the official `openai` client."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.app import is_json_media_type
from llmpack.runtime.server.host_check import HostPolicy, split_host
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.server_fixtures import ServerProcess, running_server
from test_server_unit import FakeEngine

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
EVIL = "evil.example.com"


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    assert not body["error"]["message"].startswith("error:")
    return body["error"]


# -- the rules, in-process -----------------------------------------------------------------------


@pytest.mark.parametrize("header, host", [
    ("localhost:8080", "localhost"), ("LocalHost.", "localhost"), ("[::1]:8080", "::1"), ("[::1]", "::1"),
    ("127.0.0.1:80", "127.0.0.1"), ("::1", "::1"), ("Evil.Example.com:443", "evil.example.com"),
])
def test_split_host(header: str, host: str) -> None:
    assert split_host(header) == host


@pytest.mark.parametrize("header", [
    "localhost", "localhost:8080", "app.localhost:1", "127.0.0.1:8080", "[::1]:8080", "10.1.2.3",
    "[fe80::1]", "203.0.113.9:8080", None, "",
])
def test_local_names_and_any_ip_literal_are_allowed(header: str | None) -> None:
    assert HostPolicy.from_settings(Settings()).allows(header)


@pytest.mark.parametrize("header", [
    EVIL, f"{EVIL}:8080", "localhost.evil.example.com", "127.0.0.1.nip.io", "evillocalhost", "2130706433",
])
def test_other_names_are_refused(header: str) -> None:
    assert not HostPolicy.from_settings(Settings()).allows(header)


def test_allowed_hosts_and_a_host_name() -> None:
    policy = HostPolicy.from_settings(Settings(allowed_hosts=f"{EVIL}, *.corp.example,", host="llm.lan"))
    assert policy.allows(f"{EVIL}:8080") and policy.allows("a.b.corp.example") and policy.allows("LLM.LAN:1")
    assert not policy.allows("corp.example") and not policy.allows("other.example.com")
    assert HostPolicy.from_settings(Settings(allowed_hosts="*")).allows("anything.example")
    assert not HostPolicy.from_settings(Settings(host="0.0.0.0")).allows(EVIL)


@pytest.mark.parametrize("content_type, ok", [
    ("application/json", True), ("application/json; charset=utf-8", True), ("Application/JSON", True),
    ("application/vnd.api+json", True), ("text/plain", False), ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False), ("text/json", False), ("", False),
])
def test_json_media_types(content_type: str, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok


def _client(engine: FakeEngine, **settings) -> TestClient:
    app_settings = Settings(**settings)
    return TestClient(app_for(app_settings, EngineHolder.loaded(app_settings, engine)),
                      base_url="http://localhost", raise_server_exceptions=False)


def test_rebound_host_is_403_before_anything_else_but_health_answers() -> None:
    engine = FakeEngine()
    client = _client(engine, api_key="k")
    headers = {"Host": EVIL, "Authorization": "Bearer k"}
    for response in (client.get("/v1/models", headers=headers), client.get("/", headers=headers),
                     client.post("/v1/chat/completions", json=CHAT, headers=headers),
                     client.get("/v1/models", headers={"Host": EVIL})):  # 403, not 401: the key is not probed
        error = _error(response, 403)
        assert error["code"] == "host_not_allowed"
        assert error["message"] == messages.SERVER_HOST_REFUSED.format(host=EVIL)
    assert engine.requests == []
    assert client.get("/health", headers={"Host": "lb-probe.internal"}).status_code == 200
    assert client.get("/v1/models", headers={"Host": "127.0.0.1:9", "Authorization": "Bearer k"}).status_code == 200


def test_bodies_not_declared_as_json_are_415_and_never_generate() -> None:
    engine = FakeEngine()
    client = _client(engine)
    body = json.dumps(CHAT).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"):
        error = _error(client.post("/v1/chat/completions", content=body, headers={"Content-Type": content_type}), 415)
        assert error["code"] == "unsupported_media_type"
        assert error["message"] == messages.SERVER_NOT_JSON.format(got=repr(content_type))
    untyped = client.post("/v1/chat/completions", content=body)  # bytes: httpx adds no Content-Type
    assert "content-type" not in untyped.request.headers
    assert "no Content-Type" in _error(untyped, 415)["message"]
    assert engine.requests == []
    assert client.post("/v1/chat/completions", content=body,
                       headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert client.post("/tokenize", content=b'{"content": "ab"}',
                       headers={"Content-Type": "application/merge-patch+json"}).json() == {"tokens": [97, 98]}
    # No body at all: nothing a page could abuse; the route says what it needs.
    assert "JSON body" in _error(client.post("/v1/chat/completions"), 400)["message"]
    assert len(engine.requests) == 1


# -- end to end on the real executable ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(tiny_bundle, "-c", "512", log_path=log) as running:
        yield running


def _port(server: ServerProcess) -> int:
    return int(server.url.rstrip("/").rsplit(":", 1)[1])


@pytest.mark.slow
def test_e2e_a_rebound_name_is_refused_and_local_names_answer(server: ServerProcess) -> None:
    port = _port(server)
    models = server.base_url + "/models"
    error = _error(httpx.get(models, headers={"Host": f"{EVIL}:{port}"}, timeout=10), 403)
    assert "--allowed-hosts" in error["message"] and EVIL in error["message"]
    before = server.metrics()
    _error(httpx.post(server.base_url + "/chat/completions", json=CHAT, headers={"Host": EVIL}, timeout=30), 403)
    assert server.metrics()["llmpack_prompt_tokens_total"] == before["llmpack_prompt_tokens_total"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(models, headers={"Host": host}, timeout=10).status_code == 200, host
    assert httpx.get(server.url + "health", headers={"Host": EVIL}, timeout=10).status_code == 200
    assert "Traceback" not in server.log


@pytest.mark.slow
def test_e2e_allowed_hosts_lets_a_name_in(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-c", "512", "--allowed-hosts", f"other.example,{EVIL}",
                        log_path=tmp_path / "server.log") as server:
        assert httpx.get(server.base_url + "/models", headers={"Host": f"{EVIL}:{_port(server)}"},
                         timeout=10).status_code == 200
        answer = httpx.post(server.base_url + "/chat/completions", json=CHAT, headers={"Host": EVIL}, timeout=60)
        assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
        _error(httpx.get(server.base_url + "/models", headers={"Host": "third.example"}, timeout=10), 403)


@pytest.mark.slow
def test_e2e_cross_site_bodies_are_415_and_nothing_is_generated(server: ServerProcess) -> None:
    url = server.base_url + "/chat/completions"
    body = json.dumps(CHAT)
    before = server.metrics()
    plain = _error(httpx.post(url, content=body, headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=30), 415)
    assert "application/json" in plain["message"] and plain["code"] == "unsupported_media_type"
    # What `curl -d` sends without -H: form encoding, which any page can send too.
    curl = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", url, "-d", body],
                          capture_output=True, text=True, timeout=30, check=True)
    curl_body, status = curl.stdout.rsplit("\n", 1)
    assert status == "415" and "-H 'Content-Type: application/json'" in json.loads(curl_body)["error"]["message"]
    untyped = httpx.post(url, content=body.encode(), timeout=30)  # bytes: httpx adds no Content-Type
    assert "content-type" not in untyped.request.headers and "no Content-Type" in _error(untyped, 415)["message"]
    after = server.metrics()
    for name in ("llmpack_prompt_tokens_total", "llmpack_generated_tokens_total"):
        assert after[name] == before[name], name
    # The README's curl, with the header, generates.
    curl = subprocess.run(["curl", "-s", url, "-H", "Content-Type: application/json", "-d", body],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(curl.stdout)["object"] == "chat.completion"
    assert server.metrics()["llmpack_prompt_tokens_total"] > before["llmpack_prompt_tokens_total"]


@pytest.mark.slow
def test_e2e_the_openai_client_and_the_web_page_still_work(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
    answer = client.chat.completions.create(model="m", messages=CHAT["messages"], max_tokens=4)
    assert answer.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model="m", prompt="hello", max_tokens=4, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    page = httpx.get(server.url, headers={"Host": f"localhost:{_port(server)}"}, timeout=10)
    assert page.status_code == 200 and '"Content-Type": "application/json"' in page.text
