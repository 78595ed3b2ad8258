"""A headless Chromium driven through the DevTools protocol over `--remote-debugging-pipe` (no extra
package), and a tab on the web chat page with the helpers its tests need: typing, keys, screenshots, and
DevTools' Fetch domain to answer the page's chat request with a canned SSE stream."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
# The page's generation requests: chat, and raw completion mode's.
GENERATION_URLS = ("*/v1/chat/completions", "*/v1/completions")


class DevTools:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out), NUL-separated.
    Events that arrive while waiting for a reply are kept in `events`."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def give_fds() -> None:  # in the child: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)
            # dup2 onto the same fd (a process whose first pipe got fd 3) leaves it close-on-exec.
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

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
            self.send("Fetch.enable", patterns=[{"urlPattern": url, "requestStage": "Request"} for url in GENERATION_URLS])
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && window.DOMPurify")
        self.evaluate("localStorage.clear(); sessionStorage.clear()")
        self.reload(ready)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.tools.send(method, self.session, **params)

    def reload(self, ready: bool = True) -> None:
        """Reloads and waits for the new document (and, if `ready`, for the model's name from /v1/models,
        whatever the server calls it: the page's own `modelName`, shown)."""
        self.evaluate("window.reloaded = true")
        self.send("Page.reload")
        self.wait("!window.reloaded && document.readyState === 'complete'" + (
            " && typeof modelName === 'string' && document.getElementById('model').textContent === modelName"
            if ready else ""))

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


def _chat_chunk(**fields: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "tiny-test-model", **fields}


def reply_pieces(text: str) -> str:
    """The SSE events of `text` as a chat stream's deltas, in pieces of 9 characters: no end, no usage."""
    return "".join(f"data: {json.dumps(_chat_chunk(choices=[{'index': 0, 'delta': {'content': text[i:i + 9]}, 'finish_reason': None}]))}\n\n"
                   for i in range(0, len(text), 9))


def reply_end(completion_tokens: int, finish_reason: str = "stop", prompt_tokens: int = 30) -> str:
    """The end of a chat stream: the finish reason, the usage, [DONE]."""
    return sse(_chat_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": finish_reason}]),
               _chat_chunk(choices=[], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}))


def canned_reply(text: str, completion_tokens: int, finish_reason: str = "stop", prompt_tokens: int = 30) -> str:
    """What the server would stream for `text`, in pieces of 9 characters, then the usage."""
    return reply_pieces(text) + reply_end(completion_tokens, finish_reason, prompt_tokens)


def canned_completion(text: str, completion_tokens: int) -> str:
    """What /v1/completions would stream for `text` (raw mode), in pieces of 9 characters, then the usage."""
    base = {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": "tiny-test-model"}
    pieces = [text[i:i + 9] for i in range(0, len(text), 9)]
    return sse(*[{**base, "choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}]} for p in pieces],
               {**base, "choices": [{"index": 0, "text": "", "finish_reason": "length", "logprobs": None}]},
               {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens,
                                                 "total_tokens": 12 + completion_tokens}})


def fulfil(page: Page, body: str, status: int = 200) -> dict[str, Any]:
    """Answers the page's next generation request with `body` (an SSE stream, or with another `status` an
    error's JSON); returns the request the page sent."""
    paused = page.tools.wait_event("Fetch.requestPaused")
    kind = "text/event-stream" if status == 200 else "application/json"
    page.send("Fetch.fulfillRequest", requestId=paused["requestId"], responseCode=status,
              responseHeaders=[{"name": "Content-Type", "value": kind}],
              body=base64.b64encode(body.encode()).decode())
    return paused["request"]


# Replaces the page's fetch for generation requests with streams the test writes into piece by piece and
# can leave open (DevTools' Fetch.fulfillRequest answers with a whole body at once): window.held lists
# them, each with the request's body; an abort errors its stream as a real fetch's would.
_HOLD = """(() => {
  const real = window.fetch, encoder = new TextEncoder();
  window.held = [];
  window.fetch = (url, options = {}) => {
    if (!/\\/v1\\/(chat\\/)?completions$/.test(String(url))) return real(url, options);
    let control;
    const stream = new ReadableStream({start(c) { control = c; }});
    const entry = {url: String(url), body: options.body, open: true,
                   push: text => control.enqueue(encoder.encode(text)),
                   end: () => { entry.open = false; control.close(); }};
    if (options.signal) options.signal.addEventListener("abort", () => {
      if (entry.open) { entry.open = false; control.error(new DOMException("aborted", "AbortError")); }
    });
    window.held.push(entry);
    return Promise.resolve(new Response(stream, {status: 200, headers: {"Content-Type": "text/event-stream"}}));
  };
})()"""


class HeldReplies:
    """The page's generation requests answered by streams this test writes, piece by piece, and ends
    when it wants (or never: a reply still streaming when the page reloads or switches chats). Installed
    again after each reload, since a new document has its own fetch."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.install()

    def install(self) -> None:
        self.page.evaluate(_HOLD)

    def request(self, index: int) -> dict[str, Any]:
        """The body of the page's `index`th generation request (waiting for it)."""
        return json.loads(self.page.wait(f"window.held.length > {index} && window.held[{index}].body"))

    def push(self, index: int, events: str, end: bool = False) -> None:
        self.page.evaluate(f"window.held[{index}].push({json.dumps(events)})" + (f"; window.held[{index}].end()" if end else ""))
