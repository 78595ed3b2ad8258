"""Honest endings: a generation cut by the server's shutdown (Ctrl-C on --server) must not look complete.
A stream ends with an error event saying the server is shutting down (as llama.cpp's server ends a
stream on an error), never with finish_reason "stop"; a plain request gets a 503. In-process with a
fake engine, then end to end on the real executable."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.engine.types import GenerationRequest, Piece, Timings
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.app import cancel_generations
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.server_fixtures import ServerProcess, start_server
from support.tiny_model import write_tiny_gguf
from test_server_unit import FakeEngine

SHUTTING_DOWN = messages.SERVER_SHUTTING_DOWN
CTX = 16384
# No end: llama.cpp's grammar sampler bans end-of-generation until the grammar is complete.
ENDLESS = {"grammar": "root ::= [a-z ] root", "temperature": 1.0}


class EndlessEngine(FakeEngine):
    """Says 'a' until cancelled, then ends with finish_reason "cancelled", as the real scheduler does."""

    def start(self, request: GenerationRequest, cancel: threading.Event, deliver) -> None:
        self.requests.append(request)

        def run() -> None:
            while not cancel.wait(0.005):
                deliver(Piece("a", (97,)))
            deliver(Piece("", (), "cancelled", Timings(len(request.prompt_tokens), 0, 0.0, 0, 0.0)))

        threading.Thread(target=run, daemon=True).start()


def _events(lines) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line]


def _assert_ends_with_shutdown_error(events: list[str]) -> None:
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error == {"message": SHUTTING_DOWN, "type": "unavailable_error", "param": None,
                     "code": "server_shutting_down"}
    chunks = [json.loads(e) for e in events[:-2]]
    assert chunks and all(c["choices"][0]["finish_reason"] is None for c in chunks if c.get("choices"))


def _wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                              "stream_options": {"include_usage": True}}),
    ("/v1/completions", {"prompt": "hi", "stream": True}),
])
def test_a_stream_cut_by_shutdown_ends_with_an_error_event(path: str, body: dict) -> None:
    settings = Settings()
    app = app_for(settings, EngineHolder.loaded(settings, EndlessEngine()))
    client = TestClient(app, base_url="http://localhost")
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        head = [next(lines) for _ in range(4)]
        cancel_generations(app)
        events = _events([*head, *lines])
    _assert_ends_with_shutdown_error(events)
    assert not any('"usage":{' in e for e in events)  # no usage chunk for an unfinished answer


def test_a_plain_request_cut_by_shutdown_is_a_503() -> None:
    settings = Settings()
    app = app_for(settings, EngineHolder.loaded(settings, EndlessEngine()))
    client = TestClient(app, base_url="http://localhost")
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/v1/completions", json={"prompt": "x"})))
    thread.start()
    _wait_until(lambda: app.state.active_generations)
    cancel_generations(app)
    thread.join(10)
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "server_shutting_down"


@pytest.mark.slow
def test_e2e_ctrl_c_ends_open_streams_with_an_error_never_stop(tiny_bundle: Path, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "long.gguf", n_ctx=CTX)
    server = start_server(tiny_bundle, "-m", str(gguf), "-c", str(CTX), "-np", "2", log_path=tmp_path / "server.log")
    plain: list[BaseException] = []

    def plain_request() -> None:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
        try:
            client.completions.create(model="m", prompt="the cat", extra_body=ENDLESS)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            plain.append(exc)

    body = {"messages": [{"role": "user", "content": "talk"}], "stream": True, **ENDLESS}
    try:
        with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            head = [next(lines)]
            waiter = threading.Thread(target=plain_request)
            waiter.start()
            _wait_for_metrics(server, lambda v: v["llmpack_requests_generating"] == 2)
            status = server.interrupt()
            events = _events([*head, *lines])
        waiter.join(30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert status == 0, server.log
    _assert_ends_with_shutdown_error(events)
    assert len(events) > 3  # text came before the cut
    assert len(plain) == 1 and isinstance(plain[0], openai.APIStatusError), plain
    assert plain[0].status_code == 503 and plain[0].body["code"] == "server_shutting_down"
    assert messages.SERVER_STOPPED in server.log and "Traceback" not in server.log


def _wait_for_metrics(server: ServerProcess, condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        values = server.metrics()
        if condition(values):
            return
        assert time.monotonic() < deadline, f"metrics never matched: {values}"
        time.sleep(0.05)
