"""The web chat page keeps what was said (issue 20, "the web page loses data"): a reply is saved while it
streams and survives a reload as stopped; a turn that failed keeps its Retry and is never sent twice; a
reply cut by the context or by max_tokens is marked and the context gauge stays within the context; a
conversation longer than the context drops its oldest turns (saying so); switching chats lets a reply
finish in the background.

Driven as tests/test_server_web.py drives the page: a real headless Chromium over DevTools, against a real
executable. Replies that must stream slowly (or never end) come from HeldReplies, which answers the page's
generation requests with streams the test writes into; others from DevTools' Fetch interception."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from support.devtools import DevTools, HeldReplies, Page, canned_reply, fulfil, reply_end, reply_pieces
from support.server_fixtures import ServerProcess
from support.web_page import STORED, TEXTS, browser, buttons, click, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def n_ctx(server: ServerProcess) -> int:
    """What one conversation may hold: the per-sequence context the page reads from /v1/models."""
    return httpx.get(server.base_url + "/models", timeout=10).json()["data"][0]["meta"]["n_ctx"]


def console_errors(browser: DevTools) -> list[str]:
    return [e["params"]["entry"]["text"] for e in browser.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]


def test_a_reply_is_saved_as_it_streams_and_a_reload_keeps_it_as_stopped(server: ServerProcess,
                                                                        browser: DevTools) -> None:
    browser.events.clear()
    page = Page(browser, server.url)
    try:
        held = HeldReplies(page)
        page.send_message("Tell me a story")
        held.request(0)
        # The question is saved at once, before any reply.
        asked = page.wait(f"{STORED}.length && {STORED}[0].messages[0].content")
        held.push(0, reply_pieces("Once upon a time there was"))
        page.wait("document.querySelector('.msg.assistant').textContent.includes('there was')")
        # The partial reply is saved while it streams (throttled), not only when it ends.
        saved = page.wait(f"{STORED}[0].messages.length === 2 && {STORED}[0].messages[1].content.includes('there was')"
                          f" && {STORED}[0].messages[1].content", timeout=5)
        page.reload()  # the stream is never ended
        after = page.evaluate(TEXTS)
        stopped = page.evaluate("!!document.querySelector('.msg.assistant.stopped') && "
                                "document.querySelector('.stopped-label').textContent")
        offered = buttons(page, ".turn.assistant .meta")
        # Continue sends the partial reply for the model to go on with, and the rest joins it.
        held = HeldReplies(page)
        click(page, "Continue", ".turn.assistant .meta")
        continued = held.request(0)
        held.push(0, reply_pieces(", a fox.") + reply_end(9), end=True)
        page.wait("!!document.querySelector('.stats')")
        final = page.evaluate(TEXTS)
        kept = page.evaluate(f"{STORED}[0].messages.map(m => [m.content, !!m.stopped])")
    finally:
        page.close()
    assert asked == "Tell me a story"
    assert saved == "Once upon a time there was"
    assert after == ["Tell me a story", "Once upon a time there was"]
    assert stopped == "stopped" and "Continue" in offered and "Regenerate" in offered
    assert continued["messages"] == [{"role": "user", "content": "Tell me a story"},
                                     {"role": "assistant", "content": "Once upon a time there was"}]
    assert continued["continue_final_message"] is True
    assert final == ["Tell me a story", "Once upon a time there was, a fox."]
    assert kept == [["Tell me a story", False], ["Once upon a time there was, a fox.", False]]
    assert console_errors(browser) == []


def fail_next(browser: DevTools, page: Page) -> dict:
    """Fails the page's next generation request as a stopped server would (nothing answers); returns its body."""
    paused = browser.wait_event("Fetch.requestPaused")
    page.send("Fetch.failRequest", requestId=paused["requestId"], errorReason="ConnectionRefused")
    page.wait("!document.getElementById('banner').hidden")
    return json.loads(paused["request"]["postData"])


def test_a_failed_turn_keeps_its_retry_and_is_never_sent_twice(server: ServerProcess, browser: DevTools) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Are you there?")
        fail_next(browser, page)
        page.reload()
        after = page.evaluate(TEXTS)
        offered = buttons(page, ".turn.user .meta")
        click(page, "Retry", ".turn.user .meta")
        retried = fail_next(browser, page)
        page.send_message("Are you there?")  # typed again rather than Retry: the same turn, once
        typed_again = fail_next(browser, page)
        page.send_message("Hello?")  # something else: it joins the unanswered turn, never a second user turn
        joined = fulfil(page, canned_reply("Yes.", 2))
        page.wait("!!document.querySelector('.stats')")
        shown = page.evaluate(TEXTS)
        retry_left = buttons(page, ".turn.user .meta")
    finally:
        page.close()
    once = [{"role": "user", "content": "Are you there?"}]
    assert after == ["Are you there?"] and "Retry" in offered
    assert retried["messages"] == once and typed_again["messages"] == once
    assert json.loads(joined["postData"])["messages"] == [{"role": "user", "content": "Are you there?\n\nHello?"}]
    assert shown == ["Are you there?", "Hello?", "Yes."]
    assert "Retry" not in retry_left  # answered now


