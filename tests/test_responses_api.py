"""End to end: OpenAI's Responses API (`/v1/responses`) on the real executable built from the tiny GGUF,
called with the official `openai` client (strict response validation) and the OpenAI Agents SDK."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.app import cancel_generations
from llmpack.runtime.server.response_store import (
    MAX_STORED_RESPONSES,
    ResponseStore,
    StoredResponse,
)
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.commands import build_bundle
from support.forced_tools import forced_tool_server, hermes_call
from support.server_fixtures import ServerProcess, running_server
from support.tiny_model import write_tiny_gguf
from test_server_shutdown_stream import EndlessEngine, _wait_until

pytestmark = pytest.mark.slow

# An enum-only document: even random weights end it quickly, so the answer completes ("stop").
PET_FORMAT = {"format": {"type": "json_schema", "name": "pet", "strict": True,
                         "schema": {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]}},
                                    "required": ["pet"], "additionalProperties": False}}}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "the weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                               "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # A longer training context than the shared tiny model's 512: tool definitions take room in the prompt.
    folder = tmp_path_factory.mktemp("responses")
    bundle = build_bundle(write_tiny_gguf(folder / "tiny.gguf", n_ctx=2048), folder / "tiny.llmpack")
    with running_server(bundle, "-c", "8192", "--verbose-prompt", log_path=folder / "server.log") as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True, timeout=60)


def check_usage(response) -> None:
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 <= usage.input_tokens_details.cached_tokens <= usage.input_tokens


def test_plain_text_input(client: openai.OpenAI) -> None:
    response = client.responses.create(model="tiny", input="hello there", max_output_tokens=6, temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == "tiny"  # tiny.llmpack's name
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and response.output_text == message.content[0].text
    check_usage(response)
    assert response.usage.output_tokens <= 6
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens" and response.usage.output_tokens == 6
    else:
        assert response.status == "completed" and response.incomplete_details is None
    # Greedy: the same question gives the same answer.
    again = client.responses.create(model="tiny", input="hello there", max_output_tokens=6, temperature=0)
    assert again.output_text == response.output_text and again.id != response.id


def test_a_base_url_without_v1_works(server: ServerProcess) -> None:
    """As llama-server: /responses answers as /v1/responses, for clients given the server's bare URL."""
    bare = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, _strict_response_validation=True)
    response = bare.responses.create(model="tiny", input="hello there", max_output_tokens=2, temperature=0)
    assert response.object == "response" and response.usage.output_tokens <= 2


def test_message_list_and_instructions_reach_the_prompt(client: openai.OpenAI, server: ServerProcess) -> None:
    response = client.responses.create(
        model="tiny", instructions="answer like zorblax", max_output_tokens=4, temperature=0,
        input=[{"role": "user", "content": "first quokka question"},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a wombat"}]},
               {"role": "user", "content": [{"type": "input_text", "text": "second numbat question"}]}])
    assert response.instructions == "answer like zorblax"
    check_usage(response)
    # --verbose-prompt logs what the model received: every turn, in order (the instructions folded into
    # the first user turn by the Gemma template's rules).
    prompt = server.log[server.log.rindex("zorblax") - 200:]
    order = [prompt.index(word) for word in ("zorblax", "quokka", "wombat", "numbat")]
    assert order == sorted(order)
    bare = client.responses.create(model="tiny", input="second numbat question", max_output_tokens=1)
    assert response.usage.input_tokens > bare.usage.input_tokens + len("answer like zorblax a wombat") // 4


def test_json_schema_text_format(client: openai.OpenAI) -> None:
    for seed in (1, 2):
        response = client.responses.create(model="tiny", input="a pet?", max_output_tokens=100, temperature=1.0,
                                           text=PET_FORMAT, extra_body={"seed": seed})
        assert response.status == "completed"
        assert json.loads(response.output_text)["pet"] in ("cat", "dog")
        assert response.text.format.type == "json_schema" and response.text.format.name == "pet"


