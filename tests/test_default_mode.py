"""End to end, the default mode in a real terminal (tmux): the chat is one sequence of the engine the
background server batches, so a chat reply and API requests decode together, neither waiting for the
other to end; and a chat template that cannot compile stops it at start, as in the other modes."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from llmpack.runtime import messages
from support.commands import build_bundle, error_line
from support.tiny_model import write_endless_gguf
from test_chat_terminal import PROMPT, Terminal, free_port, prompts

pytestmark = pytest.mark.slow

QUIET = ["-t", "1", "--log-disable"]


@pytest.fixture(scope="module")
def endless_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_endless_gguf(tmp_path_factory.mktemp("endless") / "endless.gguf")
    return build_bundle(path, path.with_suffix(".llmpack"))


@pytest.fixture
def terminal(tmp_path: Path):
    opened: list[Terminal] = []

    def open_terminal(*argv: str) -> Terminal:
        env = {"LLMPACK_HISTORY": str(tmp_path / "history"), "NO_COLOR": "1", "TERM": "xterm"}
        opened.append(Terminal(f"default{len(opened)}", [*argv], env))
        return opened[-1]

    yield open_terminal
    for t in opened:
        t.close()


def reply_after(screen: str, message: str) -> str:
    return screen.split(PROMPT + message, 1)[1] if PROMPT + message in screen else ""


def leave(chat: Terminal) -> None:
    chat.keys("C-c")  # stops a reply that may still run
    chat.wait_for(lambda s: s.rstrip().endswith(PROMPT.rstrip()), what="a prompt")
    chat.keys("C-d")
    chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
    assert "EXIT=0" in chat.screen()


def test_an_api_request_completes_while_the_chat_is_replying(endless_bundle: Path, terminal) -> None:
    port = free_port()
    # Each of the 2 sequences holds 8192 tokens: the chat's reply runs until its sequence is full.
    chat = terminal(str(endless_bundle), "--port", str(port), "-c", "16384", "-np", "2", "-n", "100000", *QUIET)
    banner = chat.wait_for_prompt(1, timeout=60)
    assert f"parallel: {messages.CHAT_PARALLEL.format(n=2)}" in banner
    chat.type("talk for a long while")
    chat.wait_for(lambda s: len(reply_after(s, "talk for a long while").strip()) > 40, what="the chat's reply")
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120,
                        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    screen = chat.screen()
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 5
    # The API's answer came while the chat's reply was still streaming: no prompt after it yet.
    assert len(prompts(screen)) == 1, screen
    leave(chat)


def test_the_chat_replies_while_an_api_stream_runs(endless_bundle: Path, terminal) -> None:
    port = free_port()
    chat = terminal(str(endless_bundle), "--port", str(port), "-c", "16384", "-np", "2", "-n", "6", *QUIET)
    chat.wait_for_prompt(1, timeout=60)
    events: list[str] = []
    streaming = threading.Event()

    def stream() -> None:
        body = {"messages": [{"role": "user", "content": "talk"}], "max_tokens": 8000, "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and not streaming.is_set():
                    streaming.set()
        events.append("stream ended")

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert streaming.wait(60), "the API stream never started"
    chat.type("hello")
    chat.wait_for_prompt(2, timeout=120)
    events.append("chat replied")
    assert reply_after(chat.screen(), "hello").strip()
    leave(chat)  # stops the server, and its stream with it
    thread.join(60)
    assert events == ["chat replied", "stream ended"]


def test_a_chat_template_that_does_not_compile_stops_the_default_mode_at_start(tiny_bundle: Path, terminal) -> None:
    chat = terminal(str(tiny_bundle), "--port", str(free_port()), "--chat-template", "{% for %}", "-t", "1")
    screen = chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
    prefix = error_line(messages.CHAT_TEMPLATE_INVALID.split("{reason}")[0].format(source="--chat-template"))
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[0].startswith(prefix) and lines[1] == "EXIT=1", screen