def test_a_cut_reply_is_marked_and_the_gauge_stays_within_the_context(server: ServerProcess, browser: DevTools,
                                                                      n_ctx: int) -> None:
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("Count to a thousand")
        # As the server ends a reply that filled the context: the last token sampled never entered it.
        fulfil(page, canned_reply("one two three", n_ctx - 29, "length", prompt_tokens=30))
        page.wait("!!document.querySelector('.stats')")
        context_cut = page.evaluate("[...document.querySelectorAll('.turn.assistant .meta span')].map(s => s.textContent)")
        gauge = page.evaluate("document.getElementById('context').textContent")
        offered = buttons(page, ".turn.assistant .meta")
        page.evaluate("document.getElementById('new-chat').click()")
        page.send_message("Count to ten")
        fulfil(page, canned_reply("one two", 7, "length", prompt_tokens=30))  # max_tokens reached
        page.wait("!!document.querySelector('.stats')")
        token_cut = page.evaluate("[...document.querySelectorAll('.turn.assistant .meta span')].map(s => s.textContent)")
        page.reload()
        kept = page.evaluate("[...document.querySelectorAll('.turn.assistant .meta span')].map(s => s.textContent)")
    finally:
        page.close()
    assert "cut: context full" in context_cut
    assert gauge == f"context {n_ctx} / {n_ctx}"
    assert "Continue" in offered
    assert "cut: token limit" in token_cut and "cut: context full" not in token_cut
    assert kept == token_cut


def exchange(word: str, n: int) -> list[dict[str, str]]:
    """A question and its answer of about `n` tokens each ("a" is one token of the tiny model's)."""
    return [{"role": "user", "content": word + " a" * n}, {"role": "assistant", "content": "a " * n}]


def prompt_tokens(server: ServerProcess, messages: list[dict[str, str]]) -> int:
    prompt = httpx.post(server.url + "apply-template", json={"messages": messages}, timeout=10).json()["prompt"]
    return len(httpx.post(server.url + "tokenize", json={"content": prompt, "add_special": True},
                          timeout=10).json()["tokens"])


def test_a_long_conversation_drops_its_oldest_turns_to_fit(server: ServerProcess, browser: DevTools,
                                                           n_ctx: int) -> None:
    system = {"role": "system", "content": "Be brief."}
    history = exchange("cat", n_ctx // 5) + exchange("dog", n_ctx // 5) + exchange("the", n_ctx // 5)
    question = {"role": "user", "content": "What next?"}
    # The setting: the whole conversation is past the context, its last exchange alone is not.
    assert prompt_tokens(server, [system, *history, question]) > n_ctx
    assert prompt_tokens(server, [system, *history[4:], question]) + n_ctx // 4 <= n_ctx
    stored = [{"id": "long", "title": "Long", "created": 1, "updated": 1,
               "messages": [{"role": m["role"], "content": m["content"]} for m in history]}]
    page = Page(browser, server.url, intercept=True)
    try:
        page.evaluate(f"localStorage.setItem('llmpack-chats', {json.dumps(json.dumps(stored))}); "
                      "localStorage.setItem('llmpack-current', 'long'); "
                      "localStorage.setItem('llmpack-settings', JSON.stringify({system: 'Be brief.'}))")
        page.reload()
        page.send_message("What next?")
        sent = json.loads(fulfil(page, canned_reply("Sleep.", 2))["postData"])["messages"]
        page.wait("!!document.querySelector('.stats')")
        note = page.evaluate("(document.querySelector('.dropped-note') || {}).textContent")
        shown = page.evaluate("document.querySelectorAll('.msg').length")
        banner = page.evaluate("document.getElementById('banner').hidden")
    finally:
        page.close()
    assert sent == [system, *history[4:], question]  # the two oldest exchanges went, the system prompt stayed
    assert note and "4 oldest messages" in note
    assert shown == 8 and banner  # still on screen, only no longer sent; no error


def test_a_message_longer_than_the_context_is_refused_in_the_users_words(server: ServerProcess, browser: DevTools,
                                                                          n_ctx: int) -> None:
    browser.events.clear()
    page = Page(browser, server.url, intercept=True)
    try:
        page.send_message("many words " * 400)  # far past the context
        message = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
        time.sleep(0.5)
        requested = [e for e in browser.events if e["method"] == "Fetch.requestPaused"]
        left = page.evaluate("[input.value, document.querySelectorAll('.msg').length]")
    finally:
        page.close()
    assert requested == []  # not sent
    assert "too long" in message and f"{n_ctx} tokens" in message
    assert "-np" not in message and "-c" not in message  # the user's words, not the operator's
    assert left == ["many words " * 400, 0]  # given back to be shortened


def test_switching_chats_lets_a_reply_finish_in_the_background(server: ServerProcess, browser: DevTools) -> None:
    browser.events.clear()
    page = Page(browser, server.url)
    try:
        held = HeldReplies(page)
        page.send_message("First question")
        held.request(0)
        held.push(0, reply_pieces("The first part"))
        page.wait("document.querySelector('.msg.assistant').textContent.includes('first part')")
        page.evaluate("document.getElementById('new-chat').click()")
        page.send_message("Second question")  # the other chat is free to talk meanwhile
        held.request(1)
        held.push(0, reply_pieces(" and the rest.") + reply_end(6), end=True)
        held.push(1, reply_pieces("Second answer.") + reply_end(3), end=True)
        page.wait("!!document.querySelector('.stats')")
        second = page.evaluate(TEXTS)
        first_stored = page.wait(f"{STORED}.find(c => c.title === 'First question').messages"
                                 ".map(m => [m.content, !!m.stopped, !!m.stats])")
        click(page, "First question", "#chats")
        first = page.evaluate(TEXTS)
        stats = page.evaluate("(document.querySelector('.stats') || {}).textContent")
    finally:
        page.close()
    assert second == ["Second question", "Second answer."]
    assert first_stored == [["First question", False, False], ["The first part and the rest.", False, True]]
    assert first == ["First question", "The first part and the rest."] and stats.startswith("6 tokens")
    assert console_errors(browser) == []
