"""End to end: CORS is off unless --cors-origins names the origins (real executable, raw HTTP as a
browser sends it: preflight OPTIONS, then the request with its Origin)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from support.commands import error_line, one_error_line, run, warning_line
from support.server_fixtures import ServerProcess, running_server

from llmpack.runtime import messages

pytestmark = pytest.mark.slow

GOOD = "http://good.example:5173"
EVIL = "http://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def plain_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tiny_bundle, "-c", "256", log_path=tmp_path_factory.mktemp("cors") / "s.log") as server:
        yield server


@pytest.fixture(scope="module")
def cors_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("cors") / "s.log"
    with running_server(tiny_bundle, "-c", "256", "--cors-origins", f"{GOOD},https://other.example",
                        "--api-key", "secret", log_path=log) as server:
        yield server


def test_no_cors_headers_by_default(plain_server: ServerProcess) -> None:
    preflight = httpx.options(plain_server.base_url + "/chat/completions", headers={"Origin": GOOD, **PREFLIGHT})
    assert preflight.status_code >= 400
    assert not any(h.startswith("access-control-") for h in preflight.headers)
    answer = httpx.post(plain_server.base_url + "/chat/completions", json=BODY, headers={"Origin": GOOD}, timeout=60)
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_a_listed_origin_gets_its_preflight_and_headers_without_the_key(cors_server: ServerProcess) -> None:
    preflight = httpx.options(cors_server.base_url + "/chat/completions", headers={"Origin": GOOD, **PREFLIGHT})
    assert preflight.status_code == 200  # no API key in a preflight, as browsers send it
    assert preflight.headers["access-control-allow-origin"] == GOOD
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed and "x-stainless-os" in allowed
    answer = httpx.post(cors_server.base_url + "/chat/completions", json=BODY, timeout=60,
                        headers={"Origin": GOOD, "Authorization": "Bearer secret"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == GOOD
    # A page's script can read the 401 too, and the key is still required.
    refused = httpx.post(cors_server.base_url + "/chat/completions", json=BODY, headers={"Origin": GOOD}, timeout=60)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == GOOD
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_an_origin_not_listed_gets_no_allow_header(cors_server: ServerProcess) -> None:
    preflight = httpx.options(cors_server.base_url + "/chat/completions", headers={"Origin": EVIL, **PREFLIGHT})
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers
    answer = httpx.get(cors_server.base_url + "/models", timeout=60,
                       headers={"Origin": EVIL, "Authorization": "Bearer secret"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_the_openai_client_still_works_with_cors_on(cors_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=cors_server.base_url, api_key="secret", max_retries=0, timeout=60)
    assert client.chat.completions.create(model="m", messages=BODY["messages"], max_tokens=2).choices


def test_any_origin_is_allowed_with_a_warning(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-c", "256", "--cors-origins", "*", log_path=tmp_path / "s.log") as server:
        preflight = httpx.options(server.base_url + "/models", headers={"Origin": EVIL, **PREFLIGHT})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
        assert warning_line(messages.CORS_ANY_ORIGIN) in server.log


def test_a_bad_origin_is_one_line_and_exit_2(tiny_bundle: Path) -> None:
    result = run([str(tiny_bundle), "--server", "--nobrowser", "--port", "0", "--cors-origins", "good.example/"])
    assert one_error_line(result) == error_line(messages.CORS_ORIGIN_INVALID.format(origin="good.example/"))
    assert result.returncode == 2


def test_localhost_allows_this_machines_pages_on_any_port(tiny_bundle: Path, tmp_path: Path) -> None:
    """llama-server's keyword: --cors-origins localhost admits http(s)://localhost, 127.0.0.1 and [::1]
    on any port, and no other site (localhost.evil.com included)."""
    with running_server(tiny_bundle, "-c", "256", "--cors-origins", "localhost", log_path=tmp_path / "s.log") as server:
        def preflight(origin: str) -> httpx.Response:
            return httpx.options(server.base_url + "/chat/completions", headers={"Origin": origin, **PREFLIGHT})

        for origin in ("http://localhost", "http://localhost:8080", "https://127.0.0.1:3000", "http://[::1]:3000"):
            answer = preflight(origin)
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
            # Spelled as llama-server sends it: clients that copy the headers into a dict look it up so.
            assert (b"Access-Control-Allow-Origin", origin.encode()) in answer.headers.raw
        for origin in ("http://evil.com", "http://notlocalhost", "http://localhost.evil.com"):
            assert "access-control-allow-origin" not in preflight(origin).headers