def test_previous_response_id_continues_a_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="tiny", input="remember the word zebra", max_output_tokens=5,
                                    temperature=0, instructions="be brief")
    second = client.responses.create(model="tiny", input="which word?", max_output_tokens=5, temperature=0,
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # The second prompt holds the first turn and its answer (not the first's instructions, as with OpenAI).
    alone = client.responses.create(model="tiny", input="which word?", max_output_tokens=1)
    assert second.usage.input_tokens > alone.usage.input_tokens + len("remember the word zebra") // 4
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve(first.id)
    assert info.value.body["code"] == "response_not_found"


def test_unknown_and_unstored_previous_response_ids_are_404s(client: openai.OpenAI) -> None:
    unstored = client.responses.create(model="tiny", input="hi", max_output_tokens=1, store=False)
    for response_id in (unstored.id, "resp_nonesuch"):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model="tiny", input="hi", max_output_tokens=1, previous_response_id=response_id)
        assert info.value.body["param"] == "previous_response_id" and response_id in info.value.body["message"]
        assert info.value.body["type"] == "invalid_request_error"


def test_the_store_keeps_the_last_responses() -> None:
    store = ResponseStore()
    for i in range(MAX_STORED_RESPONSES + 1):
        store.put(f"resp_{i}", StoredResponse({"id": f"resp_{i}"}, ()))
    assert len(store) == MAX_STORED_RESPONSES
    assert store.get("resp_0") is None and store.get("resp_1") is not None
    assert store.get(f"resp_{MAX_STORED_RESPONSES}") is not None


def test_stream_event_sequence(client: openai.OpenAI) -> None:
    with client.responses.stream(model="tiny", input="a pet?", max_output_tokens=100, text=PET_FORMAT,
                                 temperature=1.0, extra_body={"seed": 3}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas
    expected = (["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added"] + ["response.output_text.delta"] * len(deltas)
                + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                   "response.completed"])
    assert kinds == expected
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert json.loads(text)["pet"] in ("cat", "dog")
    assert events[-4].text == text and final.output_text == text and final.status == "completed"
    assert len({e.item_id for e in deltas}) == 1 and deltas[0].item_id == final.output[0].id
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    check_usage(final)
    assert client.responses.retrieve(final.id).output_text == text


def test_stream_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="tiny", input="count", max_output_tokens=3, temperature=0,
                                          stream=True))
    plain = client.responses.create(model="tiny", input="count", max_output_tokens=3, temperature=0)
    last = events[-1]
    assert plain.status == "incomplete" and last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == plain.output_text
    assert last.response.usage.output_tokens == 3


def test_refused_fields_are_400s_naming_them(client: openai.OpenAI, server: ServerProcess) -> None:
    cases = [({"tools": [{"type": "web_search"}]}, "tools.0.type", "web_search"),
             ({"tools": [{"type": "file_search", "vector_store_ids": ["x"]}]}, "tools.0.type", "file_search"),
             ({"background": True}, "background", "background"),
             ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
              "input", "images are not supported"),  # a model without a projector
             ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type", "reasoning"),
             ({"text": {"format": {"type": "grammar"}}}, "text.format.type", "grammar"),
             ({"truncation": "auto"}, "truncation", "truncation"),
             ({"previous_response_id": None, "input": []}, "input", "input"),
             # Refused by the chat core, named as the Responses body names them.
             ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools.1.name", "get_weather"),
             ({"tools": [WEATHER_TOOL], "text": PET_FORMAT}, "text.format", "tools"),
             ({"tool_choice": {"type": "function", "name": "nonesuch"}, "tools": [WEATHER_TOOL]}, "tool_choice",
              "nonesuch")]
    for fields, param, named in cases:
        body = {"model": "tiny", "input": "hi", **fields}
        for stream in (False, True):
            response = httpx.post(server.base_url + "/responses", json={**body, "stream": stream}, timeout=30)
            assert response.status_code == 400, (fields, response.text)
            error = response.json()["error"]
            assert error["param"] == param and named in error["message"] and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="tiny", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in info.value.message


