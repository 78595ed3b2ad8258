"""End to end: a thinking model's thought reaches every dialect apart from its answer, streamed and not, as
llama-server gives it (OpenAI's reasoning_content, Anthropic's thinking blocks, Ollama's thinking).

A tiny random model carries Qwen3's real template (from the llama.cpp the engine vendors); --grammar
forces its output to the format's exact text, so nothing depends on the CPU's choice of words."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf
from test_chat_formats import templates  # noqa: F401 - the fixture
from test_chat_terminal import terminal  # noqa: F401 - the fixture


pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="build/chat-shim.sh has no Windows recipe yet")]
THOUGHT, ANSWER = "The user wants the capital.", "Paris."
# Qwen3's generation prompt opens no thought: the model writes <think> itself.
RAW = f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}"
ASK = [{"role": "user", "content": "Capital of France?"}]


def gbnf(text: str) -> str:
    return 'root ::= "' + "".join(f"\\x{ord(c):02X}" if c in '"\\\n' else c for c in text) + '"'


@pytest.fixture(scope="module")
def server(templates, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    directory = tmp_path_factory.mktemp("thinking")
    model = write_tiny_gguf(directory / "qwen3-tiny.gguf", chat_template=templates["Qwen-Qwen3-0.6B.jinja"])
    runtime = directory / "runtime"  # the runtime from source: the server as the executable runs it
    runtime.write_text(f"#!/bin/sh\nexec {sys.executable} -m llmpack.runtime \"$@\"\n")
    runtime.chmod(0o755)
    with running_server(runtime, "-m", str(model), "-c", "1024", "-np", "2", "--grammar", gbnf(RAW),
                        log_path=directory / "server.log") as process:
        yield process


def test_openai_reasoning_content_apart(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="x")
    message = client.chat.completions.create(model="m", messages=ASK, max_tokens=200).choices[0].message
    assert message.content == ANSWER
    assert message.model_extra["reasoning_content"].strip() == THOUGHT
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(model="m", messages=ASK, max_tokens=200, stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    assert (reasoning.strip(), content) == (THOUGHT, ANSWER)


def test_reasoning_format_none_leaves_the_thought_in_the_text(server):
    answer = httpx.post(server.base_url + "/chat/completions", timeout=60,
                        json={"messages": ASK, "max_tokens": 200, "reasoning_format": "none"}).json()
    assert answer["choices"][0]["message"]["content"] == RAW


def test_anthropic_thinking_blocks(server):
    client = anthropic.Anthropic(base_url=server.url.rstrip("/"), api_key="x")
    message = client.messages.create(model="m", max_tokens=200, messages=ASK)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert (message.content[0].thinking.strip(), message.content[1].text) == (THOUGHT, ANSWER)
    thinking, text = "", ""
    with client.messages.stream(model="m", max_tokens=200, messages=ASK) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "thinking_delta":
                thinking += event.delta.thinking
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
    assert (thinking.strip(), text) == (THOUGHT, ANSWER)


def test_ollama_thinking(server):
    answer = httpx.post(server.url + "api/chat", json={"model": "qwen3-tiny", "messages": ASK, "stream": False}, timeout=60).json()
    assert (answer["message"]["thinking"].strip(), answer["message"]["content"]) == (THOUGHT, ANSWER)
    lines = [json.loads(line) for line in httpx.post(server.url + "api/chat", timeout=60,
                                                     json={"model": "qwen3-tiny", "messages": ASK}).text.splitlines()]
    assert all("message" in line for line in lines), lines
    thinking = "".join(line["message"].get("thinking", "") for line in lines)
    assert (thinking.strip(), "".join(line["message"]["content"] for line in lines)) == (THOUGHT, ANSWER)


def test_ollama_client_thinking(server):
    import ollama
    client = ollama.Client(host=server.url.rstrip("/"))
    answer = client.chat(model="qwen3-tiny", messages=ASK, think=True)
    assert (answer.message.thinking.strip(), answer.message.content) == (THOUGHT, ANSWER)
    parts = list(client.chat(model="qwen3-tiny", messages=ASK, think=True, stream=True))
    thinking = "".join(part.message.thinking or "" for part in parts)
    assert (thinking.strip(), "".join(part.message.content or "" for part in parts)) == (THOUGHT, ANSWER)


def test_responses_reasoning_item_before_the_message(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="x")
    response = client.responses.create(model="m", input="Capital of France?", max_output_tokens=200,
                                       reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text.strip() == THOUGHT
    assert response.output_text == ANSWER
    events = list(client.responses.create(model="m", input="Capital of France?", max_output_tokens=200, stream=True))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (thought.strip(), text) == (THOUGHT, ANSWER)
    done = next(e for e in events if e.type == "response.completed").response
    assert [item.type for item in done.output] == ["reasoning", "message"]


def test_raw_completion_keeps_the_thought_in_the_text(server):
    """llama-server's /completion and /v1/completions apply no chat format: the model's text, thought
    included, as generated (no reasoning fields), and so do we."""
    native = httpx.post(server.url + "completion", json={"prompt": "Capital of France?", "n_predict": 200},
                        timeout=60).json()
    assert native["content"] == RAW and "reasoning_content" not in native
    oai = httpx.post(server.base_url + "/completions", json={"prompt": "Capital of France?", "max_tokens": 200},
                     timeout=60).json()
    assert oai["choices"][0]["text"] == RAW and "reasoning_content" not in oai["choices"][0]


def test_hostile_thinking_fields_are_400s(server):
    for body in ({"reasoning_format": "loud"}, {"reasoning_effort": 7}, {"chat_template_kwargs": {"enable_thinking": "yes"}},
                 {"chat_template_kwargs": "nope"}):
        answer = httpx.post(server.base_url + "/chat/completions", json={"messages": ASK, **body}, timeout=60)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["message"]


def test_terminal_chat_shows_the_thought_apart_and_think_off(templates, tmp_path: Path, terminal):  # noqa: F811
    model = write_tiny_gguf(tmp_path / "qwen3-tiny.gguf", chat_template=templates["Qwen-Qwen3-0.6B.jinja"])
    chat = terminal(sys.executable, "-m", "llmpack.runtime", "--chat", "-m", str(model), "-c", "1024",
                    "--grammar", gbnf(RAW), "--log-disable", NO_COLOR="", TERM="xterm-256color")
    chat.wait_for_prompt(1, timeout=120)
    chat.type("Capital of France?")
    screen = chat.wait_for_prompt(2, timeout=60)
    thought_line = next(i for i, line in enumerate(screen.splitlines()) if line.startswith("thought for "))
    lines = screen.splitlines()
    assert THOUGHT in "\n".join(lines[:thought_line]) and ANSWER in lines[thought_line + 1]
    assert "<think>" not in screen
    styled = chat.screen(escapes=True)
    assert "\x1b[" in styled.split(THOUGHT)[0].splitlines()[-1]  # the thought is styled (dimmed), the answer not
    chat.type("/think off")
    chat.wait_for(lambda s: "thinking: off" in s, 30)


def test_web_page_shows_the_thought_folded_above_the_answer(server, tmp_path: Path):
    from support.devtools import DevTools, Page

    browser = DevTools(tmp_path / "profile")
    try:
        page = Page(browser, server.url)
        try:
            assert page.wait("document.getElementById('model').textContent !== ''")
            page.type("Capital of France?")
            page.key("Enter", 13)
            page.wait("(document.querySelector('.stats') || {}).textContent")
            shown = page.evaluate("""(() => { const t = document.querySelector('.turn.assistant .thought');
                return t && [t.open, t.querySelector('summary').textContent, t.lastChild.textContent,
                             document.querySelector('.msg.assistant').textContent.trim()]; })()""")
            page.evaluate("document.querySelector('.thought summary').click()")
            opened = page.evaluate("document.querySelector('.thought').open")
        finally:
            page.close()
    finally:
        browser.close()
    assert shown is not None, "no thought box"
    folded, summary, thought, answer = shown
    assert not folded and summary.startswith("thought for ") and thought.strip() == THOUGHT and answer == ANSWER
    assert opened


@pytest.fixture(scope="module")
def r1_server(templates, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """DeepSeek R1's template opens the thought in the prompt; the grammar lets the thought run on (up to
    80 letters) and then close, and a logit bias keeps the model from closing it of itself."""
    directory = tmp_path_factory.mktemp("budget")
    model = write_tiny_gguf(directory / "r1-tiny.gguf", space_prefix=False,
                            chat_template=templates["deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"])
    runtime = directory / "runtime"
    runtime.write_text(f"#!/bin/sh\nexec {sys.executable} -m llmpack.runtime \"$@\"\n")
    runtime.chmod(0o755)
    grammar = 'root ::= [a-z ]{0,80} "</think>" ' + gbnf(f"\n\n{ANSWER}").removeprefix("root ::= ")
    with running_server(runtime, "-m", str(model), "-c", "1024", "-np", "2", "--grammar", grammar, "--temp", "0",
                        log_path=directory / "server.log") as process:
        yield process


def test_reasoning_budget_closes_the_thought(r1_server):
    lt = httpx.post(r1_server.url + "tokenize", json={"content": "<", "add_special": False}, timeout=30).json()["tokens"]
    body = {"messages": ASK, "max_tokens": 300, "logit_bias": {str(lt[-1]): -100}}

    def ask(**extra) -> tuple[str, str, int]:
        answer = httpx.post(r1_server.base_url + "/chat/completions", json={**body, **extra}, timeout=120).json()
        message = answer["choices"][0]["message"]
        return message.get("reasoning_content") or "", message["content"], answer["usage"]["completion_tokens"]

    free_thought, free_answer, free_tokens = ask()
    assert free_answer.strip() == ANSWER and len(free_thought) >= 60  # the bias keeps it thinking to the grammar's end
    thought, answer, tokens = ask(reasoning_budget_tokens=3, reasoning_budget_message=" enough")
    assert answer.strip() == ANSWER and thought.rstrip().endswith("enough")
    n_message = len(httpx.post(r1_server.url + "tokenize", json={"content": " enough</think>"}, timeout=30).json()["tokens"])
    assert tokens - free_tokens < 0 and len(thought) < len(free_thought)
    answer_tokens = len(httpx.post(r1_server.url + "tokenize", json={"content": f"\n\n{ANSWER}"}, timeout=30).json()["tokens"])
    assert tokens <= 3 + n_message + answer_tokens + 2, (thought, tokens)
