"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) end to end: the real executable
(tiny model) in --server mode, called by the official `anthropic` client unchanged and by httpx for
raw events and error bodies; plus the stream renderer and the request translation on their own."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server import anthropic_translate as at
from llmpack.runtime.server.app import cancel_generations
from llmpack.runtime.server.chat_core import (
    ChoiceEnd,
    TextDelta,
    ToolCallArgs,
    ToolCallStart,
)
from llmpack.runtime.server.generation import ServerShuttingDown
from llmpack.runtime.server.media_parts import NO_PROJECTOR
from llmpack.runtime.server.routes_anthropic import message_stream
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.forced_tools import forced_tool_server, hermes_call
from support.server_fixtures import ServerProcess, running_server
from support.tiny_model import write_tiny_gguf
from test_server_shutdown_stream import EndlessEngine
from test_server_unit import make_client

pytestmark = pytest.mark.slow

KEY = "sesame"
USER = [{"role": "user", "content": "hello there"}]
# The client's signature has no sampling fields any more (newer Claude models refuse them); the API
# takes them, so they go in the body.
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                             "days": {"type": "integer", "minimum": 0, "maximum": 9}},
                            "required": ["city", "days"]}}


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("anthropic")
    # A training context long enough for the tools' descriptions (the tiny vocabulary spends about a
    # token per character): 2048 tokens per sequence.
    gguf = write_tiny_gguf(folder / "tiny-4k.gguf", n_ctx=4096)
    with running_server(tiny_bundle, "-m", str(gguf), "-c", "8192", "-np", "4", "-no-kvu", log_path=folder / "server.log") as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


# -- plain and streamed messages --------------------------------------------------------------------

def test_create_counts_and_usage(client: anthropic.Anthropic) -> None:
    answer = client.messages.create(model="tiny", max_tokens=12, system="You are terse.", messages=USER,
                                    extra_body=GREEDY)
    assert answer.type == "message" and answer.role == "assistant" and answer.id.startswith("msg_")
    assert [block.type for block in answer.content] == ["text"]
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.stop_sequence is None
    assert 0 < answer.usage.output_tokens <= 12
    if answer.stop_reason == "max_tokens":
        assert answer.usage.output_tokens == 12
    # The prompt counted once: what count_tokens says is input plus the part read from the cache.
    counted = client.messages.count_tokens(model="tiny", system="You are terse.", messages=USER).input_tokens
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) == counted > 5
    # A second identical prompt is read back from the server's prompt cache.
    again = client.messages.create(model="tiny", max_tokens=12, system="You are terse.", messages=USER,
                                   extra_body=GREEDY)
    assert again.content[0].text == answer.content[0].text
    assert again.usage.cache_read_input_tokens > 0
    assert again.usage.input_tokens + again.usage.cache_read_input_tokens == counted


def test_system_and_content_as_blocks_are_the_same_prompt(client: anthropic.Anthropic) -> None:
    plain = client.messages.count_tokens(model="tiny", system="Be brief.", messages=USER).input_tokens
    blocks = client.messages.count_tokens(
        model="tiny", system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]).input_tokens
    longer = client.messages.count_tokens(model="tiny", system="Be brief.",
                                          messages=[{"role": "user", "content": "hello there " * 5}]).input_tokens
    assert plain == blocks and longer > plain


def test_stream_matches_the_plain_answer(client: anthropic.Anthropic) -> None:
    kwargs = {"model": "tiny", "max_tokens": 16, "messages": USER,
              "extra_body": {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "seed": 7}}
    plain = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert text == plain.content[0].text
    assert final.stop_reason == plain.stop_reason and final.usage.output_tokens == plain.usage.output_tokens


