"""End to end: tool calling on the real executable, with the official `openai` client and LangChain.

Tool calls are read as llama-server reads them, by llama.cpp's own chat library (runtime/server/
chat_formats.py). Tiny random models carry real chat templates of each family (tests/support/
templates.py); they cannot choose tools, and llama.cpp's tool-call grammars let a model write text
before its calls, so each server's --grammar (which constrains every answer) forces the family's exact
call text: the tests assert what is parsed from it, whole and streamed, and the conversation's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from support.server_fixtures import ServerProcess, running_server
from support.templates import LLAMA31, MISTRAL_NEMO, QWEN25
from support.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.slow

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
       "required": ["a", "b"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Adds two numbers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]
CITY = '{"city": "Paris", "days": 3}'
# Each family's template, and the raw output its server is forced to (its own call syntax).
FAMILIES = {
    "hermes": (QWEN25, f'<tool_call>\n{{"name": "get_weather", "arguments": {CITY}}}\n</tool_call>\n'
                       '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'),
    "llama3": (LLAMA31, f'{{"name": "get_weather", "parameters": {CITY}}}'),
    "mistral": (MISTRAL_NEMO, f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {CITY}, "id": "abcdefghi"}}]'),
    "hermes-add": (QWEN25, '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'),
}


def gbnf(text: str) -> str:
    return 'root ::= "' + "".join(f"\\x{ord(c):02X}" if c in '"\\\n' else c for c in text) + '"'


@pytest.fixture(scope="module")
def servers(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server per family (started when first asked for), all from the one executable with -m."""
    directory = tmp_path_factory.mktemp("tools")
    started: dict[str, ServerProcess] = {}
    contexts = []

    def get(family: str) -> ServerProcess:
        if family not in started:
            template, output = FAMILIES[family]
            # A training context long enough for the tools' descriptions (the tiny vocabulary spends
            # about a token per character).
            gguf = write_tiny_gguf(directory / f"{family}.gguf", n_ctx=4096, chat_template=template)
            context = running_server(tiny_bundle, "-m", str(gguf), "-c", "16384", "-np", "4", "--grammar", gbnf(output),
                                     log_path=directory / f"{family}.log")
            started[family] = context.__enter__()
            contexts.append(context)
        return started[family]

    yield get
    for context in contexts:
        context.__exit__(None, None, None)


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True, timeout=120)


def check_call(name: str, arguments: str) -> dict:
    assert name in SCHEMAS, name
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral"])
@pytest.mark.parametrize("choice", ["required", "auto"])
def test_calls_parse_in_each_family(servers, family: str, choice: str) -> None:
    answer = client_for(servers(family)).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=400, temperature=0)
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls", answer
    assert not message.content and message.tool_calls
    assert (message.tool_calls[0].function.name, check_call("get_weather", message.tool_calls[0].function.arguments)) \
        == ("get_weather", {"city": "Paris", "days": 3})
    assert all(call.type == "function" and call.id for call in message.tool_calls)
    assert len({call.id for call in message.tool_calls}) == len(message.tool_calls)
    if family == "mistral":  # the id the model wrote is the call's
        assert message.tool_calls[0].id == "abcdefghi"


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral"])
def test_arguments_stream_as_they_are_generated(servers, family: str) -> None:
    stream = client_for(servers(family)).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=400, temperature=0, stream=True)
    calls: dict[int, dict] = {}
    fragments: dict[int, int] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.id:  # id and name once, in the call's first delta
                    assert delta.index not in calls and delta.function.name
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                if delta.function and delta.function.arguments:
                    calls[delta.index]["arguments"] += delta.function.arguments
                    fragments[delta.index] = fragments.get(delta.index, 0) + 1
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 3}
    assert fragments[0] > 1, "the arguments came in one piece"
    for call in calls.values():
        check_call(call["name"], call["arguments"])


def test_parallel_calls_and_a_two_turn_tool_loop(servers) -> None:
    client = client_for(servers("hermes"))
    message = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                             parallel_tool_calls=True, max_tokens=400, temperature=0).choices[0].message
    calls = message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "add"] and len({c.id for c in calls}) == 2
    history = [*ASK, message.model_dump(exclude_none=True)]
    for call in calls:
        check_call(call.function.name, call.function.arguments)
        history.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"result": "sunny"})})
    final = client.chat.completions.create(model="m", messages=history, tools=TOOLS, tool_choice="none",
                                           max_tokens=16, temperature=0)
    assert final.choices[0].message.tool_calls is None
    assert isinstance(final.choices[0].message.content, str) and final.usage.completion_tokens > 0


@pytest.mark.parametrize("family", ["llama3", "mistral"])
def test_tool_loop_history_in_each_family(servers, family: str) -> None:
    client = client_for(servers(family))
    first = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=400, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    final = client.chat.completions.create(model="m", messages=history, tools=TOOLS, max_tokens=16,
                                           tool_choice="none", temperature=0)
    assert isinstance(final.choices[0].message.content, str)


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "none"}}]}, "tools.0.function.parameters"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [*ASK, {"role": "tool", "content": "x"}]}, "messages.1.tool_call_id"),
])
def test_bad_tool_requests_are_400s(servers, body: dict, param: str) -> None:
    response = httpx.post(servers("hermes").base_url + "/chat/completions",
                          json={"model": "m", "messages": ASK, "max_tokens": 4, **body}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_langchain_bind_tools_loop(servers) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    llm = ChatOpenAI(base_url=servers("hermes-add").base_url, api_key="x", model="m", max_retries=0,
                     temperature=0, max_tokens=400)
    bound = llm.bind_tools([add], tool_choice="add")
    messages = [HumanMessage("What is 2 plus 3?")]
    reply = bound.invoke(messages)
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "add" and reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
    messages += [reply, ToolMessage(str(add.invoke(reply.tool_calls[0]["args"])), tool_call_id=reply.tool_calls[0]["id"])]
    final = llm.bind_tools([add], tool_choice="none").invoke(messages)
    assert isinstance(final.content, str) and not final.tool_calls


@pytest.mark.smollm2
def test_smollm2_without_tool_support_answers_in_text(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real instruct model whose template knows no tools (SmolLM2's ChatML): as llama-server, the tools
    are not given to it and it answers in text, never a 500."""
    from test_smollm2 import smollm2_gguf

    log = tmp_path_factory.mktemp("smollm2_tools") / "server.log"
    with running_server(tiny_bundle, "-m", str(smollm2_gguf()), "-c", "4096", log_path=log) as server:
        answer = client_for(server).chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice="auto", max_tokens=32, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str), choice
