"""The page's small defects seen by a new user (issue 24, "small things seen"), each checked in a real
headless Chromium against a real executable: the Copy button over long code, a stale error banner, the
chat buttons on an empty first visit, an abandoned empty chat, a stopped reply's stats and gauge, the
phone-width header and reply buttons, and dark mode's backdrop and contrast (WCAG AA: 4.5:1 for text)."""

from __future__ import annotations

import pytest
from support.devtools import HeldReplies, Page, canned_reply, fulfil, reply_pieces
from support.web_page import browser, buttons, click, contrasts, dark, server, tool_call_reply  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

LONG_CODE = "```python\nprint('" + "x" * 200 + "')  # the end of a long line\n```\n"


def test_the_copy_button_never_covers_the_code(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Long code")
        fulfil(page, canned_reply(LONG_CODE, 9))
        page.wait("!!document.querySelector('.stats')")
        page.evaluate("document.querySelector('.msg pre').scrollLeft = 1e6")
        overlap = page.evaluate("""(() => { const a = document.querySelector('.msg .copy').getBoundingClientRect(),
            b = document.querySelector('.msg pre').getBoundingClientRect();
            return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom; })()""")
    finally:
        page.close()
    assert overlap is False


def test_a_good_attachment_clears_the_last_attachment_error(server, browser) -> None:
    page = Page(browser, server.url)
    try:
        drop = """(file => { const data = new DataTransfer(); data.items.add(file);
            document.getElementById('log').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,
                                                                                cancelable: true})); })"""
        page.evaluate(f"{drop}(new File(['x\\u0000y'], 'data.bin'))")
        refused = page.wait("!document.getElementById('banner').hidden")
        page.evaluate(f"{drop}(new File(['notes'], 'notes.txt', {{type: 'text/plain'}}))")
        page.wait("document.getElementById('attachments').textContent.includes('notes.txt')")
        stale = page.evaluate("!document.getElementById('banner').hidden")
    finally:
        page.close()
    assert refused and stale is False


def test_chat_buttons_wait_for_a_chat_and_an_empty_chat_left_goes(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        first_visit = page.evaluate("['rename', 'delete', 'export-json', 'export-md'].map(id => document.getElementById(id).disabled)")
        page.send_message("Hello")
        fulfil(page, canned_reply("Hi", 1))
        page.wait("!!document.querySelector('.stats')")
        with_chat = page.evaluate("['rename', 'delete', 'export-json', 'export-md'].map(id => document.getElementById(id).disabled)")
        page.evaluate("document.getElementById('new-chat').click()")
        listed_new = buttons(page, "#chats")
        click(page, "Hello", "#chats")  # left without a word: the empty chat goes
        listed = buttons(page, "#chats")
        page.reload()
        after_reload = buttons(page, "#chats")
    finally:
        page.close()
    assert first_visit == [True, True, True, True] and with_chat == [False, False, False, False]
    assert listed_new == ["New chat", "Hello"] and listed == ["Hello"] and after_reload == ["Hello"]


def test_a_stopped_reply_gets_its_stats_and_the_gauge_moves(server, browser) -> None:
    page = Page(browser, server.url)
    try:
        held = HeldReplies(page)
        page.send_message("Tell me a story")
        held.request(0)
        held.push(0, reply_pieces("Once upon a time there was a fox"))  # 4 pieces: 4 tokens
        page.wait("document.querySelector('.msg.assistant').textContent.includes('fox')")
        page.evaluate("document.getElementById('stop').click()")
        stats = page.wait("(document.querySelector('.stats') || {}).textContent")
        gauge = page.evaluate("document.getElementById('context').textContent")
    finally:
        page.close()
    assert stats.startswith("4 tokens, ")
    used = int(gauge.split()[1])
    assert used > 4, gauge  # the prompt and the 4 tokens


def test_at_phone_width_the_header_and_the_reply_buttons_keep_one_line(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True)
        page.send_message("Hello")
        fulfil(page, canned_reply("A reply", 123, prompt_tokens=4567))
        page.wait("!!document.querySelector('.stats')")
        header = page.evaluate("""[...document.querySelector('header').children].filter(e => e.offsetParent !== null)
                                  .map(e => Math.round(e.getBoundingClientRect().top + e.getBoundingClientRect().height / 2))""")
        tops = page.evaluate("[...document.querySelectorAll('.turn.assistant .meta button')].map(b => b.getBoundingClientRect().top)")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    finally:
        page.close()
    assert max(header) - min(header) <= 4, header
    assert len(tops) >= 2 and len(set(tops)) == 1, tops
    assert overflow is False


def test_dark_mode_shows_the_dialog_backdrop_and_keeps_aa_contrast(server, browser) -> None:
    page = Page(browser, server.url, intercept=True)
    measured = []
    try:
        page.send_message("Hello")
        fulfil(page, canned_reply("A [link](http://127.0.0.1:9/) and `code`", 9))
        page.wait("!!document.querySelector('.stats')")
        for mode in ("dark", "light"):
            dark(page, mode == "dark")
            measured += [[mode, *row] for row in contrasts(page, ".msg a", ".msg :not(pre) > code")]
        click(page, "Regenerate", ".turn.assistant .meta")  # versions: < 2/2 >
        fulfil(page, tool_call_reply("call_0", "lookup", '{"q": "x"}'))  # a tool call's box
        page.wait("!!document.querySelector('.tool-call') && !!document.querySelector('.version')")
        for mode in ("dark", "light"):
            dark(page, mode == "dark")
            measured += [[mode, *row] for row in contrasts(
                page, ".meta button:not(:disabled)", ".stats", ".version", ".tool-call .tool-name", ".tool-status",
                ".chat-tools button", "header button", "#model", "#context", ".hint", "#chats button", "#send", ".attach")]
        dark(page)
        page.evaluate("document.getElementById('settings-button').click()")
        backdrop = page.evaluate("getComputedStyle(document.getElementById('settings'), '::backdrop').backgroundColor")
        in_dialog = contrasts(page, "dialog .hint", "dialog label")
    finally:
        page.close()
    low = [row for row in measured + in_dialog if row[-1] < 4.5]
    assert len(measured) > 20 and in_dialog and low == [], low
    alpha = float(backdrop.rstrip(")").split(",")[3]) if backdrop.startswith("rgba") else 1.0
    assert backdrop != "rgba(0, 0, 0, 0)" and alpha >= 0.3, backdrop
