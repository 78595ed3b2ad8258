"""The web chat page in a real headless Chromium (Debian's `chromium`, from build/system-deps.sh), driven
through the DevTools protocol over `--remote-debugging-pipe` (no extra package), against a real executable.

The tiny model's words are random, so the tests that need a known reply (markdown, code, model HTML)
intercept the page's chat request with DevTools' Fetch domain and answer it with a canned SSE stream;
the request the page sent is read there too (the settings in its body). One server and one browser
serve the module; each test opens its own tab with emptied storage."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.commands import REPO
from support.server_fixtures import ServerProcess, running_server, start_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
CHAT_URL = "*/v1/chat/completions"


class DevTools:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out), NUL-separated.
    Events that arrive while waiting for a reply are kept in `events`."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def give_fds() -> None:  # in the child: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1280,800", "about:blank"],
            # close_fds would also close the new fds 3 and 4 (it runs after preexec_fn); the pipes'
            # own fds are not inheritable, so nothing else leaks into the browser.
            preexec_fn=give_fds, close_fds=False,  # noqa: PLW1509 - this test starts no threads first
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:  # events come in between; keep them and skip to our reply
            reply = self._read()
            if reply is None:
                continue
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The first kept or coming event named `method` (removed from `events`)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    self.events.remove(event)
                    return event["params"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {method} event")
            message = self._read(timeout=0.2)
            if message is not None and "method" in message:
                self.events.append(message)

    def _read(self, timeout: float | None = None) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            if timeout is not None and not select.select([self._from_chrome], [], [], timeout)[0]:
                return None
            data = os.read(self._from_chrome, 1 << 16)
            if not data:
                raise AssertionError("chromium closed the DevTools pipe")
            self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


class Page:
    """One tab on the server's page."""

    def __init__(self, tools: DevTools, url: str, intercept: bool = False, ready: bool = True) -> None:
        self.tools = tools
        self.target = tools.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = tools.send("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Log", "Runtime"):
            self.send(f"{domain}.enable")
        if intercept:
            self.send("Fetch.enable", patterns=[{"urlPattern": CHAT_URL, "requestStage": "Request"}])
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && window.DOMPurify")
        self.evaluate("localStorage.clear(); sessionStorage.clear()")
        self.reload(ready)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.tools.send(method, self.session, **params)

    def reload(self, ready: bool = True) -> None:
        """Reloads and waits for the new document (and, if `ready`, for the model's name)."""
        self.evaluate("window.reloaded = true")
        self.send("Page.reload")
        self.wait("!window.reloaded && document.readyState === 'complete'" + (
            " && document.getElementById('model').textContent === 'tiny-test-model'" if ready else ""))

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except AssertionError:  # between two documents (a reload): no context to evaluate in yet
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"the page never satisfied: {expression}")

    def type(self, text: str, selector: str = "#input") -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def key(self, key: str, code: int, shift: bool = False) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code,
                      modifiers=8 if shift else 0, text="\r" if kind == "keyDown" and key == "Enter" else "")

    def send_message(self, text: str) -> None:
        self.type(text)
        self.key("Enter", 13)

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)
        time.sleep(0.2)  # a frame for the new layout
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def close(self) -> None:
        self.tools.send("Target.closeTarget", targetId=self.target)


