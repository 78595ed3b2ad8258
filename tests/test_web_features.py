"""What llama-server's page has and ours gained (issue 24), in a real headless Chromium against a real
executable: versions after regenerate and edit (< 2/3 >, the conversation following the version shown),
KaTeX, import of exported conversations (ours and llama-server's page's), search, keyboard shortcuts and
their help, the model panel (/props), and the sampling settings, sent and honoured by the real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.devtools import Page, canned_reply, fulfil
from support.web_page import TEXTS, browser, buttons, click, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

VERSION = "(document.querySelector('{0} .version') || {{}}).textContent"


def answer(page: Page, text: str) -> dict:
    request = fulfil(page, canned_reply(text, 2))
    page.wait(f"[...document.querySelectorAll('.msg.assistant')].some(m => m.textContent.trim() === {json.dumps(text)}) "
              "&& !!document.querySelector('.stats')")
    return json.loads(request["postData"])


def test_regenerate_and_edit_keep_versions_to_switch_between(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Question")
        answer(page, "Answer A")
        click(page, "Regenerate", ".turn.assistant .meta")
        answer(page, "Answer B")
        after_regenerate = [page.evaluate(TEXTS), page.evaluate(VERSION.format(".turn.assistant"))]
        page.evaluate("document.querySelector('.turn.assistant [aria-label=\"Previous version\"]').click()")
        back = [page.evaluate(TEXTS), page.evaluate(VERSION.format(".turn.assistant"))]
        page.send_message("Follow-up")  # goes on from the version shown
        follow = answer(page, "Answer C")
        click(page, "Edit", ".turn.user .meta")
        page.evaluate("input.select()")
        page.send("Input.insertText", text="Better question")
        page.key("Enter", 13)
        edited = answer(page, "Answer D")
        after_edit = [page.evaluate(TEXTS), page.evaluate(VERSION.format(".turn.user"))]
        page.reload()  # the versions are kept with the chat
        page.evaluate("document.querySelector('.turn.user [aria-label=\"Previous version\"]').click()")
        first_version = [page.evaluate(TEXTS), page.evaluate(VERSION.format(".turn.user")),
                         page.evaluate(VERSION.format(".turn.assistant"))]
    finally:
        page.close()
    assert after_regenerate == [["Question", "Answer B"], "2/2"]
    assert back == [["Question", "Answer A"], "1/2"]
    assert follow["messages"] == [{"role": "user", "content": "Question"}, {"role": "assistant", "content": "Answer A"},
                                  {"role": "user", "content": "Follow-up"}]
    assert edited["messages"] == [{"role": "user", "content": "Better question"}]
    assert after_edit == [["Better question", "Answer D"], "2/2"]
    assert first_version == [["Question", "Answer A", "Follow-up", "Answer C"], "1/2", "1/2"]


def test_math_is_rendered_by_katex_and_money_is_not_math(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Math")
        fulfil(page, canned_reply("Inline $e^{i\\pi} + 1 = 0$ and \\(\\alpha\\), it costs $5 and $10.\n\n$$\n"
                                  "\\frac{a}{b}\n$$\n\n\\[\\sum_{k=1}^n k\\]\n\n`$x$` stays code", 9))
        page.wait("!!document.querySelector('.stats')")
        math = page.evaluate("""(() => { const m = document.querySelector('.msg.assistant'); return {
            inline: m.querySelectorAll('p .katex').length, display: m.querySelectorAll('.katex-display').length,
            frac: !!m.querySelector('.katex-display .mfrac'), tex: [...m.querySelectorAll('annotation')].map(a => a.textContent),
            money: m.textContent.includes('costs $5 and $10'), code: m.querySelector('code').textContent,
            font: getComputedStyle(m.querySelector('.katex')).fontFamily,
            fontLoaded: document.fonts.check('1em KaTeX_Main')}; })()""")
    finally:
        page.close()
    assert math["inline"] == 2 and math["display"] == 2 and math["frac"]
    assert math["tex"] == ["e^{i\\pi} + 1 = 0", "\\alpha", "\\frac{a}{b}", "\\sum_{k=1}^n k"]  # backslashes kept
    assert math["money"] and math["code"] == "$x$" and "KaTeX_Main" in math["font"] and math["fontLoaded"]


def set_file(page: Page, selector: str, path: Path) -> None:
    node = page.send("DOM.querySelector", nodeId=page.send("DOM.getDocument")["root"]["nodeId"], selector=selector)
    page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])


def test_an_exported_chat_imports_back_and_search_finds_it(server, browser, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads), eventsEnabled=True)
    theirs = tmp_path / "llama-server.json"
    theirs.write_text(json.dumps({"conv": {"id": "c1", "name": "From llama-server", "currNode": "m3"}, "messages": [
        {"id": "m0", "role": "system", "content": "", "parent": None},
        {"id": "m1", "role": "user", "content": "Their question", "parent": "m0"},
        {"id": "m2", "role": "assistant", "content": "An older reply", "parent": "m1"},
        {"id": "m3", "role": "assistant", "content": "Their answer", "parent": "m1"}]}))
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps({"messages": [{"role": "system", "content": "<img src=x onerror=alert(1)>"},
                                                {"role": "user", "content": {"not": "text"}}]}))
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Zebra facts")
        answer(page, "Stripes")
        click(page, "Regenerate", ".turn.assistant .meta")
        answer(page, "Black and white")
        page.evaluate("document.getElementById('export-json').click()")
        while browser.wait_event("Browser.downloadProgress")["state"] != "completed":
            pass
        page.evaluate("localStorage.clear()")
        page.reload()
        set_file(page, "#import-file", downloads / "Zebra-facts.json")
        page.wait(f"{TEXTS}.length === 2")
        imported = [page.evaluate(TEXTS), page.evaluate(VERSION.format(".turn.assistant")), buttons(page, "#chats")]
        set_file(page, "#import-file", theirs)
        page.wait("document.querySelectorAll('#chats li').length === 2")
        from_llama_server = [page.evaluate(TEXTS), buttons(page, "#chats")]
        set_file(page, "#import-file", hostile)
        refused = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        page.type("zebra", "#search")
        found = buttons(page, "#chats")
        page.evaluate("document.getElementById('search').value = ''")
        page.type("THEIR ANSWER", "#search")  # the words of a message, in any case
        found_by_content = buttons(page, "#chats")
        page.type("nothing like it", "#search")
        nothing = page.evaluate("document.getElementById('chats').textContent")
    finally:
        page.close()
    assert imported == [["Zebra facts", "Black and white"], "2/2", ["Zebra facts"]]
    assert from_llama_server == [["Their question", "Their answer"], ["From llama-server", "Zebra facts"]]
    assert "hostile.json holds no conversation" in refused
    assert found == ["Zebra facts"] and found_by_content == ["From llama-server"] and "no chat holds" in nothing


def press(page: Page, key: str, code: int, modifiers: int = 0) -> None:
    for kind in ("keyDown", "keyUp"):
        page.send("Input.dispatchKeyEvent", type=kind, key=key, code=f"Key{key.upper()}" if key.isalpha() else key,
                  windowsVirtualKeyCode=code, modifiers=modifiers, text=key if kind == "keyDown" and not modifiers & 2 else "")


def test_keyboard_shortcuts_and_their_help(server, browser) -> None:
    ctrl, shift = 2, 8
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("First")
        answer(page, "One")
        press(page, "O", 79, ctrl | shift)
        new_chat = [page.evaluate(TEXTS), buttons(page, "#chats")]
        press(page, "k", 75, ctrl)
        search = page.evaluate("document.activeElement.id")
        press(page, "b", 66, ctrl)
        hidden = page.evaluate("getComputedStyle(document.getElementById('sidebar')).display")
        press(page, "b", 66, ctrl)
        shown = page.evaluate("getComputedStyle(document.getElementById('sidebar')).display")
        page.evaluate("document.getElementById('settings-button').focus()")
        press(page, "/", 191)
        focused = page.evaluate("document.activeElement.id")
        page.evaluate("document.getElementById('settings-button').focus()")
        press(page, "?", 191, shift)
        help_rows = page.evaluate("document.getElementById('help').open && "
                                  "[...document.querySelectorAll('#help tr')].map(r => r.cells[1].textContent)")
        page.key("Escape", 27)
        closed = page.evaluate("!document.getElementById('help').open")
        page.type("?")  # in the input, ? is a character
        typed = page.evaluate("[input.value, document.getElementById('help').open]")
    finally:
        page.close()
    assert new_chat == [[], ["New chat", "First"]]
    assert search == "search" and hidden == "none" and shown != "none" and focused == "input"
    assert help_rows and "New chat" in help_rows and "Search the chats" in help_rows and closed
    assert typed == ["?", False]


def test_the_model_panel_shows_the_executable_context_template_and_props(server, browser) -> None:
    props = httpx.get(server.url + "props", timeout=10).json()
    page = Page(browser, server.url)
    try:
        page.evaluate("document.getElementById('model').click()")
        page.wait("document.getElementById('model-props').textContent.length > 2")
        facts = page.evaluate("Object.fromEntries([...document.querySelectorAll('#model-facts dt')]"
                              ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
        template = page.evaluate("document.getElementById('model-template').textContent")
        shown_props = json.loads(page.evaluate("document.getElementById('model-props').textContent"))
    finally:
        page.close()
    assert facts["Name"] == props["model_alias"] == "tiny"  # the executable's name, tiny.llmpack
    assert facts["File"] == "tiny.llmpack"
    assert facts["Context"].startswith(f"{props['n_ctx']} tokens per sequence")
    assert facts["Sequences"].startswith(f"{props['total_slots']} at once")
    assert template == props["chat_template"] and shown_props == props


def test_every_sampling_setting_is_sent_and_honoured_by_the_server(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.evaluate("document.getElementById('settings-button').click()")
        defaults = page.wait("document.getElementById('set-top_k').placeholder !== 'default' && "
                             "['temperature', 'top_k', 'min_p', 'repeat_penalty'].map(n => document.getElementById('set-' + n).placeholder)")
        for field, value in (("#set-top_k", "1"), ("#set-min_p", "0.1"), ("#set-repeat_penalty", "1.1"),
                             ("#set-presence_penalty", "0.5"), ("#set-frequency_penalty", "0.25"), ("#set-seed", "3"),
                             ("#set-stop", "e\n\\n")):
            page.type(value, field)
        page.key("Escape", 27)
        page.reload()
        page.send_message("Hello")
        body = answer(page, "Hi")
    finally:
        page.close()
    params = httpx.get(server.url + "props", timeout=10).json()["default_generation_settings"]["params"]
    assert [float(d) for d in defaults] == [params[n] for n in ("temperature", "top_k", "min_p", "repeat_penalty")]
    assert {k: body[k] for k in ("top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "seed",
                                 "stop")} == {"top_k": 1, "min_p": 0.1, "repeat_penalty": 1.1, "presence_penalty": 0.5,
                                              "frequency_penalty": 0.25, "seed": 3, "stop": ["e", "\n"]}
    # The page's own request, sent to the real server: accepted, and its settings honoured there. Top-k 1 is
    # greedy: another seed writes the same words. A stop string taken from the middle of those words ends
    # the reply just before it (the grammar writes letters and spaces, so the text is never empty).
    def reply(**change) -> str:
        sent = {**body, "stream": False, **change}
        sent.pop("stream_options")
        response = httpx.post(server.url + "v1/chat/completions", json=sent, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    greedy = reply(stop=[])
    assert reply(stop=[], seed=4) == greedy and len(greedy) > 4
    cut = next(i for i in range(len(greedy) // 2, len(greedy)) if greedy[i] != " " and greedy[i] not in greedy[:i])
    assert reply(stop=[greedy[cut]]) == greedy[:cut]