def test_raw_event_sequence(server: ServerProcess) -> None:
    # Greedy: a random seed can make the random model end its turn before its first token.
    body = {"model": "tiny", "max_tokens": 6, "messages": USER, "stream": True, **GREEDY}
    with httpx.stream("POST", server.url + "v1/messages", json=body, timeout=60,
                      headers={"anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = []
    for chunk in raw.strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name  # the `event:` line names what the data says it is
        events.append(data)
    names = [e["type"] for e in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert all(e["index"] == 0 and e["delta"]["type"] == "text_delta" for e in events[3:-3])
    assert events[-2]["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert 0 < events[-2]["usage"]["output_tokens"] <= 6


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    full = client.messages.create(model="tiny", max_tokens=24, messages=USER, extra_body=GREEDY).content[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert len(stop) == 2 and stop in full
    stopped = client.messages.create(model="tiny", max_tokens=24, messages=USER, extra_body=GREEDY,
                                     stop_sequences=["never-generated", stop])
    assert stopped.content[0].text == full[:full.index(stop)]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop


def test_an_assistant_message_last_is_a_prefill(client: anthropic.Anthropic, server: ServerProcess) -> None:
    """Anthropic's prefill: the answer continues the assistant's text. The same tokens as a raw
    completion of the turn left open (the tiny model's template is Gemma 2's, rendered here by hand)."""
    prefill = [*USER, {"role": "assistant", "content": [{"type": "text", "text": "the cat"}]}]
    answer = client.messages.create(model="tiny", max_tokens=6, messages=prefill, extra_body=GREEDY)
    open_turn = "<start_of_turn>user\nhello there<end_of_turn>\n<start_of_turn>model\nthe cat"
    raw = httpx.post(server.base_url + "/completions", timeout=60,
                     json={"prompt": open_turn, "max_tokens": 6, "temperature": 0}).json()
    text = answer.content[0].text
    assert text and raw["choices"][0]["text"].startswith(text)
    assert answer.usage.input_tokens + answer.usage.cache_read_input_tokens == raw["usage"]["prompt_tokens"]


def test_structured_output_follows_the_schema(client: anthropic.Anthropic) -> None:
    """output_config.format (and the beta's output_format) constrain the text with the schema's grammar:
    even random weights can only write a matching document."""
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                               "pet": {"enum": ["cat", "dog"]}}, "required": ["name", "pet"]}
    ask = [{"role": "user", "content": "describe a person"}]
    for seed, fields in ((1, {"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
                         (2, {"extra_body": {"output_format": {"type": "json_schema", "schema": schema},
                                             "temperature": 1.0, "seed": 2}})):
        extra = fields.pop("extra_body", {"temperature": 1.0, "seed": seed})
        answer = client.messages.create(model="tiny", max_tokens=200, messages=ask, extra_body=extra, **fields)
        assert answer.stop_reason == "end_turn"
        document = json.loads(answer.content[0].text)
        assert list(document) == ["name", "pet"] and document["pet"] in ("cat", "dog")
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=4, messages=USER, output_config={"effort": "high"})
    assert raised.value.body["error"]["message"] == messages.ANTHROPIC_EFFORT


# -- errors ------------------------------------------------------------------------------------------

def test_bad_requests_are_anthropic_errors(client: anthropic.Anthropic, server: ServerProcess) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=4, messages=USER, extra_body={"temperature": 3})
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in raised.value.body["error"]["message"]
    missing = httpx.post(server.url + "v1/messages", json={"model": "tiny", "messages": USER})
    assert _error(missing, 400) == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    bad_json = httpx.post(server.url + "v1/messages", content=b'{"model": ',
                          headers={"content-type": "application/json"})
    assert _error(bad_json, 400)["message"].startswith("the request body is not valid JSON")
    for kind, block in (("image", {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                              "data": "iVBORw0KGgo="}}),
                        ("document", {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                     "data": "some text"}})):
        with pytest.raises(anthropic.BadRequestError) as raised:
            client.messages.create(model="tiny", max_tokens=4, messages=[
                {"role": "user", "content": [{"type": "text", "text": "look"}, block]}])
        expected = NO_PROJECTOR.format(param="messages.0.content.1", what="images") if kind == "image" else \
            messages.ANTHROPIC_MEDIA_BLOCK.format(param="messages.0.content.1", kind=kind)
        assert raised.value.body["error"]["message"] == expected  # images: a model without a projector
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=64, messages=USER,
                               thinking={"type": "loud", "budget_tokens": 1024})
    assert raised.value.body["error"]["message"] == messages.ANTHROPIC_THINKING
    disabled = client.messages.create(model="tiny", max_tokens=2, messages=USER, thinking={"type": "disabled"},
                                      extra_body=GREEDY)
    assert disabled.usage.output_tokens > 0
    assert _error(httpx.get(server.url + "v1/messages"), 405)["type"] == "invalid_request_error"
    assert _error(httpx.post(server.url + "v1/messages/nope", json={}), 404)["type"] == "not_found_error"


