"""Tool calls read from each family's real output syntax, families told from real templates, the
conversation rendered back through them, and the grammars accepted by the checker llama.cpp's input
goes through."""

from __future__ import annotations

import json

import pytest
from llmpack.runtime.formats.chat_template import ChatFormatter
from llmpack.runtime.grammar.check import check_grammar
from llmpack.runtime.tools.families import FAMILIES, detect
from llmpack.runtime.tools.parse import (
    parse_generic,
    parse_hermes,
    parse_llama3,
    parse_mistral,
)
from llmpack.runtime.tools.prompt import template_messages
from llmpack.runtime.tools.spec import ToolRequestError, parse_tools, tool_choice
from llmpack.runtime.tools.stream import CallSplitter
from support.templates import CHATML, LLAMA31, MISTRAL_NEMO, QWEN25
from support.tiny_model import GEMMA_TEMPLATE

TOOLS = parse_tools([{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])


def calls(parsed) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def test_hermes_qwen_calls_with_text_before_and_parallel() -> None:
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
    parsed = parse_hermes(text)
    assert parsed.content == "Let me check.\n"
    assert calls(parsed) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]


def test_llama31_json_call_with_and_without_python_tag() -> None:
    for text in ('{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'):
        assert calls(parse_llama3(text)) == [("get_weather", {"city": "Paris"})]
    assert parse_llama3("The weather is fine.") is None


def test_mistral_tool_calls_list() -> None:
    text = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "x", "arguments": {}}]'
    assert calls(parse_mistral(text)) == [("get_weather", {"city": "Paris"}), ("x", {})]


def test_generic_calls_and_response() -> None:
    assert calls(parse_generic('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}')) == [
        ("get_weather", {"city": "Oslo"})]
    assert calls(parse_generic('{"tool_call": {"name": "f", "arguments": {"a": 1}}}')) == [("f", {"a": 1})]
    assert parse_generic('{"response": "hello"}').content == "hello" and not parse_generic('{"response": "x"}').calls


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut by max_tokens
    '<tool_call>{"name": "get_weather"}</tool_call>',  # no arguments
    '<tool_call>{"name": "f", "arguments": {}}</tool_call> and then some text',
])
def test_output_that_is_no_complete_call_is_text(text: str) -> None:
    assert parse_hermes(text) is None
    splitter = CallSplitter(FAMILIES["hermes"])
    shown = "".join(splitter.feed(c) for c in text)
    rest, found = splitter.finish()
    assert shown + rest == text and found == []


def test_the_splitter_streams_text_before_a_call_and_holds_the_call() -> None:
    splitter = CallSplitter(FAMILIES["hermes"])
    out = [splitter.feed(piece) for piece in ["Sure", ", <tool", "_call>", '{"name": "get_weather", ',
                                                '"arguments": {"city": "Paris"}}', "</tool_call>"]]
    assert out == ["Sure", ", ", "", "", "", ""]
    rest, found = splitter.finish()
    assert rest == "" and [(c.name, json.loads(c.arguments)) for c in found] == [("get_weather", {"city": "Paris"})]
    assert found[0].id.startswith("call_")


@pytest.mark.parametrize(("template", "family"), [(QWEN25, "hermes"), (LLAMA31, "llama3"),
                                                 (MISTRAL_NEMO, "mistral"), (CHATML, "generic"),
                                                 (GEMMA_TEMPLATE, "generic")])
def test_families_from_real_templates_render_a_tool_loop(template: str, family: str) -> None:
    assert detect(template).name == family
    call_id = "abcDEF123"  # 9 characters: Mistral's template insists
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "content": "sunny", "tool_call_id": call_id}]
    messages, tools = template_messages(history, detect(template), tool_choice(TOOLS, "auto", True), TOOLS)
    text = ChatFormatter(template, "<s>", "</s>").render(messages, tools=tools)
    assert "get_weather" in text and "Paris" in text and "sunny" in text
    assert "Weather in a city" in text  # the tool's description reaches the model


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("mode", ["auto", "required"])
def test_grammars_pass_the_checker(family: str, mode: str) -> None:
    grammar = FAMILIES[family].grammar(tool_choice(TOOLS, mode, True))
    check_grammar(grammar.grammar)
    assert bool(grammar.triggers) == (mode == "auto" and family != "generic")


def test_tool_choice_errors_name_the_field() -> None:
    with pytest.raises(ToolRequestError) as error:
        tool_choice(TOOLS, {"type": "function", "function": {"name": "other"}}, None)
    assert error.value.param == "tool_choice"
    named = tool_choice(TOOLS, {"type": "function", "function": {"name": "get_weather"}}, True)
    assert named.forced and not named.parallel and [t.name for t in named.tools] == ["get_weather"]


def test_a_lazy_grammar_waits_for_its_trigger(tiny_gguf) -> None:
    """`auto`'s grammar applies only once a trigger matches: until then the model speaks freely (a
    grammar without triggers would allow nothing but its one word)."""
    from llmpack.runtime.engine.engine import Engine
    from llmpack.runtime.engine.types import (
        EngineConfig,
        GenerationRequest,
        ModelSource,
        SamplingParams,
    )

    engine = Engine(ModelSource(str(tiny_gguf)), EngineConfig(n_ctx=256, n_threads=2))
    try:
        prompt = tuple(engine.tokenize("hello", True, False))

        def text(triggers: tuple[str, ...]) -> str:
            sampling = SamplingParams(temperature=0, grammar='root ::= "yes"', grammar_triggers=triggers)
            return "".join(p.text for p in engine.generate(GenerationRequest(prompt, 12, sampling)))

        assert text(()) == "yes"
        free = text(("<tool_call>",))
        assert free != "yes" and free
    finally:
        engine.close()
