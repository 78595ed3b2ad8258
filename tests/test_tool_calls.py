"""End to end: tool calling on the real executable, with the official `openai` client and LangChain.

Tiny random models carry real chat templates of each family (tests/support/templates.py); they cannot
choose tools sensibly, so the grammars are what make their calls valid: the tests assert shapes, that
arguments parse and match the tool's schema, and the conversation's round trip."""

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
TEMPLATES = {"hermes": QWEN25, "llama3": LLAMA31, "mistral": MISTRAL_NEMO, "generic": None}


@pytest.fixture(scope="module")
def servers(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server per family (started when first asked for), all from the one executable with -m."""
    directory = tmp_path_factory.mktemp("tools")
    started: dict[str, ServerProcess] = {}
    contexts = []

    def get(family: str) -> ServerProcess:
        if family not in started:
            template = TEMPLATES[family]
            # A training context long enough for the tools' descriptions (the tiny vocabulary spends
            # about a token per character).
            gguf = write_tiny_gguf(directory / f"{family}.gguf", n_ctx=4096,
                                   **({} if template is None else {"chat_template": template}))
            context = running_server(tiny_bundle, "-m", str(gguf), "-c", "16384", "-np", "4",
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


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral", "generic"])
def test_required_tool_call_plain(servers, family: str) -> None:
    answer = client_for(servers(family)).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=1500, temperature=0.7, seed=1)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id
        check_call(call.function.name, call.function.arguments)
    if family == "mistral":  # Mistral's template accepts 9-character ids only
        assert all(len(c.id) == 9 and c.id.isalnum() for c in choice.message.tool_calls)


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral", "generic"])
def test_named_tool_call_streamed(servers, family: str) -> None:
    stream = client_for(servers(family)).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=1500, temperature=1.0, seed=2, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.id:
                    assert delta.index not in calls and delta.function.name
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                calls[delta.index]["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert len(calls) == 1 and calls[0]["name"] == "add"  # a named choice: that tool, once
    check_call("add", calls[0]["arguments"])


def test_auto_answers_text_or_valid_calls(servers) -> None:
    client = client_for(servers("hermes"))
    for seed in range(3):
        choice = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="auto",
                                                max_tokens=60, temperature=1.0, seed=seed).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            for call in choice.message.tool_calls:
                check_call(call.function.name, call.function.arguments)
        else:
            assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")


def test_parallel_calls_and_a_two_turn_tool_loop(servers) -> None:
    client = client_for(servers("hermes"))
    calls = []
    for seed in range(4):
        message = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                                 parallel_tool_calls=True, max_tokens=1500, temperature=1.0,
                                                 seed=seed).choices[0].message
        calls = message.tool_calls
        if len(calls) > 1:
            break
    assert calls and len({c.id for c in calls}) == len(calls)
    history = [*ASK, message.model_dump(exclude_none=True)]
    for call in calls:
        check_call(call.function.name, call.function.arguments)
        history.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"result": "sunny"})})
    final = client.chat.completions.create(model="m", messages=history, tools=TOOLS, tool_choice="none",
                                           max_tokens=16, temperature=0)
    assert final.choices[0].message.tool_calls is None
    assert isinstance(final.choices[0].message.content, str) and final.usage.completion_tokens > 0


def test_parallel_tool_calls_false_gives_one_call(servers) -> None:
    for family in ("hermes", "generic"):
        message = client_for(servers(family)).chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
            max_tokens=1500, temperature=1.0, seed=5).choices[0].message
        assert len(message.tool_calls) == 1, family


@pytest.mark.parametrize("family", ["llama3", "mistral", "generic"])
def test_tool_loop_history_in_each_family(servers, family: str) -> None:
    client = client_for(servers(family))
    first = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=1500, temperature=0.5, seed=3)
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
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]}, "tools"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [*ASK, {"role": "tool", "content": "x"}]}, "messages.1.tool_call_id"),
])
def test_bad_tool_requests_are_400s(servers, body: dict, param: str) -> None:
    response = httpx.post(servers("hermes").base_url + "/chat/completions",
                          json={"model": "m", "messages": ASK, "max_tokens": 4, **body}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_langchain_bind_tools_loop_and_structured_output(servers) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    @tool
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    llm = ChatOpenAI(base_url=servers("hermes").base_url, api_key="x", model="m", max_retries=0,
                     temperature=0.7, max_tokens=1500, seed=4)
    bound = llm.bind_tools([add], tool_choice="add")
    messages = [HumanMessage("What is 2 plus 3?")]
    reply = bound.invoke(messages)
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "add"
    args = reply.tool_calls[0]["args"]
    assert isinstance(args["a"], int) and isinstance(args["b"], int)
    messages += [reply, ToolMessage(str(add.invoke(args)), tool_call_id=reply.tool_calls[0]["id"])]
    final = llm.bind_tools([add], tool_choice="none").invoke(messages)
    assert isinstance(final.content, str) and not final.tool_calls

    class Person(BaseModel):
        name: str = Field(max_length=12)
        age: int = Field(ge=0, le=120)

    person = llm.with_structured_output(Person, method="function_calling").invoke("Alice is 30 years old.")
    assert isinstance(person, Person) and 0 <= person.age <= 120


@pytest.mark.smollm2
def test_smollm2_makes_a_tool_call_that_parses(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real instruct model (ChatML without tools: the generic family) with tool_choice required."""
    from test_smollm2 import smollm2_gguf

    log = tmp_path_factory.mktemp("smollm2_tools") / "server.log"
    with running_server(tiny_bundle, "-m", str(smollm2_gguf()), "-c", "4096", log_path=log) as server:
        answer = client_for(server).chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
    for call in choice.message.tool_calls:
        check_call(call.function.name, call.function.arguments)