def sse(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def canned_reply(text: str, completion_tokens: int) -> str:
    """What the server would stream for `text`, in pieces of 9 characters, then the usage."""
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "tiny-test-model"}
    pieces = [text[i:i + 9] for i in range(0, len(text), 9)]
    return sse(*[{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces],
               {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {**base, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": completion_tokens,
                                                 "total_tokens": 30 + completion_tokens}})


def fulfil(page: Page, body: str) -> dict[str, Any]:
    """Answers the page's next chat request with `body`; returns the request the page sent."""
    paused = page.tools.wait_event("Fetch.requestPaused")
    page.send("Fetch.fulfillRequest", requestId=paused["requestId"], responseCode=200,
              responseHeaders=[{"name": "Content-Type", "value": "text/event-stream"}],
              body=base64.b64encode(body.encode()).decode())
    return paused["request"]


MARKDOWN = """# A heading

Some **bold** text, `inline code` and [a link](http://127.0.0.1:9/elsewhere).

| name | value |
|------|-------|
| one  | 1     |

```python
def add(a, b):
    return a + b
```

<img src=x onerror="window.pwned=1"> and <script>window.pwned=2</script>
"""


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The server's own --grammar (letters and spaces, no end) makes random weights write exactly -n 24
    # tokens of readable text.
    log_path = tmp_path_factory.mktemp("web") / "server.log"
    with running_server(tiny_bundle, "-n", "24", "-c", "512", "--grammar", "root ::= [a-z ] root",
                        log_path=log_path) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    tools = DevTools(tmp_path_factory.mktemp("profile"))
    try:
        yield tools
    finally:
        tools.close()


def test_the_committed_page_is_what_web_sources_build() -> None:
    result = subprocess.run([sys.executable, str(REPO / "web" / "build_page.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_page_is_served_with_a_policy_that_forbids_other_origins(server: ServerProcess) -> None:
    response = httpx.get(server.url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and "unsafe-inline" not in policy
    # Every inline script and the style are allowed by their hash, and nothing else is.
    assert directives["script-src"].count("'sha256-") == response.text.count("<script>") == 4
    assert directives["style-src"].count("'sha256-") == response.text.count("<style>") == 1
    assert "src=\"http" not in response.text and "href=\"http" not in response.text


def test_web_chat_streams_an_answer(server: ServerProcess, browser: DevTools, tmp_path: Path) -> None:
    page = Page(browser, server.url)
    try:
        assert page.wait("document.getElementById('model').textContent === 'tiny-test-model'")
        n_ctx = httpx.get(server.base_url + "/models", timeout=10).json()["data"][0]["meta"]["n_ctx"]
        assert page.evaluate("document.getElementById('context').textContent") == f"context 0 / {n_ctx}"
        # Count the page's updates, to see the answer arrive piece by piece rather than at once.
        page.evaluate("window.updates = 0; new MutationObserver(records => window.updates += "
                      "records.length).observe(document.getElementById('log'), {subtree: true, childList: true})")
        page.type("Hello, who are you?")
        page.key("Enter", 13, shift=True)  # Shift+Enter: a new line, not sent
        page.send("Input.insertText", text="Second line.")
        page.key("Enter", 13, shift=True)
        page.send("Input.insertText", text="Third line.")
        three_lines = page.evaluate("[input.value, input.clientHeight, input.scrollHeight]")
        page.key("Enter", 13)
        stats = page.wait("(document.querySelector('.stats') || {}).textContent")
        answer = page.evaluate("document.querySelector('.msg.assistant').textContent")
        user = page.evaluate("document.querySelector('.msg.user').textContent")
        banner = page.evaluate("document.getElementById('banner').hidden")
        updates = page.evaluate("window.updates")
        used = page.evaluate("document.getElementById('context').textContent")
    finally:
        page.close()
    assert three_lines[0] == "Hello, who are you?\nSecond line.\nThird line."
    assert three_lines[1] >= three_lines[2] - 2  # the input grew: all three lines show
    assert user == three_lines[0] and banner
    assert answer and stats.startswith("24 tokens")  # -n 24: the whole answer came
    assert used.startswith("context ") and int(used.split()[1]) > 24
    assert updates >= 4  # streamed: the bubble was redrawn chunk after chunk


def test_markdown_code_settings_and_nothing_leaves_the_server(server: ServerProcess, browser: DevTools,
                                                               tmp_path: Path) -> None:
    browser.events.clear()
    page = Page(browser, server.url, intercept=True)
    try:
        # The settings, typed into their dialog as a user would, are kept and sent.
        page.evaluate("document.getElementById('settings-button').click()")
        for field, value in (("#set-system", "Answer in markdown."), ("#set-temperature", "0.3"),
                             ("#set-top_p", "0.8"), ("#set-max_tokens", "77"), ("#set-seed", "42")):
            page.type(value, field)
        page.key("Escape", 27)
        assert page.wait("!document.getElementById('settings').open")
        page.reload()  # kept per browser
        page.send_message("Show me markdown")
        request = fulfil(page, canned_reply(MARKDOWN, 57))
        page.wait("(document.querySelector('.stats') || {}).textContent")
        html = page.evaluate("""(() => { const m = document.querySelector('.msg.assistant');
            const code = m.querySelector('pre code'); return {
            h1: m.querySelector('h1') && m.querySelector('h1').textContent, bold: !!m.querySelector('strong'),
            cell: m.querySelector('table td') && m.querySelector('table td').textContent,
            link: m.querySelector('a') && [m.querySelector('a').target, m.querySelector('a').rel],
            inline: !!m.querySelector('p code'), keyword: code.querySelector('.hljs-keyword').textContent,
            font: getComputedStyle(code).fontFamily, copy: !!m.querySelector('.code button.copy'),
            images: m.querySelectorAll('img, script').length, pwned: window.pwned === undefined ? null : window.pwned,
            text: m.textContent, stats: document.querySelector('.stats').textContent}; })()""")
        page.screenshot(tmp_path / "web-desktop.png", 1280, 800, mobile=False)
        page.screenshot(tmp_path / "web-phone.png", 390, 844, mobile=True)
        phone_overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
        csp_errors = [e for e in browser.events if e["method"] == "Log.entryAdded"
                      and "Content Security Policy" in e["params"]["entry"]["text"]]
    finally:
        page.close()
    body = json.loads(request["postData"])
    assert body["messages"] == [{"role": "system", "content": "Answer in markdown."},
                                {"role": "user", "content": "Show me markdown"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.8, 77, 42)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert html["h1"] == "A heading" and html["bold"] and html["inline"] and html["cell"] == "one"
    assert html["link"] == ["_blank", "noopener noreferrer"]
    assert html["keyword"] == "def" and "monospace" in html["font"] and html["copy"]
    # The model's HTML is shown as text, never made an element or run.
    assert html["images"] == 0 and html["pwned"] is None
    assert '<img src=x onerror="window.pwned=1">' in html["text"]
    assert html["stats"].startswith("57 tokens")
    assert not phone_overflow and csp_errors == []
    assert requests and all(url.startswith(server.url) for url in requests), requests


def test_conversations_survive_a_reload_and_switch(server: ServerProcess, browser: DevTools) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("First chat")
        fulfil(page, canned_reply("Reply **one**", 3))
        page.wait("!!document.querySelector('.stats')")
        page.reload()
        after_reload = page.evaluate("[...document.querySelectorAll('.msg')].map(m => m.textContent.trim())")
        page.evaluate("document.getElementById('new-chat').click()")
        empty = page.evaluate("document.querySelectorAll('.msg').length")
        page.send_message("Second chat")
        request = fulfil(page, canned_reply("Reply two", 2))
        page.wait("!!document.querySelector('.stats')")
        titles = page.evaluate("[...document.querySelectorAll('#chats button')].map(b => b.textContent)")
        page.evaluate("[...document.querySelectorAll('#chats button')].find(b => b.textContent === 'First chat').click()")
        switched = page.evaluate("[...document.querySelectorAll('.msg')].map(m => m.textContent.trim())")
    finally:
        page.close()
    assert after_reload == ["First chat", "Reply one"]
    assert empty == 0 and json.loads(request["postData"])["messages"] == [{"role": "user", "content": "Second chat"}]
    assert titles == ["Second chat", "First chat"]
    assert switched == ["First chat", "Reply one"]


def test_regenerate_and_edit_resend_from_there(server: ServerProcess, browser: DevTools) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Question")
        fulfil(page, canned_reply("Answer A", 2))
        page.wait("!!document.querySelector('.stats')")
        page.evaluate("[...document.querySelectorAll('.meta button')].find(b => b.textContent === 'Regenerate').click()")
        again = json.loads(fulfil(page, canned_reply("Answer B", 2))["postData"])["messages"]
        page.wait("document.querySelector('.msg.assistant').textContent.trim() === 'Answer B'")
        page.evaluate("[...document.querySelectorAll('.meta button')].find(b => b.textContent === 'Edit').click()")
        page.evaluate("input.select()")
        page.send("Input.insertText", text="Better question")
        page.key("Enter", 13)
        edited = json.loads(fulfil(page, canned_reply("Answer C", 2))["postData"])["messages"]
        page.wait("document.querySelector('.msg.assistant').textContent.trim() === 'Answer C'")
        shown = page.evaluate("[...document.querySelectorAll('.msg')].map(m => m.textContent.trim())")
    finally:
        page.close()
    assert again == [{"role": "user", "content": "Question"}]
    assert edited == [{"role": "user", "content": "Better question"}]
    assert shown == ["Better question", "Answer C"]


def test_stop_marks_the_reply_as_stopped(server: ServerProcess, browser: DevTools) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Tell me a long story")
        browser.wait_event("Fetch.requestPaused")  # held: the reply never ends by itself
        page.wait("!document.getElementById('stop').hidden")
        page.evaluate("document.getElementById('stop').focus()")
        page.key("Enter", 13)  # keyboard only: Enter on the focused Stop button
        page.wait("!!document.querySelector('.msg.assistant.stopped')")
        label = page.evaluate("document.querySelector('.stopped-label').textContent")
        send_back = page.evaluate("!document.getElementById('send').hidden")
        page.reload()
        kept = page.evaluate("!!document.querySelector('.msg.assistant.stopped')")
    finally:
        page.close()
    assert label == "stopped" and send_back and kept


def test_a_stopped_server_is_reported_as_unreachable(tiny_bundle: Path, browser: DevTools, tmp_path: Path) -> None:
    own = start_server(tiny_bundle, "-n", "4", "-c", "256", log_path=tmp_path / "server.log")
    page = None
    try:
        page = Page(browser, own.url)
        assert own.interrupt() == 0
        page.send_message("Are you there?")
        message = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        retry = page.evaluate("[...document.querySelectorAll('#banner button')].map(b => b.textContent)")
        left = page.evaluate("[...document.querySelectorAll('.msg')].map(m => m.textContent.trim())")
    finally:
        if page is not None:
            page.close()
        if own.process.poll() is None:
            own.interrupt()
    assert "error: the server is unreachable" in message and retry == ["Retry"]
    assert left == ["Are you there?"]  # the question stays, to be retried


def test_an_attached_text_file_goes_with_the_next_message(server: ServerProcess, browser: DevTools,
                                                          tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("The launch code is 1234.\n")
    page = Page(browser, server.url, intercept=True)
    try:
        node = page.send("DOM.querySelector", nodeId=page.send("DOM.getDocument")["root"]["nodeId"], selector="#file")
        page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(notes)])
        page.wait("document.getElementById('attachments').textContent.includes('notes.txt')")
        page.send_message("What is the code?")
        sent = json.loads(fulfil(page, canned_reply("1234", 1))["postData"])["messages"]
        page.wait("!!document.querySelector('.stats')")
        shown = page.evaluate("document.querySelector('.turn.user').textContent")
        left = page.evaluate("document.getElementById('attachments').textContent")
    finally:
        page.close()
    assert sent[-1]["content"] == "File notes.txt:\n```\nThe launch code is 1234.\n\n```\n\nWhat is the code?"
    assert "attached: notes.txt" in shown and left == ""


def test_the_page_asks_for_the_api_key_and_sends_it(tiny_bundle: Path, browser: DevTools, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-n", "4", "-c", "256", "--api-key", "sesame",
                        log_path=tmp_path / "server.log") as own:
        page = Page(browser, own.url, ready=False)
        try:
            page.wait("!document.getElementById('banner').hidden && "
                      "document.getElementById('banner').textContent.includes('API key')")
            page.type("sesame", "#banner input")
            page.key("Enter", 13)
            page.wait("document.getElementById('model').textContent === 'tiny-test-model'")
            page.send_message("hello")
            stats = page.wait("(document.querySelector('.stats') || {}).textContent")
            kept = page.evaluate("sessionStorage.getItem('llmpack-api-key')")
        finally:
            page.close()
    assert stats.startswith("4 tokens") and kept == "sesame"


def test_a_full_context_shows_the_servers_message_and_offers_a_new_chat(server: ServerProcess,
                                                                      browser: DevTools) -> None:
    page = Page(browser, server.url)
    try:
        page.send_message("many words " * 400)  # far past the server's context
        message = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        page.evaluate("[...document.querySelectorAll('#banner button')].find(b => b.textContent === 'Start a new chat').click()")
        after = page.evaluate("[document.querySelectorAll('.msg').length, document.querySelectorAll('#chats li').length,"
                              " document.getElementById('banner').hidden]")
    finally:
        page.close()
    direct = httpx.post(server.base_url + "/chat/completions", timeout=30,
                        json={"messages": [{"role": "user", "content": "many words " * 400}]})
    assert direct.status_code == 400 and direct.json()["error"]["code"] == "context_length_exceeded"
    assert message.startswith("error: " + direct.json()["error"]["message"])
    assert after == [0, 2, True]
