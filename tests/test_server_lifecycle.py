"""End to end: what happens around generations: a client that goes away stops its generation, Ctrl-C
stops the server with status 0, a busy port is one clear line. Uses a tiny model with a long context
(-m on the real executable), so that a generation left alone would run for many seconds."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from llmpack.runtime import messages
from support.commands import error_line, one_error_line, run
from support.server_fixtures import ServerProcess, running_server, start_server
from support.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.slow
CTX = 16384
# A grammar with no end: llama.cpp's grammar sampler bans end-of-generation tokens until the grammar is
# complete, so a generation runs until the context is full or it is stopped.
ENDLESS = {"grammar": "root ::= [a-z ] root", "temperature": 1.0}


@pytest.fixture(scope="module")
def long_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "long.gguf", n_ctx=CTX)


@pytest.fixture(scope="module")
def long_server(tiny_bundle: Path, long_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    # -np 1: one request holds the engine, so the next one visibly queues behind it.
    with running_server(tiny_bundle, "-m", str(long_gguf), "-c", str(CTX), "-np", "1", log_path=log) as server:
        yield server


def _wait_idle(server: ServerProcess, timeout: float = 5) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = server.metrics()
        if values["llmpack_requests_generating"] == 0 and values["llmpack_requests_queued"] == 0:
            return values
        time.sleep(0.05)
    raise AssertionError(f"the engine is still generating {timeout} s after the client left: {values}")


def _wait_for(server: ServerProcess, condition, timeout: float = 10) -> dict[str, float]:
    """Polls /metrics until `condition(values)` holds (this machine may be busy: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        values = server.metrics()
        if condition(values):
            return values
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never matched: {values}")
        time.sleep(0.05)


def _assert_stopped(server: ServerProcess) -> float:
    first = _wait_idle(server)["llmpack_generated_tokens_total"]
    time.sleep(0.5)
    assert server.metrics()["llmpack_generated_tokens_total"] == first  # no token since
    return first


def test_a_client_that_disconnects_mid_stream_stops_its_generation(long_server: ServerProcess) -> None:
    before = long_server.metrics()
    body = {"messages": [{"role": "user", "content": "go on forever"}], "stream": True, **ENDLESS}
    with httpx.stream("POST", long_server.base_url + "/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines) for _ in range(10)]
        assert all(line.startswith("data: ") or line == "" for line in received)
        generated = long_server.metrics()["llmpack_generated_tokens_total"]
        # The control: while the client is there, the engine keeps producing tokens.
        _wait_for(long_server, lambda v: v["llmpack_generated_tokens_total"] > generated + 5)
    total = _assert_stopped(long_server)
    after = long_server.metrics()
    assert after["llmpack_requests_cancelled_total"] == before["llmpack_requests_cancelled_total"] + 1
    assert total - before["llmpack_generated_tokens_total"] < CTX / 2  # far from a full context


def test_a_client_that_gives_up_on_a_plain_request_stops_it(long_server: ServerProcess) -> None:
    before = long_server.metrics()
    body = {"prompt": "the cat", **ENDLESS}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(long_server.base_url + "/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
    _assert_stopped(long_server)
    assert long_server.metrics()["llmpack_requests_cancelled_total"] == before["llmpack_requests_cancelled_total"] + 1
    # The engine is free again: a new request is served at once.
    quick = httpx.post(long_server.base_url + "/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=10)
    assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] <= 4


def test_queued_requests_wait_their_turn_and_a_queued_client_can_leave(long_server: ServerProcess) -> None:
    """One long generation holds the engine; a second request queues behind it (visible in /metrics),
    leaves, and is dropped without running."""
    before = long_server.metrics()
    body = {"messages": [{"role": "user", "content": "first"}], "stream": True, **ENDLESS}
    outcome: list[BaseException] = []

    def second() -> None:
        try:
            httpx.post(long_server.base_url + "/completions", json={"prompt": "second", "max_tokens": 5},
                       timeout=httpx.Timeout(10, read=4.0))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    with httpx.stream("POST", long_server.base_url + "/chat/completions", json=body, timeout=30) as first:
        lines = first.iter_lines()  # kept: dropping the iterator would close the connection
        next(lines)
        waiter = threading.Thread(target=second)
        waiter.start()
        _wait_for(long_server, lambda v: v["llmpack_requests_generating"] == 1 and v["llmpack_requests_queued"] == 1,
                  timeout=3)
        waiter.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.ReadTimeout)
    _assert_stopped(long_server)
    after = long_server.metrics()
    assert after["llmpack_requests_cancelled_total"] == before["llmpack_requests_cancelled_total"] + 2
    assert after["llmpack_requests_queued"] == 0


def test_ctrl_c_stops_the_server_with_status_0_even_mid_stream(tiny_bundle: Path, long_gguf: Path,
                                                              tmp_path: Path) -> None:
    server = start_server(tiny_bundle, "-m", str(long_gguf), "-c", str(CTX), "-np", "1",
                          log_path=tmp_path / "server.log")
    body = {"messages": [{"role": "user", "content": "talk"}], "stream": True, **ENDLESS}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        next(lines)
        _wait_for(server, lambda v: v["llmpack_generated_tokens_total"] > 0)
        started = time.monotonic()
        status = server.interrupt()
        rest = list(lines)  # the stream was ended cleanly: an error event, then [DONE]
    assert status == 0, server.log
    assert time.monotonic() - started < 10
    events = [line for line in rest if line]
    assert events[-1] == "data: [DONE]"
    assert '"code":"server_shutting_down"' in events[-2]  # not a finish_reason that passes for an end
    assert messages.SERVER_STOPPED in server.log and "Traceback" not in server.log


def test_a_busy_port_is_one_clear_line(tiny_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([str(tiny_bundle), "--server", "--nobrowser", "--port", str(port), "--log-disable"], timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: "), result.stderr


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    result = run([str(tiny_bundle), "--server", "--nobrowser", "--port", "0", "-m", str(missing), "--log-disable"],
                 timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == error_line(messages.MODEL_UNREADABLE.format(path=missing, reason="No such file or directory"))


def test_a_bad_grammar_flag_stops_the_server_with_one_line(tiny_bundle: Path) -> None:
    result = run([str(tiny_bundle), "--server", "--nobrowser", "--port", "0", "--grammar", "root ::= nowhere",
                  "--log-disable"], timeout=60)
    # Refused by runtime/grammar_check.py before the model loads, as a bad flag value: llama.cpp never sees it.
    assert one_error_line(result) == error_line(messages.GRAMMAR_FLAG_REFUSED.format(
        flag="--grammar", reason="rule 'nowhere' is used but never defined (line 1)"))
    assert result.returncode == 2
