"""The web chat page in a real headless Chromium (Debian's `chromium`, from build/system-deps.sh), driven
through the DevTools protocol (tests/support/devtools.py), against a real executable.

The tiny model's words are random, so the tests that need a known reply (markdown, code, model HTML)
intercept the page's chat (or raw completion) request with DevTools' Fetch domain and answer it with a canned SSE stream;
the request the page sent is read there too (the settings in its body). One server and one browser
serve the module; each test opens its own tab with emptied storage."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from support.commands import REPO, run
from support.devtools import DevTools, Page, canned_completion, canned_reply, fulfil
from support.server_fixtures import ServerProcess, running_server, start_server
from support.tiny_model import write_tiny_gguf
from support.web_page import browser, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


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


def model_id(server: ServerProcess) -> str:
    """The model's name as the server lists it (and the page shows and sends it)."""
    return httpx.get(server.base_url + "/models", timeout=10).json()["data"][0]["id"]


def test_the_committed_page_is_what_web_sources_build() -> None:
    result = run([sys.executable, str(REPO / "web" / "build_page.py"), "--check"], timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_page_is_served_with_a_policy_that_forbids_other_origins(server: ServerProcess) -> None:
    response = httpx.get(server.url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    # The page reaches only its own server, and the MCP servers the user adds (any http(s) origin: mcp.js);
    # no script but the page's own runs, so nothing else can use that.
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self' http: https:"
    assert directives["worker-src"] == "'self'" and directives["font-src"] == "data:"
    assert directives["frame-ancestors"] == "'none'" and "unsafe-inline" not in policy
    # Every inline script and the style are allowed by their hash, and nothing else is.
    assert directives["script-src"].count("'sha256-") == response.text.count("<script>") == 5
    assert directives["style-src"].count("'sha256-") == response.text.count("<style>") == 1
    assert "src=\"http" not in response.text and "href=\"http" not in response.text


def test_web_chat_streams_an_answer(server: ServerProcess, browser: DevTools, tmp_path: Path) -> None:
    page = Page(browser, server.url)
    try:
        listed = httpx.get(server.base_url + "/models", timeout=10).json()["data"][0]
        assert page.wait(f"document.getElementById('model').textContent === {json.dumps(listed['id'])}")
        n_ctx = listed["meta"]["n_ctx"]
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
        page.send("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
        page.screenshot(tmp_path / "web-desktop-dark.png", 1280, 800, mobile=False)
        page.send("Emulation.setEmulatedMedia", features=[])
        page.screenshot(tmp_path / "web-phone.png", 390, 844, mobile=True)
        phone_overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        page.evaluate("document.getElementById('menu').click()")
        page.screenshot(tmp_path / "web-phone-chats.png", 390, 844, mobile=True)
        sidebar = page.evaluate("getComputedStyle(document.getElementById('sidebar')).visibility")
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
    assert not phone_overflow and sidebar == "visible" and csp_errors == []
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
            page.wait("typeof modelName === 'string' && document.getElementById('model').textContent === modelName")
            page.send_message("hello")
            stats = page.wait("(document.querySelector('.stats') || {}).textContent")
            kept = page.evaluate("sessionStorage.getItem('llmpack-api-key')")
        finally:
            page.close()
    # The key went with the request: the server answered it (how many tokens a random model says before
    # its end-of-generation token varies with the sampling's seed; the prompt was evaluated either way).
    assert re.match(r"\d tokens, .* prompt \d+ tokens", stats), stats
    assert kept == "sesame"


def test_rename_export_and_delete_a_chat(server: ServerProcess, browser: DevTools, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads), eventsEnabled=True)
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Keep this")
        fulfil(page, canned_reply("Kept **here**", 2))
        page.wait("!!document.querySelector('.stats')")
        # The browser's own dialogs answered as a user would: a new name, then yes to deleting.
        page.evaluate("window.prompt = () => 'Notes: week 1'; window.confirm = () => true")
        page.evaluate("document.getElementById('rename').click()")
        titles = page.evaluate("[...document.querySelectorAll('#chats button')].map(b => b.textContent)")
        for button, name in (("export-md", "Notes-week-1.md"), ("export-json", "Notes-week-1.json")):
            page.evaluate(f"document.getElementById('{button}').click()")
            while browser.wait_event("Browser.downloadProgress")["state"] != "completed":
                pass
            assert (downloads / name).is_file()
        page.evaluate("document.getElementById('delete').click()")
        left = page.evaluate("[document.querySelectorAll('#chats li').length, document.querySelectorAll('.msg').length]")
        page.reload()
        after_reload = page.evaluate("document.querySelectorAll('#chats li').length")
    finally:
        page.close()
    assert titles == ["Notes: week 1"]
    assert (downloads / "Notes-week-1.md").read_text() == "# Notes: week 1\n\n## user\n\nKeep this\n\n## assistant\n\nKept **here**\n"
    exported = json.loads((downloads / "Notes-week-1.json").read_text())
    assert exported["title"] == "Notes: week 1"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [("user", "Keep this"), ("assistant", "Kept **here**")]
    assert left == [0, 0] and after_reload == 0


def test_raw_completion_mode_continues_one_text(server: ServerProcess, browser: DevTools, tmp_path: Path) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        # This model has a template of its own: nothing is suggested, and the page starts in chat mode.
        suggested = page.evaluate("!document.getElementById('suggest').hidden")
        page.evaluate("document.getElementById('settings-button').click()")
        page.evaluate("document.getElementById('set-raw').click()")
        for field, value in (("#set-temperature", "0.3"), ("#set-top_p", "0.8"), ("#set-max_tokens", "77"),
                             ("#set-seed", "42")):
            page.type(value, field)
        page.key("Escape", 27)
        page.reload()  # kept per browser, as the other settings
        mode = page.evaluate("document.getElementById('mode').hidden ? '' : document.getElementById('mode').textContent")
        page.send_message("Once upon a time")
        first = fulfil(page, canned_completion(", there was a tiny model.", 7))
        stats = page.wait("(document.querySelector('.stats') || {}).textContent")
        parts = page.evaluate("[...document.querySelectorAll('.msg.raw .part')].map(p => [p.className, p.textContent])")
        page.evaluate("[...document.querySelectorAll('.meta button')].find(b => b.textContent === 'Regenerate').click()")
        again = fulfil(page, canned_completion(" lived a fox.", 4))
        page.wait("document.querySelector('.msg.raw').textContent === 'Once upon a time lived a fox.'")
        # The user's next piece as typed (its leading space and line break kept); an error, then Retry.
        page.type(" The end.")
        page.key("Enter", 13, shift=True)
        page.key("Enter", 13)
        fulfil(page, json.dumps({"error": {"message": "the server is busy", "type": "server_error", "param": None,
                                           "code": "server_busy"}}), status=503)
        error = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        page.evaluate("[...document.querySelectorAll('#banner button')].find(b => b.textContent === 'Retry').click()")
        retried = fulfil(page, canned_completion("Then it slept.", 5))
        page.wait("document.querySelector('.msg.raw').textContent.endsWith('slept.')")
        page.screenshot(tmp_path / "web-raw-desktop.png", 1280, 800, mobile=False)
        # An empty input lets the model go on; Stop works as in a chat.
        page.evaluate("input.focus()")
        page.key("Enter", 13)
        going_on = browser.wait_event("Fetch.requestPaused")["request"]
        page.wait("!document.getElementById('stop').hidden")
        page.evaluate("document.getElementById('stop').click()")
        page.wait("!!document.querySelector('.msg.raw .part.assistant.stopped')")
        label = page.evaluate("document.querySelector('.stopped-label').textContent")
        text = page.evaluate("document.querySelector('.msg.raw').textContent")
    finally:
        page.close()
    assert not suggested and mode == "raw completion"
    assert first["url"] == server.url + "v1/completions"
    assert json.loads(first["postData"]) == {"prompt": "Once upon a time", "stream": True,
                                             "stream_options": {"include_usage": True}, "model": model_id(server),
                                             "temperature": 0.3, "top_p": 0.8, "max_tokens": 77, "seed": 42}
    assert stats.startswith("7 tokens") and stats.endswith("prompt 12 tokens")
    assert parts == [["part user", "Once upon a time"], ["part assistant", ", there was a tiny model."]]
    assert json.loads(again["postData"])["prompt"] == "Once upon a time"
    assert error.startswith("error: the server is busy")
    assert json.loads(retried["postData"])["prompt"] == "Once upon a time lived a fox. The end.\n"
    assert json.loads(going_on["postData"])["prompt"] == "Once upon a time lived a fox. The end.\nThen it slept."
    assert label == "stopped" and text == "Once upon a time lived a fox. The end.\nThen it slept."


def test_a_model_without_a_template_gets_raw_mode_suggested_once(tiny_bundle: Path, browser: DevTools,
                                                                  tmp_path: Path) -> None:
    base = write_tiny_gguf(tmp_path / "base.gguf", chat_template=None)
    with running_server(tiny_bundle, "-m", str(base), "-n", "8", "-c", "256", "--grammar", "root ::= [a-z ] root",
                        log_path=tmp_path / "server.log") as own:
        listed = httpx.get(own.base_url + "/models", timeout=10).json()["data"][0]
        page = Page(browser, own.url)
        try:
            note = page.wait("!document.getElementById('suggest').hidden && document.getElementById('suggest').textContent")
            page.screenshot(tmp_path / "web-raw-suggested.png", 1280, 800, mobile=False)
            silent = page.evaluate("[document.getElementById('mode').hidden, "
                                   "JSON.parse(localStorage.getItem('llmpack-settings') || '{}').raw || false]")
            page.evaluate("[...document.querySelectorAll('#suggest button')].find(b => b.textContent === "
                          "'Use raw completion').click()")
            page.send_message("the quick brown fox")
            stats = page.wait("(document.querySelector('.stats') || {}).textContent")
            parts = page.evaluate("[...document.querySelectorAll('.msg.raw .part')].map(p => p.textContent)")
            page.reload()
            after = page.evaluate("[document.getElementById('suggest').hidden, document.getElementById('mode').hidden]")
        finally:
            page.close()
        served = own.metrics()
    assert "(the model has none)" in listed["chat_template"]
    assert "no chat template" in note and silent == [True, False]  # suggested, not switched
    assert stats.startswith("8 tokens")  # the real server continued the text: -n 8
    assert parts[0] == "the quick brown fox" and len(parts) == 2 and parts[1]
    assert after == [True, False]  # asked once; raw mode kept
    assert served  # the server is still up after the page's requests


def test_a_dropped_text_file_is_attached_and_a_binary_one_refused(server: ServerProcess, browser: DevTools) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        # A synthetic drop, as the browser makes when a file is dragged onto the conversation or the input;
        # dispatchEvent's false says the page took the file (the browser would otherwise open it).
        taken = page.evaluate("""(() => {
            const drop = (id, ...files) => { const data = new DataTransfer(); files.forEach(f => data.items.add(f));
                const target = document.getElementById(id);
                target.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
                return !target.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})); };
            return [drop('log', new File(['Meeting at noon.\\n'], 'notes.md', {type: 'text/markdown'})),
                    drop('input', new File([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10])], 'photo.png',
                                           {type: 'image/png'}), new File(['x\\u0000y'], 'data.bin'))]; })()""")
        refused = page.wait("document.getElementById('banner').textContent.includes('data.bin') && "
                            "document.getElementById('banner').textContent")
        attached = page.evaluate("document.getElementById('attachments').textContent")
        page.evaluate("[...document.querySelectorAll('#banner button')].find(b => b.textContent === 'OK').click()")
        page.send_message("When is the meeting?")
        sent = json.loads(fulfil(page, canned_reply("At noon.", 2))["postData"])["messages"]
        page.wait("!!document.querySelector('.stats')")
        shown = page.evaluate("document.querySelector('.turn.user').textContent")
    finally:
        page.close()
    assert taken == [True, True]
    assert refused == ("error: photo.png: images need a model with a projector that reads them (--mmproj); this one "
                       "reads text only; data.bin is not a text file: only text files can be attachedOK")
    assert "notes.md" in attached and "photo.png" not in attached and "data.bin" not in attached
    assert sent[-1]["content"] == "File notes.md:\n```\nMeeting at noon.\n\n```\n\nWhen is the meeting?"
    assert "attached: notes.md" in shown
