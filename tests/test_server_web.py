"""The web chat page in a real headless Chromium (Debian's `chromium`, from build/system-deps.sh), driven
through the DevTools protocol over `--remote-debugging-pipe` (no extra package): a message is typed and
sent, the answer streams from /v1/chat/completions, and a screenshot is saved."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.server_fixtures import running_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


class DevTools:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out), NUL-separated."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def give_fds() -> None:  # in the child: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1000,700", "about:blank"],
            # close_fds would also close the new fds 3 and 4 (it runs after preexec_fn); the pipes'
            # own fds are not inheritable, so nothing else leaks into the browser.
            preexec_fn=give_fds, close_fds=False,  # noqa: PLW1509 - this test starts no threads first
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:  # events come in between; skip to our reply
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
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


def _evaluate(tools: DevTools, session: str, expression: str) -> Any:
    result = tools.send("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=True)
    return result["result"].get("value")


def _wait_for(tools: DevTools, session: str, expression: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _evaluate(tools, session, expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page never satisfied: {expression}")


def test_web_chat_streams_an_answer(tiny_bundle: Path, tmp_path: Path) -> None:
    # The server's own --grammar (letters and spaces, no end) makes random weights write exactly -n 24
    # tokens of readable text.
    with running_server(tiny_bundle, "-n", "24", "-c", "512", "--grammar", "root ::= [a-z ] root",
                        log_path=tmp_path / "server.log") as server:
        tools = DevTools(tmp_path / "profile")
        try:
            target = tools.send("Target.createTarget", url=server.url)["targetId"]
            session = tools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            # The model's name shows once the page has asked /v1/models.
            assert _wait_for(tools, session, "document.getElementById('model').textContent === 'tiny-test-model'")
            # Count the page's updates, to see the answer arrive piece by piece rather than at once.
            _evaluate(tools, session, "window.updates = 0; new MutationObserver(records => window.updates += "
                      "records.length).observe(document.getElementById('log'), {subtree: true, childList: true})")
            # Type a message and press Enter, as a user would.
            _evaluate(tools, session, "document.getElementById('input').focus()")
            tools.send("Input.insertText", session, text="Hello, who are you?")
            for kind in ("keyDown", "keyUp"):
                tools.send("Input.dispatchKeyEvent", session, type=kind, key="Enter", code="Enter",
                           windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")
            stats = _wait_for(tools, session, "(document.querySelector('.stats') || {}).textContent")
            answer = _evaluate(tools, session, "document.querySelector('.msg.assistant').textContent")
            user = _evaluate(tools, session, "document.querySelector('.msg.user').textContent")
            errors = _evaluate(tools, session, "document.querySelectorAll('.error').length")
            updates = _evaluate(tools, session, "window.updates")
            shot = tools.send("Page.captureScreenshot", session, format="png")["data"]
        finally:
            tools.close()
        metrics = server.metrics()
    screenshot = tmp_path / "web-chat.png"
    screenshot.write_bytes(base64.b64decode(shot))
    assert user == "Hello, who are you?" and errors == 0
    assert answer and stats.startswith("24 tokens")  # -n 24: the whole answer came
    assert updates >= 8  # streamed: the bubble's text was replaced chunk after chunk
    assert metrics["llmpack_generated_tokens_total"] == 24
    assert screenshot.stat().st_size > 5000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
