"""MCP servers in the web page (issue 24) and tool calls shown rather than dropped (issue 22), in a real
headless Chromium against a real executable: the test starts a small MCP server (streamable HTTP, with
CORS for the page, answering tools/call as an SSE stream), the page connects to it from the settings,
offers its tool to the model, shows the model's call, asks before running it, calls it, and sends the
result back for the model's next reply; a denied call and a call of a tool no server offers are shown too.
The model's replies are canned (DevTools' Fetch), the tiny model's words being random."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.devtools import Page, canned_reply, fulfil
from support.forced_tools import forced_tool_server, hermes_call
from support.mcp_server import ADD, running_mcp_server
from support.web_page import TEXTS, browser, server, tool_call_reply  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def mcp_server() -> Iterator[tuple[str, list[dict]]]:
    with running_mcp_server() as running:
        yield running


def test_an_mcp_tool_is_offered_confirmed_called_and_its_result_answered(server, browser, mcp_server) -> None:
    url, calls = mcp_server
    page = Page(browser, server.url, intercept=True)
    try:
        # A tool call with no MCP server to run it: shown, not dropped, and nothing more is asked.
        page.send_message("Call something")
        fulfil(page, tool_call_reply("call_0", "lookup", '{"q": "x"}'))
        unknown = page.wait("document.querySelector('.tool-call') && document.querySelector('.tool-call').textContent")
        # The MCP server, added in the settings.
        page.evaluate("document.getElementById('settings-button').click()")
        page.type(url, "#mcp-new")
        page.evaluate("document.getElementById('mcp-add').click()")
        status = page.wait("document.getElementById('mcp-list').textContent.includes('1 tool') && "
                           "document.getElementById('mcp-list').textContent")
        page.key("Escape", 27)
        page.evaluate("document.getElementById('new-chat').click()")
        page.send_message("What is 2 + 3?")
        first = json.loads(fulfil(page, tool_call_reply("call_1", "add", '{"a": 2,', ' "b": 3}'))["postData"])
        page.wait("[...document.querySelectorAll('.tool-question button')].some(b => b.textContent === 'Run')")
        before_yes = [c["method"] for c in calls]
        page.evaluate("[...document.querySelectorAll('.tool-question button')].find(b => b.textContent === 'Run').click()")
        second = json.loads(fulfil(page, canned_reply("The sum is 5.", 5))["postData"])
        page.wait(f"{TEXTS}.includes('The sum is 5.') && !!document.querySelector('.stats')")
        shown = page.evaluate("[...document.querySelectorAll('.tool-call')].map(t => [t.querySelector('.tool-name').textContent, "
                              "t.querySelector('.tool-status').textContent, (t.querySelector('.tool-result') || {}).textContent])")
        # Denied: the model is told so, and nothing is called.
        page.send_message("And 4 + 4?")
        fulfil(page, tool_call_reply("call_2", "add", '{"a": 4, "b": 4}'))
        page.wait("[...document.querySelectorAll('.tool-question button')].some(b => b.textContent === 'Deny')")
        page.evaluate("[...document.querySelectorAll('.tool-question button')].find(b => b.textContent === 'Deny').click()")
        third = json.loads(fulfil(page, canned_reply("As you wish.", 3))["postData"])
        page.wait(f"{TEXTS}.includes('As you wish.')")
        page.reload()  # the calls are kept with the chat
        kept = page.evaluate("[...document.querySelectorAll('.tool-call .tool-status')].map(s => s.textContent)")
    finally:
        page.close()
    assert "tool: lookup" in unknown and "no MCP server offers it" in unknown
    assert url in status
    assert first["tools"] == [{"type": "function", "function": {"name": "add", "description": "Adds two numbers",
                                                               "parameters": ADD["inputSchema"]}}]
    assert "tools/call" not in before_yes  # asked first
    called = [c for c in calls if c["method"] == "tools/call"]
    assert len(called) == 1 and called[0]["params"] == {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert called[0]["session"] == "session-1" and called[0]["protocol"] == "2025-06-18"
    assert second["messages"] == [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                                                             "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    assert shown == [["tool: add", "done", "5"]]
    assert third["messages"][-1] == {"role": "tool", "tool_call_id": "call_2", "content": "The user declined this tool call."}
    assert kept == ["done", "denied"]


def test_a_real_model_calls_an_mcp_tool_through_the_page(tiny_bundle, browser, mcp_server, tmp_path) -> None:
    """The model's call as the real server parses and streams it (a tiny model with Qwen 2.5's template,
    its output forced to the call's text by a grammar, so it calls again after each result: the page's
    second request, with the result, is answered by another call)."""
    url, calls = mcp_server
    calls.clear()
    with forced_tool_server(tiny_bundle, tmp_path, hermes_call("add", {"a": 2, "b": 3})) as own:
        browser.events.clear()
        page = Page(browser, own.url)
        try:
            page.evaluate(f"localStorage.setItem('llmpack-mcp', JSON.stringify({{servers: [{{url: {json.dumps(url)}}}], confirm: true}}))")
            page.reload()
            page.wait("mcpTools.has('add')")
            page.send_message("What is 2 + 3?")
            run = "[...document.querySelectorAll('.tool-question button')].find(b => b.textContent === 'Run')"
            page.wait(f"!!{run}")
            page.evaluate(f"{run}.click()")
            page.wait("document.querySelectorAll('.tool-call').length === 2 && !!document.querySelector('.tool-question')")
            shown = page.evaluate("[...document.querySelectorAll('.tool-call')].map(t => [t.querySelector('.tool-name').textContent, "
                                  "t.querySelector('.tool-status').textContent, (t.querySelector('.tool-result') || {}).textContent])")
            sent = {e["params"]["requestId"]: json.loads(e["params"]["request"]["postData"]) for e in browser.events
                    if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].endswith("/v1/chat/completions")}
            statuses = [e["params"]["response"]["status"] for e in browser.events if e["method"] == "Network.responseReceived"
                        and e["params"]["requestId"] in sent]
        finally:
            page.close()
    assert [c["params"] for c in calls if c["method"] == "tools/call"] == [{"name": "add", "arguments": {"a": 2, "b": 3}}]
    assert shown == [["tool: add", "done", "5"], ["tool: add", "waiting for your yes", None]]
    second = list(sent.values())[1]["messages"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "add" and json.loads(
        second[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert second[2] == {"role": "tool", "tool_call_id": second[1]["tool_calls"][0]["id"], "content": "5"}
    assert statuses == [200, 200]