def test_a_prompt_over_the_context_is_refused_before_the_stream(server: ServerProcess) -> None:
    response = httpx.post(server.base_url + "/responses", json={"input": "the cat " * 2000, "stream": True},
                          timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


def summary(response) -> list[tuple]:
    """The output items without their ids (new in every response)."""
    return [(item.type, getattr(item, "name", None), getattr(item, "arguments", None),
             "".join(part.text for part in getattr(item, "content", None) or [])) for item in response.output]


@pytest.fixture(scope="module")
def tool_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model that calls get_weather (support/forced_tools.py)."""
    call = hermes_call("get_weather", {"city": "Oslo"})
    with forced_tool_server(tiny_bundle, tmp_path_factory.mktemp("responses_tools"), call) as running:
        yield running


@pytest.fixture()
def tool_client(tool_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True, timeout=60)


def test_function_tool_round_trip(tool_client: openai.OpenAI) -> None:
    client = tool_client
    question = {"role": "user", "content": "weather in Paris?"}
    # The tiny model writes about a token per character: room for the call's JSON.
    first = client.responses.create(model="tiny", input=[question], tools=[WEATHER_TOOL], tool_choice="required",
                                    parallel_tool_calls=False, max_output_tokens=400, temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and first.status == "completed"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert first.tools[0].name == "get_weather"
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}
    # The whole conversation resent, as the Agents SDK does...
    second = client.responses.create(model="tiny", input=[question, calls[0].model_dump(exclude_none=True), result],
                                     tools=[WEATHER_TOOL], max_output_tokens=5, temperature=0)
    assert second.output and second.status in ("completed", "incomplete")
    # ... or only the tool's output after the stored response: the same prompt, so the same answer.
    chained = client.responses.create(model="tiny", input=[result], previous_response_id=first.id,
                                      tools=[WEATHER_TOOL], max_output_tokens=5, temperature=0)
    assert summary(chained) == summary(second)
    assert chained.usage.input_tokens == second.usage.input_tokens


def test_streamed_function_call(tool_client: openai.OpenAI) -> None:
    client = tool_client
    with client.responses.stream(model="tiny", input="weather in Oslo?", tools=[WEATHER_TOOL],
                                 tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=400,
                                 parallel_tool_calls=False, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    added = next(e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call")
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert added.item.name == "get_weather" and deltas and "".join(deltas) == done.arguments
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done", kinds.index(
        "response.function_call_arguments.done"))
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.arguments == done.arguments and call.id == added.item.id
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_agents_sdk_runs_a_tool_agent(tool_server: ServerProcess) -> None:
    server = tool_server
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: Literal["Rome", "Oslo"]) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    # The tiny model cannot end a free answer within bounds (the SDK refuses an incomplete one): the run
    # stops on the tool's result, after the SDK has sent the request, read the call and run the tool.
    agent = Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                  model=OpenAIResponsesModel(model="tiny", openai_client=client), tool_use_behavior="stop_on_first_tool",
                  model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=400,
                                               temperature=0))
    result = Runner.run_sync(agent, "weather in Rome?")
    assert len(calls) == 1 and calls[0] in ("Rome", "Oslo")
    assert [item.type for item in result.new_items] == ["tool_call_item", "tool_call_output_item"]
    assert result.final_output == f"sunny in {calls[0]}"


def test_a_stream_cut_by_shutdown_ends_with_response_failed() -> None:
    """In-process (an engine that never ends): the stream's status line has gone out, so the cut is a
    `response.failed` event saying why, never a `response.completed`; a plain request gets a 503."""

    settings = Settings()
    app = app_for(settings, EngineHolder.loaded(settings, EndlessEngine()))
    client = TestClient(app, base_url="http://localhost")
    with client.stream("POST", "/v1/responses", json={"input": "hi", "stream": True}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        head = [next(lines) for _ in range(12)]
        cancel_generations(app)
        events = [json.loads(line.removeprefix("data: ")) for line in [*head, *lines] if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error",
                                                                 "message": messages.SERVER_SHUTTING_DOWN}
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # A failed response is not stored.
    assert client.get(f"/v1/responses/{failed['id']}").status_code == 404

    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/v1/responses", json={"input": "x"})))
    thread.start()
    _wait_until(lambda: app.state.active_generations)
    cancel_generations(app)
    thread.join(10)
    assert answers[0].status_code == 503 and answers[0].json()["error"]["code"] == "server_shutting_down"