def test_context_overflow_is_a_400_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    long = [{"role": "user", "content": "hello " * 1200}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=4, messages=long)
    assert raised.value.status_code == 400 and raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "2048 tokens per sequence" in raised.value.body["error"]["message"]
    # Streamed: refused before the stream starts.
    with pytest.raises(anthropic.BadRequestError), client.messages.stream(model="tiny", max_tokens=4,
                                                                          messages=long) as stream:
        stream.get_final_message()
    # Counting is not running: a prompt too long to run is still counted.
    assert client.messages.count_tokens(model="tiny", messages=long).input_tokens > 1200


def test_api_key(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "--api-key", KEY, "-c", "512", log_path=tmp_path / "server.log") as server:
        good = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)  # sends x-api-key
        assert good.messages.create(model="tiny", max_tokens=2, messages=USER,
                                    extra_body=GREEDY).usage.output_tokens > 0
        bearer = anthropic.Anthropic(base_url=server.url, auth_token=KEY, max_retries=0)  # Authorization: Bearer
        assert bearer.messages.count_tokens(model="tiny", messages=USER).input_tokens > 0
        with pytest.raises(anthropic.AuthenticationError) as raised:
            anthropic.Anthropic(base_url=server.url, api_key="nope", max_retries=0).messages.create(
                model="tiny", max_tokens=2, messages=USER)
        assert raised.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                                "message": "invalid API key"}}
        missing = httpx.post(server.url + "v1/messages", json={"max_tokens": 2, "messages": USER})
        assert _error(missing, 401) == {"type": "authentication_error",
                                        "message": messages.ANTHROPIC_MISSING_KEY}
        # The other routes take the key as x-api-key too, and still answer OpenAI's shape.
        assert httpx.get(server.url + "v1/models", headers={"x-api-key": KEY}).status_code == 200
        wrong = httpx.get(server.url + "v1/models", headers={"x-api-key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


# -- tools -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tool_client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model that calls get_weather (support/forced_tools.py)."""
    call = hermes_call("get_weather", {"city": "Paris", "days": 3})
    with forced_tool_server(tiny_bundle, tmp_path_factory.mktemp("anthropic_tools"), call) as running:
        yield anthropic.Anthropic(base_url=running.url.rstrip("/"), api_key="x", max_retries=0)


def test_tool_loop(tool_client: anthropic.Anthropic) -> None:
    client = tool_client
    """tool_choice any forces a call whose input matches the schema; its result goes back as a
    tool_result block, and the model answers in text."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    # The tools are part of the prompt the template renders, and counted with it.
    assert (client.messages.count_tokens(model="tiny", messages=ask, tools=[WEATHER]).input_tokens
            > client.messages.count_tokens(model="tiny", messages=ask).input_tokens)
    called = client.messages.create(model="tiny", max_tokens=400, messages=ask, tools=[WEATHER],
                                    tool_choice={"type": "any"}, extra_body=GREEDY)
    assert called.stop_reason == "tool_use"
    uses = [block for block in called.content if block.type == "tool_use"]
    assert uses and all(use.name == "get_weather" for use in uses)
    assert isinstance(uses[0].input["city"], str) and isinstance(uses[0].input["days"], int)
    results = [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"} for use in uses]
    answer = client.messages.create(
        model="tiny", max_tokens=8, tools=[WEATHER], tool_choice={"type": "none"}, extra_body=GREEDY,
        messages=[*ask, {"role": "assistant", "content": called.content}, {"role": "user", "content": results}])
    assert answer.stop_reason in ("end_turn", "max_tokens") and [b.type for b in answer.content] == ["text"]


def test_named_tool_streamed(tool_client: anthropic.Anthropic) -> None:
    client = tool_client
    with client.messages.stream(model="tiny", max_tokens=400, tools=[WEATHER], extra_body=GREEDY,
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = next(block for block in final.content if block.type == "tool_use")
    assert use.name == "get_weather" and set(use.input) == {"city", "days"}


def test_tool_requests_refused_by_name(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=4, messages=USER, tools=[WEATHER],
                               tool_choice={"type": "tool", "name": "get_time"})
    assert raised.value.body["error"]["message"] == messages.ANTHROPIC_TOOL_CHOICE_NAME.format(
        name="get_time")
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="tiny", max_tokens=4, messages=USER,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "web_search_20250305" in raised.value.body["error"]["message"]


def test_no_request_left_a_traceback_or_a_500(server: ServerProcess) -> None:
    """Runs last against the shared server: every bad request above was answered, none crashed it."""
    assert "Traceback" not in server.log and "internal error" not in server.log
    assert httpx.get(server.url + "health").status_code == 200


# -- the stream renderer and the translation, without a server ---------------------------------------

class _Run:
    model = "tiny"
    prompt_tokens = 9
    cached_tokens = 0

    def __init__(self, events: list, error: Exception | None = None) -> None:
        self._events, self._error = events, error

    async def events(self):
        for event in self._events:
            yield event
        if self._error is not None:
            raise self._error


def _render(run: _Run) -> list[tuple[str, dict]]:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in message_stream(run)]

    out = []
    for chunk in asyncio.run(collect()):
        name, data = chunk.decode().strip().split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_shutdown_mid_stream_is_an_error_event_and_a_plain_request_a_503() -> None:
    """In-process, through the real route and chat core (an engine that talks until cancelled): the
    server's shutdown ends a stream with Anthropic's error event, never with a stop reason."""
    settings = Settings()
    app = app_for(settings, EngineHolder.loaded(settings, EndlessEngine()))
    client = TestClient(app, base_url="http://localhost")
    body = {"max_tokens": 100000, "messages": [{"role": "user", "content": "hi"}]}
    with client.stream("POST", "/v1/messages", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        head = [next(lines) for _ in range(12)]  # message_start, ping, the block's start, text
        cancel_generations(app)
        raw = "\n".join([*head, *lines])
    events = [(chunk.split("\n")[0], json.loads(chunk.split("\n")[1].removeprefix("data: ")))
              for chunk in raw.strip().split("\n\n")]
    assert events[-1] == ("event: error", {"type": "error", "error": {
        "type": "overloaded_error", "message": messages.SERVER_SHUTTING_DOWN}})
    assert [name for name, _ in events].count("event: content_block_delta") >= 1
    assert not any(name in ("event: message_delta", "event: message_stop") for name, _ in events)
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/v1/messages", json=body)))
    thread.start()
    deadline = time.monotonic() + 10
    while not app.state.active_generations:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cancel_generations(app)
    thread.join(10)
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["type"] == "overloaded_error"


def test_middleware_refusals_on_anthropic_paths_have_anthropic_shape() -> None:
    """Refused before any route runs (body type, size, Host header, loading): Anthropic's shape and
    error type on /v1/messages, OpenAI's elsewhere."""
    body = {"max_tokens": 1, "messages": USER}
    plain = make_client(max_body_bytes=200)
    cases = [
        (plain.post("/v1/messages", content=b"x", headers={"content-type": "text/plain"}), 415,
         "invalid_request_error"),
        (plain.post("/v1/messages", json={**body, "system": "x" * 300}), 413, "request_too_large"),
        (plain.post("/v1/messages/count_tokens", json=body, headers={"host": "evil.example"}), 403,
         "permission_error"),
        (make_client(loaded=False).post("/v1/messages", json=body), 503, "overloaded_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status and response.json()["type"] == "error"
        assert response.json()["error"]["type"] == kind and response.json()["error"]["message"]
    assert plain.post("/v1/chat/completions", content=b"x", headers={"content-type": "text/plain"}
                      ).json()["error"]["code"] == "unsupported_media_type"


def test_streamed_text_then_tool_calls_accumulate_in_the_sdk() -> None:
    events = _render(_Run([TextDelta(0, "Let me check."), ToolCallStart(0, 0, "call_1", "get_weather"),
                           ToolCallArgs(0, 0, '{"city": "Pa'), ToolCallArgs(0, 0, 'ris", "days": 2}'),
                           ToolCallStart(0, 1, "call_2", "get_weather"), ToolCallArgs(0, 1, '{"city": "Rome"}'),
                           ChoiceEnd(0, "tool_calls", 17)]))
    starts = [(data["index"], data["content_block"]["type"]) for name, data in events
              if name == "content_block_start"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    # Fed to the SDK's own accumulator, as messages.stream() does (one json_bufs across the events).
    snapshot, bufs = None, {}
    for _name, data in events:
        if data["type"] != "ping":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot.content[0].text == "Let me check."
    assert [(b.id, b.input) for b in snapshot.content[1:]] == [("call_1", {"city": "Paris", "days": 2}),
                                                               ("call_2", {"city": "Rome"})]
    assert snapshot.stop_reason == "tool_use" and snapshot.usage.output_tokens == 17


def test_an_error_mid_stream_is_an_error_event() -> None:
    events = _render(_Run([TextDelta(0, "partial")], ServerShuttingDown()))
    assert [name for name, _ in events][-1] == "error"
    assert events[-1][1] == {"type": "error", "error": {
        "type": "overloaded_error", "message": messages.SERVER_SHUTTING_DOWN}}
    assert "message_stop" not in [name for name, _ in events]


def test_an_empty_answer_is_one_empty_text_block() -> None:
    events = _render(_Run([ChoiceEnd(0, "stop", 1)]))
    assert [name for name, _ in events] == ["message_start", "ping", "content_block_start", "content_block_stop",
                                            "message_delta", "message_stop"]
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_only_the_clients_own_stop_sequences_are_a_stop_sequence() -> None:
    assert at.stop_fields("stop", "##", ["x", "##"]) == {"stop_reason": "stop_sequence", "stop_sequence": "##"}
    # The template's end-of-turn marker ends the turn; so does the end-of-generation token (no string).
    assert at.stop_fields("stop", "<end_of_turn>", ["##"]) == {"stop_reason": "end_turn", "stop_sequence": None}
    assert at.stop_fields("stop", None, ["##"])["stop_reason"] == "end_turn"
    assert at.stop_fields("length", None, None)["stop_reason"] == "max_tokens"
    assert at.stop_fields("tool_calls", None, None)["stop_reason"] == "tool_use"


def test_history_with_tool_use_and_tool_result_becomes_chat_messages() -> None:
    body = at.MessagesRequest.model_validate({
        "max_tokens": 10, "system": [{"type": "text", "text": "sys"}],
        "tools": [WEATHER], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                              {"type": "tool_use", "id": "t1", "name": "get_weather",
                                               "input": {"city": "Paris", "days": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "sunny"}]},
                                         {"type": "tool_result", "tool_use_id": "t2", "content": "boom",
                                          "is_error": True},
                                         {"type": "text", "text": "thanks"}]}]})
    fields = at.chat_fields(body)
    assert fields["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "checking"}],
         "tool_calls": [{"id": "t1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": at.TOOL_ERROR_PREFIX + "boom"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]}]
    assert fields["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"], "description": WEATHER["description"]}}]
    assert fields["tool_choice"] == "required" and fields["parallel_tool_calls"] is False
    named = at.MessagesRequest.model_validate({"max_tokens": 1, "messages": USER, "tools": [WEATHER],
                                               "tool_choice": {"type": "tool", "name": "get_weather"}})
    assert at.chat_fields(named)["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
