"""What the web page's test modules share: one page server and one browser per module (import the fixtures
`server` and `browser` into the module), clicks by label, the conversation's texts, dark mode, and a WCAG
contrast check computed in the page from the colours it really paints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.devtools import DevTools, Page, reply_end, sse
from support.server_fixtures import PAGE_SERVER_ARGS, ServerProcess, running_server

TEXTS = "[...document.querySelectorAll('.msg')].map(m => m.textContent.trim())"
STORED = "JSON.parse(localStorage.getItem('llmpack-chats') || '[]')"


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("web-page") / "server.log"
    with running_server(tiny_bundle, *PAGE_SERVER_ARGS, log_path=log_path) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    tools = DevTools(tmp_path_factory.mktemp("profile"))
    try:
        yield tools
    finally:
        tools.close()


def click(page: Page, label: str, where: str = "") -> None:
    page.evaluate(f"[...document.querySelectorAll('{where} button')].find(b => b.textContent === {json.dumps(label)}).click()")


def buttons(page: Page, where: str) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('{where} button')].map(b => b.textContent)")


def dark(page: Page, on: bool = True) -> None:
    page.send("Emulation.setEmulatedMedia",
              features=[{"name": "prefers-color-scheme", "value": "dark" if on else "light"}])


def console_errors(browser: DevTools) -> list[str]:
    return [e["params"]["entry"]["text"] for e in browser.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]


# The contrast of each visible element matching a selector: its text colour against the colour behind it,
# every translucent background up to the page's canvas blended in (WCAG 2's relative luminance).
CONTRAST = """(selector => {
  const rgba = s => { const m = s.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const behind = element => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) layers.push(rgba(getComputedStyle(e).backgroundColor));
    const canvas = matchMedia('(prefers-color-scheme: dark)').matches ? [18, 18, 18, 1] : [255, 255, 255, 1];
    return layers.reverse().reduce((under, top) => over(top, under), canvas);
  };
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  return [...document.querySelectorAll(selector)].filter(e => e.offsetParent !== null && e.textContent.trim()).map(e => {
    const back = behind(e), text = over(rgba(getComputedStyle(e).color), back);
    const [a, b] = [lum(text), lum(back)].sort((x, y) => y - x);
    return [selector + ' ' + e.textContent.trim().slice(0, 20), Math.round((a + 0.05) / (b + 0.05) * 100) / 100];
  });
})"""


def contrasts(page: Page, *selectors: str) -> list[list]:
    return [row for s in selectors for row in page.evaluate(f"{CONTRAST}({json.dumps(s)})")]


def tool_call_reply(call_id: str, name: str, *argument_pieces: str) -> str:
    """A chat stream whose reply is one tool call, its arguments in pieces, as llama-server streams them."""
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "tiny"}
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": argument_pieces[0]}}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                                     "finish_reason": None}]} for piece in argument_pieces[1:]]
    return sse(*chunks)[:-len("data: [DONE]\n\n")] + reply_end(12, "tool_calls")
